import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { decompress } from 'zstd-napi';
import {
  decodeToc, decompressFrames, openChunkedLayer, verifyChunkedLayer, writeZstdChunked, type TocEntry,
} from '../../src/format/index.js';
import { sha256Digest } from '../../src/util/index.js';
import { loadFixtures } from './fixtures.js';

/** Convert an in-memory tar; returns the blob and the writer's result. */
export async function convertTar(tar: Buffer, pieceSize = 65536, level = 3) {
  const pieces: Buffer[] = [];
  for (let i = 0; i < tar.length; i += pieceSize) pieces.push(tar.subarray(i, i + pieceSize));
  const out: Buffer[] = [];
  const result = await writeZstdChunked(pieces, (b) => { out.push(b); }, { level });
  return { blob: Buffer.concat(out), result };
}

function memBlob(b: Buffer) {
  return { size: b.length, read: async (s: number, e: number) => b.subarray(s, e) };
}

function withoutOffsets(e: TocEntry): TocEntry {
  const { offset: _o, endOffset: _e, ...rest } = e;
  return rest;
}

describe('format: writer against the reference writer', () => {
  for (const fx of loadFixtures()) {
    describe(fx.name, () => {
      const tar = decompress(readFileSync(fx.blobPath));
      // Piece sizes that cut payloads, zero runs and headers in different places must not change the output.
      for (const pieceSize of [1 << 20, 4093]) {
        it(`produces the same TOC entries and tar-split (input pieces of ${pieceSize} bytes)`, async () => {
          const { blob, result } = await convertTar(tar, pieceSize);
          assert.equal(result.diffID, fx.facts.diffID);
          assert.equal(result.diffSize, fx.facts.tarSize);
          assert.equal(result.blobDigest, sha256Digest(blob));
          const layer = await openChunkedLayer(memBlob(blob), result.annotations);
          const ours = decodeToc(layer.tocJson).entries.map(withoutOffsets);
          const theirs = decodeToc(fx.tocJson).entries.map(withoutOffsets);
          assert.equal(ours.length, theirs.length);
          ours.forEach((e, i) => assert.deepEqual(e, theirs[i], `entry ${i} (${e.name})`));
          const [tsOff, tsLen, tsSize] = result.annotations['io.github.containers.zstd-chunked.tarsplit-position']!.split(':').map(Number);
          const tarSplit = decompressFrames(blob.subarray(tsOff!, tsOff! + tsLen!), tsSize!, 'tar-split', 'exact');
          assert.equal(tarSplit.toString('utf8'), fx.tarSplitText);
        });
      }

      it('writes a blob that inspects clean and decompresses to the same tar', async () => {
        const { blob, result } = await convertTar(tar);
        assert.equal(sha256Digest(decompress(blob)), fx.facts.diffID);
        const v = await verifyChunkedLayer(memBlob(blob), await openChunkedLayer(memBlob(blob), result.annotations));
        assert.equal(v.diffID, fx.facts.diffID);
      });
    });
  }
});
