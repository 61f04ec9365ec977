// Complete files for FUSE passthrough, assembled on a worker from the disk cache's verified chunks: right bytes,
// holes included; nothing made from a damaged chunk; an earlier run's copy taken only after it is hashed again.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openChunkedLayer, writeZstdChunked } from '../../src/format/index.js';
import { AssembledFiles, ChunkCache, DiskCache, LayerContent, LayerTree } from '../../src/layer/index.js';
import { TarBuilder } from '../format/tar-builder.js';

const hex = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function until(check: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 20_000;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('layer: assembled files for passthrough', function () {
  this.timeout(60_000);
  // Random data around a run of zeros (the writer makes it a zeros chunk: a hole in the copy).
  const big = Buffer.concat([randomBytes(1 << 20), Buffer.alloc(2 << 20), randomBytes(700_000)]);
  const small = randomBytes(5000);
  let dir: string;
  let tree: LayerTree;
  let blob: Buffer;
  let node: number;

  before(async () => {
    const parts: Buffer[] = [];
    const r = await writeZstdChunked([new TarBuilder().file('big.bin', big).file('small.bin', small).build()], (b) => { parts.push(b); });
    blob = Buffer.concat(parts);
    const layer = await openChunkedLayer({ size: blob.length, read: async (s, e) => blob.subarray(s, e) }, r.annotations);
    tree = LayerTree.fromToc(layer.toc);
    node = tree.lookup(0, 'big.bin')!;
    assert.ok(tree.chunkCount(node) > 1, 'several chunks');
    assert.ok(Array.from({ length: tree.chunkCount(node) }, (_, i) => tree.chunkRange(node, i).zeros).includes(true), 'a zeros chunk');
  });
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'tocfs-assembled-')); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** A disk cache holding every chunk of the layer, put there by reading the files through LayerContent. */
  async function warmDisk(disk = new DiskCache(dir, 64 << 20)): Promise<DiskCache> {
    await disk.load();
    const source = { size: blob.length, readRanges: async (rs: readonly { start: number; end: number }[]) => rs.map((x) => blob.subarray(x.start, x.end)) };
    const content = new LayerContent(tree, source, new ChunkCache(1 << 20, disk), { name: 'test' });
    await content.read(node, 0, big.length);
    await until(() => disk.pendingBytes === 0, 'chunks on disk');
    return disk;
  }

  it('assembles a file from verified chunks (holes too) and counts it in the disk budget', async () => {
    const disk = await warmDisk();
    const files = new AssembledFiles(disk);
    assert.equal(files.path(tree, node), undefined, 'nothing before it is asked for');
    files.request(tree, node, () => 'big.bin');
    await until(() => files.stats.assembled === 1, 'the assembly');
    const path = files.path(tree, node)!;
    assert.equal(path, join(dir, 'files', hex(big)));
    assert.ok(readFileSync(path).equals(big));
    assert.deepEqual(disk.files, { count: 1, bytes: big.length });
    assert.equal(files.wanted(tree, tree.lookup(0, 'small.bin')!), false, 'small files are served as usual');
    assert.deepEqual(readdirSync(join(dir, 'files')), [hex(big)], 'no temporary file left');
  });

  it('refuses a damaged chunk: no copy, and the chunk leaves the disk cache (it is fetched again when read)', async () => {
    const disk = await warmDisk();
    const digest = tree.chunkDigest(node, 0);
    const file = join(dir, 'sha256', digest.slice(7, 9), digest.slice(7));
    const b = readFileSync(file);
    b[100]! ^= 1;
    writeFileSync(file, b);
    const files = new AssembledFiles(disk);
    files.request(tree, node, () => 'big.bin');
    await until(() => files.stats.failed === 1, 'the refusal');
    assert.equal(files.path(tree, node), undefined);
    // Counted as failed first, then forgotten and removed (the removal is asynchronous).
    await until(() => !disk.has(digest) && !existsSync(file), 'the removal of the damaged chunk');
    assert.deepEqual(readdirSync(join(dir, 'files')), []);
    assert.equal(disk.stats.corrupt, 1);
  });

  it('takes an earlier run\'s copy only after hashing it, and makes a damaged one again', async () => {
    const disk = await warmDisk();
    const first = new AssembledFiles(disk);
    first.request(tree, node, () => 'big.bin');
    await until(() => first.stats.assembled === 1, 'the assembly');

    const again = new DiskCache(dir, 64 << 20);
    await again.load();
    assert.deepEqual(again.files, { count: 1, bytes: big.length }, 'found after a restart');
    const second = new AssembledFiles(again);
    second.request(tree, node, () => 'big.bin');
    await until(() => second.stats.reused === 1, 'the check');
    assert.ok(readFileSync(second.path(tree, node)!).equals(big));

    const path = join(dir, 'files', hex(big));
    const damaged = readFileSync(path);
    damaged[damaged.length - 1]! ^= 1;
    writeFileSync(path, damaged);
    const third = new AssembledFiles(again);
    third.request(tree, node, () => 'big.bin');
    await until(() => third.stats.assembled + third.stats.reused === 1, 'the check');
    assert.equal(third.stats.assembled, 1, 'made again, not taken');
    assert.ok(readFileSync(third.path(tree, node)!).equals(big));
  });

  it('waits while chunks are missing, is made once its layer is local, and is evicted with the disk cache', async () => {
    const disk = new DiskCache(dir, 64 << 20);
    await disk.load();
    const files = new AssembledFiles(disk);
    files.request(tree, node, () => 'big.bin');
    assert.equal(files.stats.running, 0, 'not started: its chunks are not on disk');
    await warmDisk(disk);
    files.request(tree, node, () => 'big.bin');
    assert.equal(files.stats.running, 0, 'an open soon after waits for the retry pause');
    files.layerLocal(tree);
    await until(() => files.stats.assembled === 1, 'the assembly');
    await disk.evict(0);
    assert.equal(files.path(tree, node), undefined, 'evicted');
    assert.deepEqual(disk.files, { count: 0, bytes: 0 });
    assert.ok(!existsSync(join(dir, 'files', hex(big))));
  });
});
