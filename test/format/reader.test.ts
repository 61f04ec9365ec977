import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { decompress } from 'zstd-napi';
import {
  decodeFooter, decodeTarSplit, decodeToc, encodeTarSplitLine, openChunkedLayer, verifyChunkedLayer,
  encodeToc, type FormatError,
} from '../../src/format/index.js';
import { openFileRange, sha256Digest } from '../../src/util/index.js';
import { loadFixtures } from './fixtures.js';

describe('format: reading the reference fixtures', () => {
  for (const fx of loadFixtures()) {
    describe(fx.name, () => {
      it('opens, authenticates and validates TOC and tar-split, and rebuilds the DiffID', async () => {
        const blob = await openFileRange(fx.blobPath);
        try {
          assert.equal(blob.size, fx.facts.blobSize);
          const layer = await openChunkedLayer(blob, fx.descriptor.annotations);
          assert.equal(layer.toc.tocDigest, fx.facts.tocDigest);
          assert.equal(layer.tocJson, fx.tocJson);
          assert.equal(layer.diffSize, fx.facts.tarSize);
          const v = await verifyChunkedLayer(blob, layer);
          assert.equal(v.diffID, fx.facts.diffID);
          assert.equal(v.diffSize, fx.facts.tarSize);
        } finally {
          await blob.close();
        }
      });

      it('has a footer that agrees with the annotations', () => {
        const bytes = readFileSync(fx.blobPath);
        const f = decodeFooter(bytes.subarray(bytes.length - 72));
        assert.equal(f.kind, 'current');
        const [o, c, u] = fx.descriptor.annotations['io.github.containers.zstd-chunked.manifest-position']!.split(':').map(Number);
        assert.deepEqual(f.toc, { offset: o, compressed: c, uncompressed: u });
        assert.equal(sha256Digest(bytes), fx.facts.blobDigest);
      });

      it('decompresses with a plain zstd decoder to the DiffID tar', () => {
        const tar = decompress(readFileSync(fx.blobPath));
        assert.equal(tar.length, fx.facts.tarSize);
        assert.equal(sha256Digest(tar), fx.facts.diffID);
      });

      it('re-encodes TOC and tar-split byte for byte', () => {
        assert.equal(encodeToc(decodeToc(fx.tocJson)), fx.tocJson);
        const lines = decodeTarSplit(fx.tarSplitText).map((e, i) => encodeTarSplitLine(e, i)).join('');
        assert.equal(lines, fx.tarSplitText);
      });
    });
  }

  it('rejects a blob whose TOC bytes do not match the annotation', async () => {
    const fx = loadFixtures()[0]!;
    const bytes = Buffer.from(readFileSync(fx.blobPath));
    const [o] = fx.descriptor.annotations['io.github.containers.zstd-chunked.manifest-position']!.split(':').map(Number);
    bytes[o! + 10] ^= 1;
    const blob = { size: bytes.length, read: async (s: number, e: number) => bytes.subarray(s, e) };
    await assert.rejects(openChunkedLayer(blob, fx.descriptor.annotations), (e: FormatError) => e.code === 'DIGEST_MISMATCH' && /TOC digest mismatch/.test(e.message));
  });
});
