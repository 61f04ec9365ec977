import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decompress } from 'zstd-napi';
import { openChunkedLayer, readTar } from '../../src/format/index.js';
import {
  BackgroundScheduler, ChunkCache, DiskCache, LayerContent, LayerPrefetcher, LayerTree, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG,
  type BlobSource, type ContentError, type ContentOptions,
} from '../../src/layer/index.js';
import { loadFixtures, type Fixture } from '../format/fixtures.js';

/** A BlobSource over bytes in memory that counts what it is asked for. */
class CountingSource implements BlobSource {
  calls = 0;
  ranges = 0;
  bytes = 0;
  /** The ranges of each call, in order. */
  readonly asked: { start: number; end: number }[][] = [];
  constructor(private readonly blob: Buffer, private readonly delayMs = 0) {}
  get size() { return this.blob.length; }
  async readRanges(ranges: readonly { start: number; end: number }[]): Promise<Buffer[]> {
    this.calls++;
    this.ranges += ranges.length;
    this.asked.push([...ranges]);
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    return ranges.map((r) => { this.bytes += r.end - r.start; return this.blob.subarray(r.start, r.end); });
  }
}

async function openFixture(fx: Fixture, blob = readFileSync(fx.blobPath)) {
  const mem = { size: blob.length, read: async (s: number, e: number) => blob.subarray(s, e) };
  const layer = await openChunkedLayer(mem, fx.descriptor.annotations);
  return { tree: LayerTree.fromToc(layer.toc), blob };
}

/** A LayerContent over `blob` through its own CountingSource, without readahead unless `opts` says otherwise. */
function counted(tree: LayerTree, blob: Buffer, name: string, opts: Partial<ContentOptions> = {}) {
  const src = new CountingSource(blob);
  return { src, content: new LayerContent(tree, src, new ChunkCache(64 << 20), { name, readaheadBytes: 0, ...opts }) };
}

/** All of regular file `n`, through `content`. */
async function readWhole(tree: LayerTree, content: LayerContent, n: number): Promise<Buffer> {
  return Buffer.concat(await content.read(n, 0, tree.sizeOf(n)));
}

function resolve(tree: LayerTree, path: string): number {
  let node = 0;
  for (const part of path.split('/').filter(Boolean)) {
    const next = tree.lookup(node, part);
    assert.notEqual(next, undefined, `${path}: ${part} not found`);
    node = next!;
  }
  return node;
}

