// The store's namespace journal: what a server started on the same mount reads back.
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NamespaceJournal } from '../../src/store/index.js';

describe('store: namespace journal', () => {
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'tocfs-ns-')); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const layer = { t: 'layer', ref: 'cmVm', key: `sha256:${'a'.repeat(64)}`, slot: 0, ino: 3, info: 4, blob: 5, toc: 6 } as const;

  it('reads back what was appended, private to root, and starts over for a new mount', () => {
    const j = NamespaceJournal.fresh(join(dir, 'ns.jsonl'), 1234);
    j.append({ t: 'ref', name: 'cmVm', ino: 2 });
    j.append(layer);
    j.close();
    assert.equal(statSync(join(dir, 'ns.jsonl')).mode & 0o777, 0o600);
    const r = NamespaceJournal.resume(join(dir, 'ns.jsonl'));
    assert.deepEqual(r.records, [{ t: 'start', started: 1234 }, { t: 'ref', name: 'cmVm', ino: 2 }, layer]);
    r.close();
    NamespaceJournal.fresh(join(dir, 'ns.jsonl'), 99).close();
    assert.deepEqual(NamespaceJournal.resume(join(dir, 'ns.jsonl')).records, [{ t: 'start', started: 99 }]);
  });

  it('drops a torn last line and malformed records, and appends after them on a line of its own', () => {
    const path = join(dir, 'ns.jsonl');
    const j = NamespaceJournal.fresh(path, 1);
    j.append({ t: 'ref', name: 'cmVm', ino: 2 });
    j.close();
    appendFileSync(path, '{"t":"ref","name":"x","ino":-1}\n{"t":"layer","ref":"cmVm","key":"sha256:');
    const r = NamespaceJournal.resume(path);
    assert.deepEqual(r.records, [{ t: 'start', started: 1 }, { t: 'ref', name: 'cmVm', ino: 2 }]);
    r.append(layer);
    r.close();
    assert.deepEqual(NamespaceJournal.resume(path).records.at(-1), layer);
    assert.ok(readFileSync(path, 'utf8').endsWith(`${JSON.stringify(layer)}\n`));
  });

  it('a journal that does not exist yet resumes empty', () => {
    const r = NamespaceJournal.resume(join(dir, 'none.jsonl'));
    assert.deepEqual(r.records, []);
    r.close();
  });
});
