// The per-node bookkeeping behind FUSE passthrough: the kernel fails an open (EIO) answered by passthrough while a
// page-cache open of the same inode lasts, and the other way round, so these rules are what keeps opens working.
// (The kernel side is exercised in test/daemon/passthrough.test.ts.)
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BackingFiles } from '../../src/fuse/index.js';
import type { AssembledFiles, LayerTree } from '../../src/layer/index.js';
import { Passthrough, type PassthroughCandidate } from '../../src/store/passthrough.js';

describe('store: passthrough opens', () => {
  let dir: string;
  let copy: string | undefined;
  const requested: number[] = [];
  const opened: number[] = [];
  const closed: number[] = [];
  let nextId = 1;
  let refuse: string | undefined;
  const backing: BackingFiles = {
    open: () => {
      if (refuse) throw Object.assign(new Error(`ioctl failed: ${refuse}`), { code: refuse });
      opened.push(nextId);
      return nextId++;
    },
    close: (id) => { closed.push(id); },
  };
  // Only what Passthrough asks of the assembler: whether a checked copy is ready, and requests for one.
  const assembled = {
    path: () => copy,
    request: (_t: LayerTree, node: number) => { requested.push(node); },
  } as unknown as AssembledFiles;
  const file = (node: number, grant = true): PassthroughCandidate => ({ tree: {} as LayerTree, node, grant, where: () => `file ${node}` });

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'tocfs-pt-'));
    copy = undefined;
    refuse = undefined;
    for (const a of [requested, opened, closed]) a.length = 0;
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const ready = () => {
    copy = join(dir, 'copy');
    writeFileSync(copy, 'x');
  };

  it('never answers passthrough while a page-cache open of the node lasts, nor the page cache while a passthrough one does', () => {
    const pt = new Passthrough({ backing: () => backing, assembled });
    const a = pt.open(10, file(1), true);
    assert.deepEqual(a, { fh: 0, keepCache: true });
    assert.deepEqual(requested, [1], 'a copy is asked for');
    ready();
    assert.equal(pt.open(10, file(1), true).backingId, undefined, 'a page-cache open still lasts');
    pt.release(10, 0, file(1));
    pt.release(10, 0, file(1));
    const b = pt.open(10, file(1), true);
    assert.deepEqual(b, { fh: 1, backingId: 1 });
    copy = undefined; // even with the copy gone (evicted), the node keeps its backing file while it is open
    assert.deepEqual(pt.open(10, file(1), false), { fh: 1, backingId: 1 }, 'every open of the node, whatever its flags');
    assert.equal(pt.registered(10), true);
    assert.deepEqual(pt.stats, { opens: 2, active: 1 });
    pt.release(10, 1, file(1));
    assert.deepEqual(closed, []);
    pt.release(10, 1, file(1));
    assert.deepEqual(closed, [1], 'unregistered with its last open');
    assert.equal(pt.registered(10), false);
    assert.deepEqual(pt.open(10, file(1), true), { fh: 0, keepCache: true }, 'no copy now: the page cache again');
  });

  it('gives passthrough only to read-only opens of candidates, with a copy ready, while the kernel takes backing files', () => {
    const pt = new Passthrough({ backing: () => backing, assembled });
    ready();
    assert.equal(pt.open(20, undefined, true).backingId, undefined, 'not a candidate');
    pt.release(20, 0, undefined);
    assert.equal(pt.open(21, file(2), false).backingId, undefined, 'opened for writing');
    assert.equal(pt.open(25, file(6, false), true).backingId, undefined, 'not granted (its layer\'s proof is pending)');
    assert.ok(requested.includes(6), 'but its copy is prepared');
    refuse = 'EPERM';
    assert.equal(pt.open(22, file(3), true).backingId, undefined);
    assert.match(pt.failure ?? '', /EPERM .*CAP_SYS_ADMIN/);
    refuse = undefined;
    assert.equal(pt.open(23, file(4), true).backingId, undefined, 'off for good once the kernel refused');
    const off = new Passthrough({ backing: () => undefined, assembled });
    assert.equal(off.open(24, file(5), true).backingId, undefined, 'the connection has no passthrough');
    assert.deepEqual(requested.filter((n) => n === 5), [], 'nor are copies asked for');
  });

  it('keeps answering a backing file an earlier server registered, and never closes it', () => {
    const pt = new Passthrough({ backing: () => backing, assembled }, new Map([[30, 7]]));
    assert.deepEqual(pt.open(30, undefined, true), { fh: 1, backingId: 7 });
    pt.release(30, 1, undefined);
    pt.release(30, 1, undefined); // an open the earlier server answered
    assert.deepEqual(pt.open(30, undefined, true), { fh: 1, backingId: 7 });
    assert.deepEqual(closed, []);
    pt.release(31, 0, undefined); // releases of opens this server never saw are ignored
  });
});
