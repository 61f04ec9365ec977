import type { Digest } from '../util/index.js';

/** Which podman generation asked: ≤ 5.0 looks layers up by blob digest, ≥ 5.1 by TOC digest. */
export type KeyGeneration = 'blob' | 'toc';

export interface InfoFacts {
  blobDigest: Digest;
  blobSize: number;
  diffID: Digest;
  diffSize: number;
  tocDigest: Digest;
  uids: number[];
  gids: number[];
}

/** c/storage's CompressionType for zstd. */
const COMPRESSION_ZSTD = 4;

/**
 * The `info` file (als-protocol.md §3). Blob-digest lookups (podman ≤ 5.0) need `diff-digest` (4.3.1 panics
 * without it) and an exact `diff-size` (`podman save` breaks otherwise). TOC lookups (podman ≥ 5.1) need
 * `toc-digest` equal to the key and the `expected-layer-diffid` flag; `diff-digest` is left out there, as
 * stargz-store does, so c/storage does not index an unproven DiffID for reuse.
 */
export function layerInfo(gen: KeyGeneration, f: InfoFacts): Buffer {
  const common = {
    'compressed-diff-digest': f.blobDigest,
    'compressed-size': f.blobSize,
  };
  const doc = gen === 'blob'
    ? { ...common, 'diff-digest': f.diffID, 'diff-size': f.diffSize, compression: COMPRESSION_ZSTD, 'toc-digest': f.tocDigest, uidset: f.uids, gidset: f.gids }
    : { ...common, 'diff-size': f.diffSize, compression: COMPRESSION_ZSTD, 'toc-digest': f.tocDigest, flags: { 'expected-layer-diffid': f.diffID }, uidset: f.uids, gidset: f.gids };
  return Buffer.from(JSON.stringify(doc));
}
