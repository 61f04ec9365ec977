import assert from 'node:assert/strict';
import {
  ANNOTATION_TARSPLIT_POSITION, ANNOTATION_TOC_POSITION, FormatError, openChunkedLayer, readFile, verifyChunkedLayer,
  type BlobReader, type ChunkedLayer, type LayerChunk, type LayerFile,
} from '../../src/format/index.js';
import { collect, formatErr, memBlob, position, pseudoRandom, seedLayer } from './helpers.js';

type Seed = Awaited<ReturnType<typeof seedLayer>>;

function flipped(blob: Buffer, at: number): Buffer {
  const b = Buffer.from(blob);
  b[at] = b[at]! ^ 0x01;
  return b;
}

/**
 * Sample positions of a chunk's frame: the first and last 16 bytes (frame header, block header, checksum) and
 * `spread` positions in between.
 */
function samplePositions(c: LayerChunk, spread: number, seed: number): number[] {
  const out = new Set<number>();
  for (let i = 0; i < 16 && c.start + i < c.end; i++) { out.add(c.start + i); out.add(c.end - 1 - i); }
  const r = pseudoRandom(spread * 4, seed);
  for (let i = 0; i < spread; i++) out.add(c.start + (r.readUInt32LE(i * 4) % (c.end - c.start)));
  return [...out].sort((a, b) => a - b);
}

/** Byte 5 of a frame is its window descriptor: flipping its low bit changes the window size, not the content. */
const WINDOW_DESCRIPTOR = 5;

describe('format: corrupted blobs are caught and blamed on the right file', function () {
  this.timeout(60_000);
  let s: Seed;
  let layer: ChunkedLayer;
  before(async () => {
    s = await seedLayer();
    layer = await openChunkedLayer(memBlob(s.blob), s.result.annotations);
  });

  const dataFiles = () => layer.toc.files.filter((f) => f.type === 'reg' && f.size > 0);
  const original = (f: LayerFile): Buffer => {
    if (f.name === 'd/big') return s.big;
    if (f.name === 'd/small') return s.small;
    assert.equal(f.name, 'd/attrs');
    return Buffer.from('with xattrs');
  };

  it('has the shapes the test needs: a multi-chunk file with a zeros chunk and single-chunk files', () => {
    const big = layer.toc.files.find((f) => f.name === 'd/big')!;
    assert.ok(big.chunks.length >= 3, `d/big has ${big.chunks.length} chunks`);
    assert.ok(big.chunks.some((c) => c.zeros));
    assert.equal(layer.toc.files.find((f) => f.name === 'd/small')!.chunks.length, 1);
  });

  it('any flipped byte in a data frame fails verification and readFile, naming the file', async () => {
    let checked = 0;
    for (const f of dataFiles()) {
      for (const [ci, c] of f.chunks.entries()) {
        if (c.zeros) continue;
        for (const at of samplePositions(c, 6, ci + 1)) {
          const bad = memBlob(flipped(s.blob, at));
          const named = (e: unknown) => {
            assert.ok(e instanceof FormatError, String(e));
            assert.ok(e.message.includes(`"${f.name}"`), `flip at ${at} in ${f.name}: ${e.message}`);
            return true;
          };
          if (at === c.start + WINDOW_DESCRIPTOR) {
            // Not always detectable, and harmless: either an error naming the file or the original content.
            const got = await collect(readFile(bad, f)).then((b) => b, (e: unknown) => { named(e); return undefined; });
            if (got) assert.ok(got.equals(original(f)), `flip at ${at} of ${f.name} changed the content unnoticed`);
            continue;
          }
          await assert.rejects(collect(readFile(bad, f)), named, `readFile, flip at ${at} of ${f.name}`);
          await assert.rejects(verifyChunkedLayer(bad, layer), named, `verify, flip at ${at} of ${f.name}`);
          checked++;
        }
      }
    }
    assert.ok(checked > 150, `${checked} positions checked`);
  });

  it('a corrupted zeros chunk is never read: the file still reads back as its original content', async () => {
    const big = layer.toc.files.find((f) => f.name === 'd/big')!;
    const z = big.chunks.find((c) => c.zeros)!;
    const bad = memBlob(flipped(s.blob, z.start + Math.floor((z.end - z.start) / 2)));
    assert.ok((await collect(readFile(bad, big))).equals(s.big));
  });

  it('a flipped byte in the TOC is a TOC digest mismatch', async () => {
    const [off, len] = position(s.result.annotations, ANNOTATION_TOC_POSITION);
    for (const at of [off, off + Math.floor(len / 2), off + len - 1]) {
      await assert.rejects(openChunkedLayer(memBlob(flipped(s.blob, at)), s.result.annotations), formatErr('DIGEST_MISMATCH', /TOC digest mismatch/));
    }
  });

  it('a flipped byte in the tar-split is a tar-split digest mismatch', async () => {
    const [off, len] = position(s.result.annotations, ANNOTATION_TARSPLIT_POSITION);
    for (const at of [off, off + Math.floor(len / 2), off + len - 1]) {
      await assert.rejects(openChunkedLayer(memBlob(flipped(s.blob, at)), s.result.annotations), formatErr('DIGEST_MISMATCH', /tar-split digest mismatch/));
    }
  });

  it('a truncated blob is an error, not a hang', async () => {
    for (const keep of [0, 100, s.blob.length - 73]) {
      await assert.rejects(openChunkedLayer(memBlob(s.blob.subarray(0, keep)), s.result.annotations), formatErr('ANNOTATION_INVALID', /beyond the blob/));
    }
    // Only the footer cut: readers never need it (the annotations say everything), so the layer still verifies.
    const cut = memBlob(s.blob.subarray(0, s.blob.length - 1));
    assert.equal((await verifyChunkedLayer(cut, await openChunkedLayer(cut, s.result.annotations))).diffID, s.result.diffID);
  });

  it('a reader that returns short ranges (a cut-off response) makes reads fail, naming the file', async () => {
    const short: BlobReader = { size: s.blob.length, read: async (a, b) => s.blob.subarray(a, a + Math.floor((b - a) / 2)) };
    for (const f of dataFiles()) {
      await assert.rejects(collect(readFile(short, f)), (e: unknown) => e instanceof FormatError && e.message.includes(`"${f.name}"`));
    }
  });

  it('overwritten bytes inside a payload are a digest mismatch for that file', async () => {
    const small = layer.toc.files.find((f) => f.name === 'd/small')!;
    const bad = Buffer.from(s.blob);
    bad.fill(0xff, small.chunks[0]!.start + 20, small.chunks[0]!.start + 40);
    await assert.rejects(verifyChunkedLayer(memBlob(bad), layer), formatErr('DIGEST_MISMATCH', '"d/small"'));
  });
});
