/** Small helpers shared by the format tests: in-memory blobs, conversion, hand-assembled blobs. */
import assert from 'node:assert/strict';
import {
  ANNOTATION_TARSPLIT_POSITION, ANNOTATION_TOC_POSITION, compressFrame, encodeFooter, encodeToc,
  formatChunkedAnnotations, FormatError, skippableHeader, writeZstdChunked, checkTarSplitFacts, layerFromSections,
  openChunkedLayer, readLayerSections, tarSplitFacts, tocFromBytes, type BlobReader, type ChunkedLayer, type TocDocument,
  type WriterResult,
} from '../../src/format/index.js';
import { sha256Digest } from '../../src/util/index.js';
import { TarBuilder } from './tar-builder.js';

/** A BlobReader over bytes in memory that refuses reads outside the blob, like a registry would. */
export function memBlob(b: Buffer): BlobReader {
  return {
    size: b.length,
    read: async (s: number, e: number) => {
      if (s < 0 || e > b.length || e < s) throw new RangeError(`read [${s}, ${e}) outside a ${b.length}-byte blob`);
      return b.subarray(s, e);
    },
  };
}

/** Convert an in-memory tar fed in pieces of `pieceSize` bytes (or at the given cut points). */
export async function convert(tar: Buffer, pieces: number | number[] = 65536, level = 1): Promise<{ blob: Buffer; result: WriterResult }> {
  const parts: Buffer[] = [];
  if (typeof pieces === 'number') {
    for (let i = 0; i < tar.length; i += pieces) parts.push(tar.subarray(i, i + pieces));
  } else {
    let at = 0;
    for (const cut of [...pieces].sort((a, b) => a - b)) {
      if (cut <= at || cut >= tar.length) continue;
      parts.push(tar.subarray(at, cut));
      at = cut;
    }
    parts.push(tar.subarray(at));
  }
  const out: Buffer[] = [];
  const result = await writeZstdChunked(parts, (b) => { out.push(b); }, { level });
  return { blob: Buffer.concat(out), result };
}

/** A section of a converted blob, from its annotations: [offset, compressed, uncompressed]. */
export function position(annotations: Record<string, string>, key: string): [number, number, number] {
  const [o, c, u] = annotations[key]!.split(':').map(Number);
  return [o!, c!, u!];
}

/** The parts of a converted blob: data frames, compressed TOC, compressed tar-split. */
export function splitBlob(blob: Buffer, annotations: Record<string, string>) {
  const [tocOff, tocLen, tocSize] = position(annotations, ANNOTATION_TOC_POSITION);
  const [tsOff, tsLen, tsSize] = position(annotations, ANNOTATION_TARSPLIT_POSITION);
  return {
    data: blob.subarray(0, tocOff - 8),
    tocZ: blob.subarray(tocOff, tocOff + tocLen), tocSize,
    tarSplitZ: blob.subarray(tsOff, tsOff + tsLen), tarSplitSize: tsSize,
  };
}

export interface Assembled {
  blob: Buffer;
  annotations: Record<string, string>;
}

/**
 * A blob with a hand-made TOC: `data` (the data frames of a real conversion), then the TOC (a document or raw
 * JSON text) compressed and framed, then optionally a tar-split, then a footer; with matching annotations, so the
 * TOC digest is valid and only the TOC's *content* is on trial.
 */
export function assemble(data: Buffer, toc: TocDocument | string, tarSplit?: { z: Buffer; size: number }): Assembled {
  const json = Buffer.from(typeof toc === 'string' ? toc : encodeToc(toc));
  const tocZ = compressFrame(json, 1);
  const tocSec = { offset: data.length + 8, compressed: tocZ.length, uncompressed: json.length };
  const parts = [data, skippableHeader(tocZ.length), tocZ];
  const tsSec = tarSplit
    ? { offset: tocSec.offset + tocZ.length + 8, compressed: tarSplit.z.length, uncompressed: tarSplit.size }
    : { offset: 0, compressed: 0, uncompressed: 0 };
  if (tarSplit) parts.push(skippableHeader(tarSplit.z.length), tarSplit.z);
  parts.push(encodeFooter(tocSec, tsSec));
  return {
    blob: Buffer.concat(parts),
    annotations: formatChunkedAnnotations({
      tocDigest: sha256Digest(tocZ), toc: tocSec, ...(tarSplit ? { tarSplit: tsSec } : {}),
    }),
  };
}