/** The files of the tar the blob decompresses to: path → content. */
async function tarContents(blob: Buffer): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  let current: { name: string; parts: Buffer[] } | undefined;
  for await (const ev of readTar([decompress(blob)])) {
    if (ev.kind === 'entry') {
      if (current) files.set(current.name, Buffer.concat(current.parts));
      const base = ev.header.name.split('/').pop()!;
      // Whiteouts are not files of the lower layer: overlay sees them as 0:0 devices (tested above).
      current = ev.header.typeflag === '0' && !base.startsWith('.wh.') ? { name: '/' + ev.header.name.replace(/^\.?\//, ''), parts: [] } : undefined;
    } else if (ev.kind === 'data' && current) current.parts.push(ev.data);
  }
  if (current) files.set(current.name, Buffer.concat(current.parts));
  return files;
}

describe('layer: tree', () => {
  const fx = loadFixtures().find((f) => f.name === 'basic-pax')!;

  it('presents types, modes, owners, devices, symlinks and hardlinks as the TOC says', async () => {
    const { tree } = await openFixture(fx);
    const a = (p: string) => tree.attr(resolve(tree, p));
    assert.equal(a('/etc').mode, S_IFDIR | 0o755);
    assert.equal(a('/etc/empty').mode, S_IFREG | 0o600);
    assert.equal(a('/etc/empty').uid, 1000);
    assert.equal(a('/usr/bin/tool').mode, S_IFREG | 0o4755);
    assert.equal(a('/usr/bin/tool').size, 1048576);
    assert.equal(resolve(tree, '/usr/bin/tool'), resolve(tree, '/usr/bin/tool-link'), 'hardlinks share a node');
    assert.equal(a('/usr/bin/tool').nlink, 2);
    assert.equal(a('/usr/bin/rel').mode & S_IFMT, S_IFLNK);
    assert.equal(tree.readlink(resolve(tree, '/usr/bin/abs')), '/usr/bin/tool');
    assert.equal(a('/usr/bin/abs').size, '/usr/bin/tool'.length);
    assert.deepEqual([a('/dev/null').mode & S_IFMT, a('/dev/null').rdevMajor, a('/dev/null').rdevMinor], [S_IFCHR, 1, 3]);
    assert.deepEqual([a('/dev/loop0').mode & S_IFMT, a('/dev/loop0').rdevMajor, a('/dev/loop0').gid], [S_IFBLK, 7, 6]);
    assert.equal(a('/dev/fifo').mode & S_IFMT, S_IFIFO);
    assert.notEqual(tree.lookup(resolve(tree, '/usr/share'), 'ünïcødé-名前.txt'), undefined);
    assert.equal(a('/usr/bin/capped').mtimeNsec, 123456789);
  });

  it('turns .wh.X into a 0:0 character device and .wh..wh..opq into opaque xattrs', async () => {
    const { tree } = await openFixture(fx);
    const varDir = resolve(tree, '/var');
    const names = Array.from({ length: tree.childCount(varDir) }, (_, i) => tree.child(varDir, i).name);
    assert.deepEqual(names, ['cache', 'removed']);
    const wh = tree.attr(resolve(tree, '/var/removed'));
    assert.deepEqual([wh.mode, wh.rdevMajor, wh.rdevMinor, wh.uid, wh.size], [S_IFCHR, 0, 0, 0, 0]);
    const cache = resolve(tree, '/var/cache');
    assert.equal(tree.lookup(cache, '.wh..wh..opq'), undefined);
    assert.deepEqual([...(tree.xattrsOf(cache)?.keys() ?? [])].sort(), ['trusted.overlay.opaque', 'user.overlay.opaque']);
    assert.equal(tree.xattrsOf(cache)!.get('user.overlay.opaque')!.toString(), 'y');
  });

  it('serves image xattrs but never overlay ones from the image', async () => {
    const { tree } = await openFixture(fx);
    const x = tree.xattrsOf(resolve(tree, '/usr/bin/capped'))!;
    assert.deepEqual([...x.keys()].sort(), ['security.capability', 'user.comment']);
  });

  it('gives an implicit root 0755 root:root and the newest mtime of the layer', async () => {
    const { tree } = await openFixture(fx);
    const root = tree.attr(0);
    assert.equal(root.mode, S_IFDIR | 0o755);
    assert.equal(root.uid, 0);
    const toc = JSON.parse(fx.tocJson) as { entries: { modtime?: string }[] };
    const newest = Math.max(...toc.entries.filter((e) => e.modtime).map((e) => Math.floor(Date.parse(e.modtime!) / 1000)));
    assert.equal(root.mtimeSec, newest);
    assert.equal(root.nlink, 2 + 4);
  });

  it('takes root metadata from a "./" entry when the layer has one', async () => {
    const big = loadFixtures().find((f) => f.name === 'big-chunked')!;
    const { tree } = await openFixture(big);
    const toc = JSON.parse(big.tocJson) as { entries: { name: string; mode: number; modtime: string }[] };
    const rootEntry = toc.entries.find((e) => e.name === './')!;
    assert.equal(tree.attr(0).mode, S_IFDIR | rootEntry.mode);
    assert.equal(tree.attr(0).mtimeSec, Date.parse(rootEntry.modtime) / 1000);
  });
});

describe('layer: content', () => {
  for (const fx of loadFixtures()) {
    it(`${fx.name}: every file reads back as in the tar, through verified chunks`, async () => {
      const { tree, blob } = await openFixture(fx);
      const expected = await tarContents(blob);
      const content = new LayerContent(tree, new CountingSource(blob), new ChunkCache(64 << 20), { name: fx.name });
      for (const [path, data] of expected) {
        const node = resolve(tree, path);
        // Read in odd-sized pieces across chunk boundaries.
        const parts: Buffer[] = [];
        for (let off = 0; off < data.length; off += 77_777) parts.push(...(await content.read(node, off, 77_777)));
        assert.ok(Buffer.concat(parts).equals(data), path);
      }
    });
  }

  it('never fetches zero chunks, and fetches each chunk once for concurrent readers', async () => {
    const fx = loadFixtures().find((f) => f.name === 'big-chunked')!;
    const { tree, blob } = await openFixture(fx);
    const src = new CountingSource(blob, 20);
    const content = new LayerContent(tree, src, new ChunkCache(64 << 20), { name: fx.name, readaheadBytes: 0 });
    const node = resolve(tree, '/model.bin');
    const size = tree.attr(node).size;
    const tail = await content.read(node, size - 65536, 65536);
    assert.ok(Buffer.concat(tail).equals(Buffer.alloc(65536)));
    assert.equal(src.calls, 0, 'the 1 MiB zero tail is synthesised');
    await Promise.all(Array.from({ length: 16 }, () => content.read(node, 0, 4096)));
    assert.equal(src.ranges, 1, '16 concurrent readers of one chunk share one fetch');
  });

  it('with dirPrefetchBytes, fetches the small files of a directory with its first miss (once per directory)', async () => {
    const fx = loadFixtures().find((f) => f.name === 'many-files') ?? loadFixtures()[0]!;
    const { tree, blob } = await openFixture(fx);
    // The directory with the most small regular files.
    let best = { dir: 0, files: [] as number[] };
    const walk = (dir: number) => {
      const files: number[] = [];
      for (let i = 0; i < tree.childCount(dir); i++) {
        const n = tree.childNode(dir, i);
        if (tree.isDir(n)) walk(n);
        else if ((tree.modeOf(n) & S_IFMT) === S_IFREG && tree.sizeOf(n) > 0 && tree.sizeOf(n) <= 16384) files.push(n);
      }
      if (files.length > best.files.length) best = { dir, files };
    };
    walk(0);
    assert.ok(best.files.length >= 3, `${fx.name} has a directory of small files`);
    const [first, second, third] = best.files as [number, number, number];
    const read = (content: LayerContent, n: number) => readWhole(tree, content, n);
    const { src: plain, content: without } = counted(tree, blob, fx.name);
    await read(without, first);
    await read(without, second);
    assert.equal(plain.calls, 2, 'without it, each file is a fetch');
    const { src, content } = counted(tree, blob, fx.name, { dirPrefetchBytes: 1 << 20 });
    const a = await read(content, first);
    assert.equal(src.calls, 2, 'the miss, and beside it one request for its siblings');
    assert.deepEqual(src.asked[0]!.map((r) => r.start), [tree.chunkRange(first, 0).start], 'the file read goes alone, first');
    const b = await read(content, second);
    const c = await read(content, third);
    assert.equal(src.calls, 2, 'the siblings came with the first miss');
    assert.ok(a.equals(await read(without, first)) && b.equals(await read(without, second)) && c.equals(await read(without, third)));
  });

  it('with nearbyBytes, a miss brings the small files stored next to it in the blob, whatever their directory', async () => {
    const fx = loadFixtures().find((f) => f.name === 'many-files')!;
    const { tree, blob } = await openFixture(fx);
    const files: number[] = [];
    for (let n = 0; n < tree.nodeCount; n++) if (tree.isRegular(n) && tree.chunkCount(n) > 0 && !tree.chunkRange(n, 0).zeros) files.push(n);
    assert.ok(files.length >= 20, `${fx.name} has many files`);
    const window = 4096;
    const missed = files[Math.floor(files.length / 2)]!;
    const at = tree.chunkRange(missed, 0);
    // The next file in the blob (a neighbour) and one well beyond the window.
    const near = files.find((n) => n > missed && tree.chunkRange(n, 0).start < at.end + window)!;
    const far = files.find((n) => tree.chunkRange(n, 0).start > at.end + 4 * window)!;
    assert.ok(near !== undefined && far !== undefined, 'the fixture has a neighbour and a distant file');
    const expected = await tarContents(blob);
    const read = (content: LayerContent, n: number) => readWhole(tree, content, n);
    const { src, content } = counted(tree, blob, fx.name, { nearbyBytes: window });
    assert.ok((await read(content, missed)).equals(expected.get(tree.pathOf(missed))!));
    assert.equal(src.calls, 2, 'the miss, and beside it one request for its neighbours');
    assert.deepEqual(src.asked[0], [{ start: at.start, end: at.end }], 'the file read goes alone, first');
    assert.ok((await read(content, near)).equals(expected.get(tree.pathOf(near))!));
    assert.equal(src.calls, 2, 'the neighbour is a hit');
    assert.ok(src.asked[1]!.every((r) => r.end > at.start - window && r.start < at.end + window), 'nothing beyond the window was asked');
    await read(content, far);
    assert.equal(src.calls, 4, 'a file beyond the window is a fetch of its own (with its neighbours)');
    const { src: off, content: without } = counted(tree, blob, fx.name);
    await read(without, missed);
    await read(without, near);
    assert.equal(off.calls, 2, 'without it, the neighbour is a fetch too');
    // While a hint's fetch is under way (guided), a miss fetches only what it reads.
    const { src: hinted, content: guided } = counted(tree, blob, fx.name, { nearbyBytes: window });
    guided.guided = true;
    await read(guided, missed);
    assert.deepEqual(hinted.asked, [[{ start: at.start, end: at.end }]], 'guided: the miss alone');
  });

  it('with nearbyMaxBytes, the neighbour window doubles at a miss after neighbours were read, and halves back when none were', async () => {
    const fx = loadFixtures().find((f) => f.name === 'many-files')!;
    const { tree, blob } = await openFixture(fx);
    const files: number[] = [];
    for (let n = 0; n < tree.nodeCount; n++) if (tree.isRegular(n) && tree.chunkCount(n) > 0 && !tree.chunkRange(n, 0).zeros) files.push(n);
    const window = 2048;
    const { src, content } = counted(tree, blob, fx.name, { nearbyBytes: window, nearbyMaxBytes: 4 * window });
    const startOf = (n: number) => tree.chunkRange(n, 0).start;
    // How far after the missed file the neighbour request of call `k` reaches: where its last range starts.
    const reach = (k: number, n: number) => Math.max(...src.asked[k]!.map((r) => r.start)) - tree.chunkRange(n, tree.chunkCount(n) - 1).end;
    const first = files[Math.floor(files.length / 4)]!;
    await readWhole(tree, content, first);
    assert.equal(src.calls, 2, 'the miss and its neighbours');
    assert.ok(reach(1, first) <= window, 'at first the window is nearbyBytes');
    const neighbour = files.find((n) => n > first && startOf(n) < startOf(first) + window && !src.asked[0]!.some((r) => r.start === startOf(n)))!;
    await readWhole(tree, content, neighbour);
    assert.equal(src.calls, 2, 'a neighbour read is a hit');
    // A miss far from there, with a file between 1× and 2× the window after it.
    const second = files.find((n) => startOf(n) > startOf(first) + 8 * window && files.some((m) => startOf(m) > tree.chunkRange(n, 0).end + window && startOf(m) < tree.chunkRange(n, 0).end + 2 * window))!;
    assert.ok(second !== undefined, 'the fixture has room for a wider window');
    await readWhole(tree, content, second);
    assert.equal(src.calls, 4);
    assert.ok(reach(3, second) > window && reach(3, second) <= 2 * window, `after a neighbour was read, the window doubled (reached ${reach(3, second)})`);
    // Another miss with none of those neighbours read: back to nearbyBytes.
    const third = files.find((n) => startOf(n) > startOf(second) + 16 * window)!;
    await readWhole(tree, content, third);
    assert.equal(src.calls, 6);
    assert.ok(reach(5, third) <= window, `with no neighbour read since, the window halved (reached ${reach(5, third)})`);
  });

  it('with wholeFileBytes, a miss anywhere in a file brings the rest of it in a few batched requests', async () => {
    const fx = loadFixtures().find((f) => f.name === 'big-chunked')!;
    const { tree, blob } = await openFixture(fx);
    const node = resolve(tree, '/model.bin');
    const size = tree.attr(node).size;
    const expected = (await tarContents(blob)).get('/model.bin')!;
    // Page faults of a mapped library: 4 KiB at scattered offsets, no sequential run to earn readahead.
    const offsets = Array.from({ length: 40 }, (_, i) => Math.floor(((i * 7919) % 40) * (size / 40)) & ~4095);
    const fault = async (content: LayerContent, off: number) => {
      const got = Buffer.concat(await content.read(node, off, 4096));
      assert.ok(got.equals(expected.subarray(off, off + 4096)), `bytes at ${off}`);
    };
    const scattered = new CountingSource(blob);
    const without = new LayerContent(tree, scattered, new ChunkCache(64 << 20), { name: fx.name, readaheadBytes: 0 });
    for (const off of offsets) await fault(without, off);
    assert.ok(scattered.calls >= 15, `without it, each fault in a new chunk is a fetch (${scattered.calls})`);
    const src = new CountingSource(blob);
    const content = new LayerContent(tree, src, new ChunkCache(64 << 20), { name: fx.name, readaheadBytes: 0, wholeFileBytes: 16 << 20 });
    await fault(content, offsets[0]!);
    for (let i = 0; i < 100 && src.bytes < blob.length / 2; i++) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 100));
    const calls = src.calls;
    assert.ok(calls <= 2 + Math.ceil(blob.length / (1 << 20)), `${calls} fetches for ${tree.chunkCount(node)} chunks`);
    for (const off of offsets.slice(1)) await fault(content, off);
    assert.equal(src.calls, calls, 'every later fault is served from what the first one brought');
    assert.ok(src.bytes <= blob.length, 'no chunk fetched twice');
  });

  it('fetches the next files of a directory walked in name order before they are read', async () => {
    const fx = loadFixtures().find((f) => f.name === 'many-files')!;
    const { tree, blob } = await openFixture(fx);
    // The directory with the most non-empty regular files, in name order.
    let best: number[] = [];
    const walk = (dir: number) => {
      const files: number[] = [];
      for (let i = 0; i < tree.childCount(dir); i++) {
        const n = tree.childNode(dir, i);
        if (tree.isDir(n)) walk(n);
        else if ((tree.modeOf(n) & S_IFMT) === S_IFREG && tree.sizeOf(n) > 0) files.push(n);
      }
      if (files.length > best.length) best = files;
    };
    walk(0);
    assert.ok(best.length >= 6, `${fx.name} has a directory of at least 6 files`);
    const readAll = async (content: LayerContent) => {
      for (const n of best) await content.read(n, 0, tree.sizeOf(n));
    };
    const plain = new CountingSource(blob);
    await readAll(new LayerContent(tree, plain, new ChunkCache(64 << 20), { name: fx.name, readaheadBytes: 0 }));
    assert.ok(plain.calls >= best.length - 2, `without it, about one fetch per file (${plain.calls} for ${best.length}; identical files share chunks)`);
    const src = new CountingSource(blob);
    await readAll(new LayerContent(tree, src, new ChunkCache(64 << 20), { name: fx.name, readaheadBytes: 0, wholeFileBytes: 16 << 20 }));
    assert.ok(src.calls <= 4, `${src.calls} fetches for a walk over ${best.length} files`);
    // Read out of name order, nothing is fetched ahead.
    const shuffled = new CountingSource(blob);
    const content = new LayerContent(tree, shuffled, new ChunkCache(64 << 20), { name: fx.name, readaheadBytes: 0, wholeFileBytes: 16 << 20 });
    for (const n of [...best].reverse()) await content.read(n, 0, tree.sizeOf(n));
    assert.equal(shuffled.calls, plain.calls);
  });

  it('does not fetch files bigger than wholeFileBytes whole', async () => {
    const fx = loadFixtures().find((f) => f.name === 'big-chunked')!;
    const { tree, blob } = await openFixture(fx);
    const node = resolve(tree, '/model.bin');
    const src = new CountingSource(blob);
    const content = new LayerContent(tree, src, new ChunkCache(64 << 20), { name: fx.name, readaheadBytes: 0, wholeFileBytes: 1 << 20 });
    await content.read(node, 1 << 20, 4096);
    await new Promise((r) => setTimeout(r, 50));
    const c = tree.chunkRange(node, tree.chunkAt(node, 1 << 20));
    assert.equal(src.calls, 1);
    assert.equal(src.bytes, c.end - c.start, 'only the chunk that was read');
  });

  it('fetches ahead for sequential readers in batched ranges', async () => {
    const fx = loadFixtures().find((f) => f.name === 'big-chunked')!;
    const { tree, blob } = await openFixture(fx);
    const src = new CountingSource(blob);
    const content = new LayerContent(tree, src, new ChunkCache(64 << 20), { name: fx.name, readaheadBytes: 8 << 20 });
    const node = resolve(tree, '/model.bin');
    for (let off = 0; off < tree.attr(node).size; off += 131072) await content.read(node, off, 131072);
    assert.ok(src.calls <= 3, `${src.calls} source calls for ${tree.chunkCount(node)} chunks`);
  });

  it('answers a corrupt chunk with an error naming layer, path and offsets, and keeps serving other files', async () => {
    const fx = loadFixtures().find((f) => f.name === 'basic-pax')!;
    const toc = JSON.parse(fx.tocJson) as { entries: { name: string; offset?: number }[] };
    const victim = toc.entries.find((e) => e.name === 'usr/share/text.txt')!;
    const blob = Buffer.from(readFileSync(fx.blobPath));
    blob[victim.offset! + 30] ^= 0x55;
    const { tree } = await openFixture(fx); // TOC region untouched: the layer opens
    const errors: string[] = [];
    const content = new LayerContent(tree, new CountingSource(blob), new ChunkCache(64 << 20), {
      name: 'test/ref layer x', logger: { error: (_o, m) => errors.push(m), warn: () => {} },
    });
    await assert.rejects(content.read(resolve(tree, '/usr/share/text.txt'), 0, 4096), (e: ContentError) =>
      e.code === 'VERIFY_FAILED' && /test\/ref layer x: "\/usr\/share\/text\.txt" chunk at file offset 0 \(blob \[\d+, \d+\)\)/.test(e.message));
    assert.equal(errors.length, 1);
    const ok = await content.read(resolve(tree, '/etc/hostname'), 0, 100);
    assert.equal(Buffer.concat(ok).length, 6);
    assert.equal((await tarContents(readFileSync(fx.blobPath))).get('/etc/hostname')!.toString(), Buffer.concat(ok).toString());
  });

  it('turns a failing source into an error, not a hang', async () => {
    const fx = loadFixtures()[0]!;
    const { tree } = await openFixture(fx);
    const failing: BlobSource = { size: 1 << 30, readRanges: async () => { throw new Error('registry unreachable'); } };
    const content = new LayerContent(tree, failing, new ChunkCache(1 << 20), { name: 'l' });
    await assert.rejects(content.read(resolve(tree, '/etc/hostname'), 0, 10), /fetch failed: registry unreachable/);
  });
});

