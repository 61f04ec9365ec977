import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decompress } from 'zstd-napi';
import { FormatError, compressFrame, openChunkedLayer, verifyChunkedLayer } from '../../src/format/index.js';
import { sha256Digest } from '../../src/util/index.js';
import { assemble, convert, memBlob, pseudoRandom, seedLayer } from './helpers.js';
import { TarBuilder } from './tar-builder.js';

/** Random edits of a byte string: overwrite, insert, delete, duplicate a slice. */
const editsArb = fc.array(fc.record({
  op: fc.constantFrom('set', 'insert', 'delete', 'dup'),
  at: fc.nat(),
  len: fc.integer({ min: 1, max: 40 }),
  byte: fc.oneof(fc.constantFrom(...Buffer.from('{}[]":,0123456789-.e \\/nulltruefalse\0\u00ff')), fc.integer({ min: 0, max: 255 })),
}), { minLength: 1, maxLength: 4 });

type Edit = { op: string; at: number; len: number; byte: number };

function applyEdits(src: Buffer, edits: Edit[]): Buffer {
  let b = Buffer.from(src);
  for (const e of edits) {
    const at = b.length === 0 ? 0 : e.at % b.length;
    switch (e.op) {
      case 'set': b[at] = e.byte; break;
      case 'insert': b = Buffer.concat([b.subarray(0, at), Buffer.alloc(e.len, e.byte), b.subarray(at)]); break;
      case 'delete': b = Buffer.concat([b.subarray(0, at), b.subarray(at + e.len)]); break;
      case 'dup': b = Buffer.concat([b.subarray(0, at + e.len), b.subarray(at)]); break;
    }
  }
  return b;
}

/** FC_SCALE=10 runs ten times as many cases (for a deeper local search; CI keeps the default). */
const SCALE = Number(process.env.FC_SCALE ?? 1);

/** Anything but a FormatError escaping is a crash of the code under test. */
function onlyFormatErrors(e: unknown): void {
  if (!(e instanceof FormatError)) throw e;
}

describe('format: fuzzing with authenticated but mangled inputs', function () {
  this.timeout(120_000);
  let s: Awaited<ReturnType<typeof seedLayer>>;
  let tocJson: Buffer;
  let tarSplitText: Buffer;
  before(async () => {
    s = await seedLayer();
    const layer = await openChunkedLayer(memBlob(s.blob), s.result.annotations);
    tocJson = Buffer.from(layer.tocJson);
    tarSplitText = decompress(s.tarSplitZ);
  });

  it('a mangled TOC (with a valid digest) opens and verifies, or fails with a FormatError', async () => {
    await fc.assert(fc.asyncProperty(editsArb, async (edits) => {
      const json = applyEdits(tocJson, edits);
      const a = assemble(s.data, json.toString('latin1'), { z: s.tarSplitZ, size: s.tarSplitSize });
      try {
        const l = await openChunkedLayer(memBlob(a.blob), a.annotations);
        const v = await verifyChunkedLayer(memBlob(a.blob), l);
        // Whatever survived every check rebuilds the original tar (unless the edit dropped the tar-split).
        if (l.toc.tarSplitDigest !== undefined) assert.equal(v.diffID, s.result.diffID);
        else assert.equal(v.diffID, undefined);
      } catch (e) { onlyFormatErrors(e); }
    }), { numRuns: 300 * SCALE });
  });

  it('a mangled tar-split (with the TOC naming its digest) verifies to its own tar, or fails with a FormatError', async () => {
    const toc = JSON.parse(tocJson.toString()) as Record<string, unknown>;
    await fc.assert(fc.asyncProperty(editsArb, async (edits) => {
      const text = applyEdits(tarSplitText, edits);
      const z = compressFrame(text, 1);
      const a = assemble(s.data, JSON.stringify({ ...toc, tarSplitDigest: sha256Digest(z) }), { z, size: text.length });
      try {
        const l = await openChunkedLayer(memBlob(a.blob), a.annotations);
        const v = await verifyChunkedLayer(memBlob(a.blob), l);
        assert.equal(v.diffSize, l.diffSize);
      } catch (e) { onlyFormatErrors(e); }
    }), { numRuns: 300 * SCALE });
  });

  it('a mangled tar converts to a layer that verifies to the same DiffID, or fails with a FormatError', async () => {
    const tar = new TarBuilder('gnu')
      .dir('d/').file('d/' + 'long'.repeat(30), pseudoRandom(3000, 1), { xattrs: { 'user.x': 'v' }, mtime: { sec: 5, nsec: 7 } })
      .file('d/zeros', Buffer.concat([pseudoRandom(100, 2), Buffer.alloc(2000)])).symlink('d/s', 't'.repeat(120))
      .hardlink('d/h', 'd/zeros').charDevice('d/c', 1, 3)
      .build();
    await fc.assert(fc.asyncProperty(editsArb, async (edits) => {
      const bad = applyEdits(tar, edits);
      try {
        const { blob, result } = await convert(bad, 1000);
        assert.equal(result.diffID, sha256Digest(bad));
        const l = await openChunkedLayer(memBlob(blob), result.annotations);
        assert.equal((await verifyChunkedLayer(memBlob(blob), l)).diffID, result.diffID);
      } catch (e) { onlyFormatErrors(e); }
    }), { numRuns: 400 * SCALE });
  });
});