/** assert.rejects / assert.throws predicate: a FormatError with this code whose message matches. */
export function formatErr(code: string, message?: RegExp | string): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof FormatError, `expected a FormatError, got ${String(e)}`);
    assert.equal(e.code, code, `code of: ${e.message}`);
    if (message !== undefined) {
      const re = typeof message === 'string' ? new RegExp(escapeRe(message)) : message;
      assert.match(e.message, re);
    }
    return true;
  };
}

export function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Deterministic pseudo-random bytes (xorshift32): large test contents without fast-check generating them. */
export function pseudoRandom(size: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  let x = (seed | 0) || 0x9e3779b9;
  for (let i = 0; i < size; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

/** Concatenate everything an async iterable of buffers yields. */
export async function collect(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of it) parts.push(Buffer.from(p));
  return Buffer.concat(parts);
}

/**
 * A small layer with one of everything, converted once: a multi-chunk file with a zero run (data and "zeros"
 * chunks), single-chunk files, an empty file, a directory, a symlink, a hardlink, a device, xattrs.
 */
export async function seedLayer() {
  const big = Buffer.concat([pseudoRandom(200_000, 11), Buffer.alloc(5000), pseudoRandom(150_000, 12)]);
  const small = pseudoRandom(5000, 13);
  const tar = new TarBuilder()
    .dir('d/')
    .file('d/big', big, { mode: 0o755 })
    .file('d/small', small, { uid: 1000, gid: 1000, mtime: { sec: 1700000000, nsec: 123456789 } })
    .file('d/empty', '')
    .file('d/attrs', 'with xattrs', { xattrs: { 'user.a': 'x', 'security.capability': Buffer.from([1, 0, 0, 2]) } })
    .symlink('d/sym', '../etc/target')
    .hardlink('d/hard', 'd/small')
    .charDevice('d/null', 1, 3)
    .build();
  const { blob, result } = await convert(tar);
  return { tar, blob, result, big, small, ...splitBlob(blob, result.annotations) };
}

/**
 * openChunkedLayer, and the daemon's split of the same work (tocFromBytes + tarSplitFacts + checkTarSplitFacts,
 * which run on two workers there): both must accept the same layers, with the same tar size, and refuse the same
 * ones with the same error. Resolves or rejects as openChunkedLayer does.
 */
export async function openBothWays(blob: BlobReader, annotations: Record<string, string>): Promise<ChunkedLayer> {
  const whole = await openChunkedLayer(blob, annotations).then((l) => ({ l }), (err: unknown) => ({ err }));
  const split = await (async () => {
    const sections = await readLayerSections(blob, annotations);
    // Without a tar-split section the daemon does not split the work either.
    if (!sections.tarSplitZ) return (await layerFromSections(sections)).diffSize;
    const facts = await tarSplitFacts(sections.tarSplitZ, sections.annotations);
    const { toc } = tocFromBytes(sections.tocZ, sections.annotations);
    return toc.tarSplitDigest !== undefined ? checkTarSplitFacts(toc, sections.annotations, facts) : undefined;
  })().then((diffSize) => ({ diffSize }), (err: unknown) => ({ err }));
  if ('err' in whole) {
    assert.ok('err' in split, `the split path accepted a layer openChunkedLayer refused: ${(whole.err as Error).message}`);
    assert.equal((split.err as FormatError).code, (whole.err as FormatError).code);
    assert.equal((split.err as Error).message, (whole.err as Error).message);
    throw whole.err;
  }
  if ('err' in split) assert.fail(`the split path refused a layer openChunkedLayer accepted: ${(split.err as Error).message}`);
  assert.equal(split.diffSize, whole.l.diffSize);
  return whole.l;
}
