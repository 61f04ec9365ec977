import { isDigest, type Digest } from '../util/index.js';
import { formatError } from './errors.js';

export const ANNOTATION_TOC_DIGEST = 'io.github.containers.zstd-chunked.manifest-checksum';
export const ANNOTATION_TOC_POSITION = 'io.github.containers.zstd-chunked.manifest-position';
export const ANNOTATION_TARSPLIT_POSITION = 'io.github.containers.zstd-chunked.tarsplit-position';
/** Written by c/storage 1.47–1.53, never read since 1.54; we read it only to report it. */
export const ANNOTATION_TARSPLIT_DIGEST_LEGACY = 'io.github.containers.zstd-chunked.tarsplit-checksum';
/** c/storage ≤ 1.43 keys: such layers are plain zstd to current podman, and to us. */
export const ANNOTATION_LEGACY_TOC_DIGEST = 'io.containers.zstd-chunked.manifest-checksum';
export const ANNOTATION_LEGACY_TOC_POSITION = 'io.containers.zstd-chunked.manifest-position';
export const ANNOTATION_ESTARGZ_TOC_DIGEST = 'containerd.io/snapshot/stargz/toc.digest';

export const MEDIA_TYPE_LAYER_ZSTD = 'application/vnd.oci.image.layer.v1.tar+zstd';
export const MEDIA_TYPE_SENTINEL = 'application/vnd.containers.zstd-chunked-sentinel';
/** c/storage ≥ 1.58 limit on the compressed and the uncompressed TOC. */
export const MAX_TOC_SIZE = 150 * (1 << 20);

/** A [offset, offset+compressed) range of the blob holding a zstd frame that expands to `uncompressed` bytes. */
export interface BlobSection {
  offset: number;
  compressed: number;
  uncompressed: number;
}

/** What the descriptor annotations say about a zstd:chunked layer. */
export interface ChunkedAnnotations {
  tocDigest: Digest;
  toc: BlobSection;
  /** Absent on layers written before c/storage 1.47. */
  tarSplit?: BlobSection;
}

export type LayerKind = 'zstd:chunked' | 'zstd:chunked-legacy' | 'estargz' | 'plain';

/** Classify a layer by its annotations, as c/storage's toc.GetTOCDigest does. */
export function layerKind(annotations: Readonly<Record<string, string>> | undefined): LayerKind {
  const a = annotations ?? {};
  if (a[ANNOTATION_TOC_DIGEST] !== undefined) return 'zstd:chunked';
  if (a[ANNOTATION_ESTARGZ_TOC_DIGEST] !== undefined) return 'estargz';
  if (a[ANNOTATION_LEGACY_TOC_DIGEST] !== undefined) return 'zstd:chunked-legacy';
  return 'plain';
}

function decimalFields(value: string, count: number, key: string): number[] {
  const parts = value.split(':');
  if (parts.length !== count || parts.some((p) => !/^\d+$/.test(p))) {
    throw formatError('ANNOTATION_INVALID', `annotation ${key} = ${JSON.stringify(value)} is not ${count} decimal fields separated by ":"`);
  }
  const nums = parts.map(Number);
  if (nums.some((n) => !Number.isSafeInteger(n))) throw formatError('ANNOTATION_INVALID', `annotation ${key} has a number beyond 2^53`);
  return nums;
}

/**
 * Read the zstd:chunked annotations with c/storage's rules: the TOC digest and position are required together
 * (type must be 1), an eStargz digest beside them is an error, the tar-split position is optional.
 */
export function parseChunkedAnnotations(annotations: Readonly<Record<string, string>> | undefined): ChunkedAnnotations {
  const a = annotations ?? {};
  const digest = a[ANNOTATION_TOC_DIGEST];
  if (digest === undefined) throw formatError('ANNOTATION_INVALID', `layer has no ${ANNOTATION_TOC_DIGEST} annotation: it is not zstd:chunked`);
  if (a[ANNOTATION_ESTARGZ_TOC_DIGEST] !== undefined) {
    throw formatError('ANNOTATION_INVALID', 'layer has both a zstd:chunked and an eStargz TOC annotation; refusing an ambiguous layer');
  }
  if (!isDigest(digest)) throw formatError('ANNOTATION_INVALID', `annotation ${ANNOTATION_TOC_DIGEST} = ${JSON.stringify(digest)} is not a sha256 digest`);
  const pos = a[ANNOTATION_TOC_POSITION];
  if (pos === undefined) throw formatError('ANNOTATION_INVALID', `annotation ${ANNOTATION_TOC_POSITION} is missing`);
  const [offset, compressed, uncompressed, type] = decimalFields(pos, 4, ANNOTATION_TOC_POSITION) as [number, number, number, number];
  if (type !== 1) throw formatError('ANNOTATION_INVALID', `annotation ${ANNOTATION_TOC_POSITION}: manifest type ${type} is not 1`);
  const out: ChunkedAnnotations = { tocDigest: digest, toc: { offset, compressed, uncompressed } };
  const ts = a[ANNOTATION_TARSPLIT_POSITION];
  if (ts !== undefined) {
    const [o, c, u] = decimalFields(ts, 3, ANNOTATION_TARSPLIT_POSITION) as [number, number, number];
    if (o > 0) out.tarSplit = { offset: o, compressed: c, uncompressed: u };
  }
  return out;
}

export function formatChunkedAnnotations(a: ChunkedAnnotations): Record<string, string> {
  const out: Record<string, string> = {
    [ANNOTATION_TOC_DIGEST]: a.tocDigest,
    [ANNOTATION_TOC_POSITION]: `${a.toc.offset}:${a.toc.compressed}:${a.toc.uncompressed}:1`,
  };
  if (a.tarSplit) out[ANNOTATION_TARSPLIT_POSITION] = `${a.tarSplit.offset}:${a.tarSplit.compressed}:${a.tarSplit.uncompressed}`;
  return out;
}

/** Check the annotated sections against the blob size and the TOC size limit before fetching anything. */
export function checkSections(a: ChunkedAnnotations, blobSize: number): void {
  const within = (s: BlobSection, what: string) => {
    if (s.offset + s.compressed > blobSize) {
      throw formatError('ANNOTATION_INVALID', `${what} [${s.offset}, ${s.offset + s.compressed}) lies beyond the blob's ${blobSize} bytes`);
    }
  };
  if (a.toc.compressed > MAX_TOC_SIZE || a.toc.uncompressed > MAX_TOC_SIZE) {
    throw formatError('TOC_TOO_LARGE', `TOC of ${a.toc.compressed} compressed / ${a.toc.uncompressed} uncompressed bytes exceeds the ${MAX_TOC_SIZE}-byte limit`);
  }
  within(a.toc, 'TOC');
  if (a.tarSplit) within(a.tarSplit, 'tar-split');
}