describe('layer: background fetch of the files read first (rank 0)', () => {
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'tocfs-rank0-')); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** The regular files of a fixture with data, and the digests of their data chunks. */
  function filesOf(tree: LayerTree): { node: number; digests: string[] }[] {
    const out: { node: number; digests: string[] }[] = [];
    for (let n = 0; n < tree.nodeCount; n++) {
      if (!tree.isRegular(n) || tree.chunkCount(n) === 0) continue;
      const digests: string[] = [];
      for (let i = 0; i < tree.chunkCount(n); i++) if (!tree.chunk(n, i).zeros) digests.push(tree.chunkDigest(n, i));
      if (digests.length > 0) out.push({ node: n, digests });
    }
    return out;
  }

  it('keeps fetched first-read chunks in memory as well as on disk, and only those', async () => {
    const fx = loadFixtures().find((f) => f.name === 'many-files') ?? loadFixtures()[0]!;
    const { tree, blob } = await openFixture(fx);
    const files = filesOf(tree);
    const first = files.slice(0, 3);
    const disk = new DiskCache(dir, 1 << 30);
    const cache = new ChunkCache(64 << 20, disk);
    const content = new LayerContent(tree, new CountingSource(blob), cache, { name: fx.name });
    await new LayerPrefetcher(tree, content, new BackgroundScheduler(2, { pollMs: 2 }), { firstNodes: first.map((f) => f.node) }).start();
    for (const f of files) for (const d of f.digests) assert.ok(disk.has(d), 'every chunk is on disk');
    for (const f of first) for (const d of f.digests) assert.ok(cache.has(d), 'a first-read chunk is in memory');
    const rest = files.slice(3).flatMap((f) => f.digests).filter((d) => !first.some((f) => f.digests.includes(d)));
    assert.ok(rest.length > 0);
    assert.ok(rest.every((d) => !cache.has(d)), 'other background chunks went to disk only');
  });

  it('with byte ranges for a first-read file, fetches only the chunks they touch first; the rest of it later', async () => {
    const fx = loadFixtures().find((f) => f.name === 'big-chunked')!;
    const { tree, blob } = await openFixture(fx);
    const big = filesOf(tree).sort((a, b) => b.digests.length - a.digests.length)[0]!;
    assert.ok(big.digests.length >= 3, `${tree.pathOf(big.node)} has ${big.digests.length} data chunks`);
    const data = Array.from({ length: tree.chunkCount(big.node) }, (_, i) => i).filter((i) => !tree.chunk(big.node, i).zeros);
    const wanted = data[1]!;
    const w = tree.chunkFileRange(big.node, wanted);
    const src = new CountingSource(blob);
    const disk = new DiskCache(dir, 1 << 30);
    const content = new LayerContent(tree, src, new ChunkCache(64 << 20, disk), { name: fx.name });
    await new LayerPrefetcher(tree, content, new BackgroundScheduler(1, { pollMs: 2 }), {
      firstNodes: [big.node], firstRanges: new Map([[big.node, [[w.start + 1, w.start + 2]]]]),
    }).start();
    const c = tree.chunk(big.node, wanted);
    assert.deepEqual(src.asked[0], [{ start: c.start, end: c.end }], 'the first request is the one chunk the range touches');
    for (const d of big.digests) assert.ok(disk.has(d), 'the rest of the file came later');
  });

  it('holds the rest of a layer with first-read work while the store is busy (a container starting), not for ever', async () => {
    const fx = loadFixtures().find((f) => f.name === 'many-files') ?? loadFixtures()[0]!;
    const { tree, blob } = await openFixture(fx);
    const files = filesOf(tree);
    let requests = 0;
    const busy = setInterval(() => { requests++; }, 5);
    const src = new CountingSource(blob);
    const calls: number[] = [];
    const timed: BlobSource = { size: src.size, readRanges: async (r) => { calls.push(Date.now()); return src.readRanges(r); } };
    const content = new LayerContent(tree, timed, new ChunkCache(64 << 20, new DiskCache(dir, 1 << 30)), { name: fx.name });
    const scheduler = new BackgroundScheduler(2, { pollMs: 2, quietMs: 40, activity: () => requests });
    const t0 = Date.now();
    const done = new LayerPrefetcher(tree, content, scheduler, { firstNodes: [files[0]!.node] }).start();
    try {
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(calls.length, 1, 'only the first-read file was fetched while the store was busy');
      assert.ok(calls[0]! - t0 < 200, 'rank 0 did not wait');
      await new Promise((r) => setTimeout(r, 1300));
      assert.ok(calls.length >= 2, 'a store that stays busy slows the rest down, never stops it (a batch per second)');
    } finally {
      clearInterval(busy);
    }
    await done;
    assert.ok(calls.length > 1, 'the rest came once the store was quiet');
  });

  it('lets a layer the container is not reading from yield to the layers it reads from, for a bounded time', async () => {
    const fx = loadFixtures()[0]!;
    const { tree, blob } = await openFixture(fx);
    const quiet = new LayerContent(tree, new CountingSource(blob), new ChunkCache(1 << 20), { name: 'base' });
    const read = new LayerContent(tree, new CountingSource(blob), new ChunkCache(1 << 20), { name: 'data' });
    const s = new BackgroundScheduler(2, { pollMs: 2, quietMs: 100 });
    s.register(quiet);
    s.register(read);
    assert.equal(s.othersReading(quiet), false, 'nobody reads');
    read.lastForegroundAt = Date.now();
    assert.equal(s.othersReading(quiet), true, 'the container reads from the other layer only');
    assert.equal(s.othersReading(read), false, 'the layer being read never yields to a quiet one');
    quiet.lastForegroundAt = Date.now();
    assert.equal(s.othersReading(quiet), false, 'both layers are being read');
    quiet.lastForegroundAt = 0;
    const t0 = Date.now();
    read.foreground = 1; // a fetch that never ends
    await s.whileOthersRead(quiet, 150);
    assert.ok(Date.now() - t0 >= 140, 'it waited');
    read.foreground = 0;
  });

  it('on a warm start, loads the first-read chunks from disk into memory (no fetch), within its memory share', async () => {
    const fx = loadFixtures().find((f) => f.name === 'many-files') ?? loadFixtures()[0]!;
    const { tree, blob } = await openFixture(fx);
    const files = filesOf(tree);
    const disk = new DiskCache(dir, 1 << 30);
    const cold = new LayerContent(tree, new CountingSource(blob), new ChunkCache(64 << 20, disk), { name: fx.name });
    await new LayerPrefetcher(tree, cold, new BackgroundScheduler(2, { pollMs: 2 })).start();

    // A restarted daemon: the same disk cache, an empty memory cache, a source that must not be asked.
    const warmDisk = new DiskCache(dir, 1 << 30);
    await warmDisk.load();
    const cache = new ChunkCache(64 << 20, warmDisk);
    const src = new CountingSource(blob);
    const content = new LayerContent(tree, src, cache, { name: fx.name });
    const first = files.slice(0, 4);
    const pf = new LayerPrefetcher(tree, content, new BackgroundScheduler(2, { pollMs: 2 }), { firstNodes: first.map((f) => f.node) });
    await pf.start();
    assert.equal(src.calls, 0, 'everything was local');
    for (const f of first) for (const d of f.digests) assert.ok(cache.has(d), 'a first-read chunk was loaded into memory');
    let bytes = 0;
    for (const f of first) for (let i = 0; i < tree.chunkCount(f.node); i++) if (!tree.chunk(f.node, i).zeros) bytes += tree.chunkSize(f.node, i);
    // Chunks shared by two of the files are loaded once.
    assert.ok(pf.progress.loadedBytes > 0 && pf.progress.loadedBytes <= bytes, `${pf.progress.loadedBytes} of ${bytes} bytes`);

    // A memory cache too small for them: the share (a quarter) caps what is loaded.
    const tiny = new ChunkCache(4 * 1024, new DiskCache(dir, 1 << 30));
    await tiny.disk!.load();
    const small = new LayerPrefetcher(tree, new LayerContent(tree, src, tiny, { name: fx.name }), new BackgroundScheduler(2, { pollMs: 2 }), { firstNodes: files.map((f) => f.node) });
    await small.start();
    assert.ok(small.progress.loadedBytes <= 1024, `${small.progress.loadedBytes} bytes loaded into a 4 KiB memory cache`);
    assert.equal(src.calls, 0);
  });
});
