import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DiskCache } from '../../src/layer/index.js';

const digestOf = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

describe('layer: disk cache', () => {
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'tocfs-disk-cache-')); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('stores chunks by digest and finds them again after a restart', async () => {
    const a = randomBytes(10_000);
    const c1 = new DiskCache(dir, 1 << 20);
    await c1.put(digestOf(a), a);
    assert.ok(existsSync(join(dir, 'sha256', digestOf(a).slice(7, 9), digestOf(a).slice(7))));
    const c2 = new DiskCache(dir, 1 << 20);
    await c2.load();
    assert.equal(c2.entries, 1);
    assert.ok((await c2.get(digestOf(a)))!.equals(a));
    assert.equal(c2.stats.hits, 1);
  });

  it('serves hits from names alone after a restart, then learns sizes and recency (a chunk read meanwhile stays newest)', async () => {
    const chunks = [randomBytes(10_000), randomBytes(20_000), randomBytes(30_000)];
    const c1 = new DiskCache(dir, 1 << 20);
    for (const b of chunks) await c1.put(digestOf(b), b);
    // Access times oldest first: chunks[0], [1], [2].
    chunks.forEach((b, i) => {
      const when = new Date(Date.UTC(2020, 0, 1 + i));
      utimesSync(join(dir, 'sha256', digestOf(b).slice(7, 9), digestOf(b).slice(7)), when, when);
    });
    const c2 = new DiskCache(dir, 1 << 20);
    await c2.list();
    assert.equal(c2.entries, 3);
    assert.ok(c2.has(digestOf(chunks[0]!)));
    assert.ok((await c2.get(digestOf(chunks[0]!), false, 10_000))!.equals(chunks[0]!), 'a hit before any stat');
    await c2.load();
    assert.equal(c2.usedBytes, 60_000, 'every size known once loaded');
    const atime = (b: Buffer) => statSync(join(dir, 'sha256', digestOf(b).slice(7, 9), digestOf(b).slice(7))).atimeMs;
    assert.ok(atime(chunks[0]!) > Date.now() - 60_000, 'the chunk read since the start has its access time refreshed on disk');
    assert.ok(atime(chunks[1]!) < Date.UTC(2021, 0, 1), 'the others keep theirs');
    // Down to 40 KiB: the oldest by access time goes, not the one read since the start.
    await c2.evict(45_000);
    assert.ok(c2.has(digestOf(chunks[0]!)), 'read after the restart: the most recent');
    assert.ok(!c2.has(digestOf(chunks[1]!)), 'the oldest access time is evicted first');
    assert.ok(c2.has(digestOf(chunks[2]!)));
  });

  it('serves a chunk while it is being written, and writes it once when put twice', async () => {
    const a = randomBytes(50_000);
    const c = new DiskCache(dir, 1 << 20);
    await c.load();
    const first = c.put(digestOf(a), a);
    const second = c.put(digestOf(a), a);
    assert.ok(c.has(digestOf(a)), 'known as soon as it is queued');
    assert.equal(c.pendingBytes, a.length);
    assert.ok((await c.get(digestOf(a)))!.equals(a), 'served from the write queue');
    await Promise.all([first, second]);
    assert.equal(c.stats.writes, 1);
    assert.equal(c.pendingBytes, 0);
    assert.ok(readFileSync(join(dir, 'sha256', digestOf(a).slice(7, 9), digestOf(a).slice(7))).equals(a));
  });

  it('turns a chunk file cut short (a power loss before writeback: no fsync) into a miss after a restart', async () => {
    const a = randomBytes(20_000);
    const c1 = new DiskCache(dir, 1 << 20);
    await c1.put(digestOf(a), a);
    const file = join(dir, 'sha256', digestOf(a).slice(7, 9), digestOf(a).slice(7));
    writeFileSync(file, a.subarray(0, 4096)); // what a crash mid-write leaves
    const c2 = new DiskCache(dir, 1 << 20);
    await c2.load();
    assert.equal(await c2.get(digestOf(a)), undefined);
    assert.equal(c2.stats.corrupt, 1);
    assert.ok(!existsSync(file));
  });

  it('never fails a put: a cache directory it cannot write only costs a refetch', async () => {
    writeFileSync(join(dir, 'sha256'), 'not a directory');
    const a = randomBytes(1000);
    const c = new DiskCache(dir, 1 << 20);
    await c.put(digestOf(a), a); // resolves, logs
    assert.equal(c.stats.writes, 0);
    assert.equal(c.has(digestOf(a)), false);
  });

  // Small chunks are read and hashed on the calling thread, big ones (and any with offThread) on a worker.
  for (const [what, size, offThread] of [['a small chunk', 5000, false], ['a small chunk read off-thread', 5000, true], ['a big chunk', 300_000, false]] as const) {
    it(`turns a corrupted file into a miss and removes it, never returning its bytes (${what})`, async () => {
      const a = randomBytes(size);
      const c = new DiskCache(dir, 1 << 20);
      await c.put(digestOf(a), a);
      assert.ok((await c.get(digestOf(a), offThread))!.equals(a), 'intact: read back');
      const path = join(dir, 'sha256', digestOf(a).slice(7, 9), digestOf(a).slice(7));
      const bad = readFileSync(path);
      bad[100] ^= 1;
      writeFileSync(path, bad);
      assert.equal(await c.get(digestOf(a), offThread), undefined);
      assert.equal(c.stats.corrupt, 1);
      assert.ok(!existsSync(path));
    });
  }

  it('keeps within its cap under three times its size of chunks, evicting the least recently used', async () => {
    const chunks = Array.from({ length: 30 }, () => randomBytes(10_000));
    const c = new DiskCache(dir, 100_000);
    for (const [i, b] of chunks.entries()) {
      await c.put(digestOf(b), b);
      if (i >= 2) await c.get(digestOf(chunks[0]!)); // chunk 0 stays hot
      assert.ok(c.usedBytes <= 100_000, `${c.usedBytes} bytes after ${i + 1} chunks`);
    }
    assert.ok(await c.get(digestOf(chunks[0]!)), 'the hot chunk survived');
    assert.ok(await c.get(digestOf(chunks[29]!)), 'the newest chunk is there');
    assert.equal(await c.get(digestOf(chunks[1]!)), undefined, 'an old cold chunk was evicted');
    const files = readdirSync(join(dir, 'sha256')).flatMap((d) => readdirSync(join(dir, 'sha256', d)));
    assert.equal(files.length, c.entries);
  });

  it('never evicts a pinned chunk', async () => {
    const chunks = Array.from({ length: 5 }, () => randomBytes(10_000));
    const c = new DiskCache(dir, 25_000);
    await c.put(digestOf(chunks[0]!), chunks[0]!);
    const unpin = c.pin(digestOf(chunks[0]!));
    for (const b of chunks.slice(1)) await c.put(digestOf(b), b);
    assert.ok(c.has(digestOf(chunks[0]!)));
    unpin();
    await c.evict(0);
    assert.equal(c.entries, 0);
  });

  it('removes temporary files a crashed writer left behind', async () => {
    const c1 = new DiskCache(dir, 1 << 20);
    const a = randomBytes(100);
    await c1.put(digestOf(a), a);
    const sub = join(dir, 'sha256', digestOf(a).slice(7, 9));
    writeFileSync(join(sub, '.tmp-1234-0'), 'partial');
    const c2 = new DiskCache(dir, 1 << 20);
    await c2.load();
    assert.deepEqual(readdirSync(sub), [digestOf(a).slice(7)]);
  });
});
