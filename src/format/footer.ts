import { formatError } from './errors.js';
import { SKIPPABLE_MAGIC } from './zstd.js';
import type { BlobSection } from './annotations.js';

/** "GNUlInUx": magic of the 64-byte footer (c/storage ≥ 1.50). Older footers used "GnUlInUx". */
const MAGIC_CURRENT = Buffer.from('GNUlInUx', 'latin1');
const MAGIC_LEGACY = Buffer.from('GnUlInUx', 'latin1');
export const FOOTER_SIZE = 64;
/** The footer with its skippable-frame header: the last 72 bytes of a current blob. */
export const FOOTER_FRAME_SIZE = 72;

/** What a footer tells. It carries no digest: without the annotation, a TOC found through it is unauthenticated. */
export interface Footer {
  kind: 'current' | 'legacy-40' | 'legacy-56';
  toc: BlobSection;
  tarSplit?: BlobSection;
}

export function encodeFooter(toc: BlobSection, tarSplit: BlobSection): Buffer {
  const b = Buffer.alloc(FOOTER_FRAME_SIZE);
  b.writeUInt32LE(SKIPPABLE_MAGIC, 0);
  b.writeUInt32LE(FOOTER_SIZE, 4);
  const f = [toc.offset, toc.compressed, toc.uncompressed, 1, tarSplit.offset, tarSplit.compressed, tarSplit.uncompressed];
  f.forEach((v, i) => b.writeBigUInt64LE(BigInt(v), 8 + i * 8));
  MAGIC_CURRENT.copy(b, 8 + 56);
  return b;
}

function u64(b: Buffer, at: number): number {
  const v = b.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw formatError('FOOTER_INVALID', `footer field at ${at} is beyond 2^53`);
  return Number(v);
}

/**
 * Parse the end of a blob (pass at least its last 72 bytes). Accepts the current 64-byte footer and the legacy
 * 40- and 56-byte ones (magic "GnUlInUx" at payload [32:40]).
 */
export function decodeFooter(tail: Buffer): Footer {
  if (tail.length < 48) throw formatError('FOOTER_INVALID', `blob too short for a zstd:chunked footer (${tail.length} bytes)`);
  const frame = (payload: number) => {
    const at = tail.length - payload - 8;
    if (at < 0) return undefined;
    const ok = tail.readUInt32LE(at) === SKIPPABLE_MAGIC && tail.readUInt32LE(at + 4) === payload;
    return ok ? tail.subarray(at + 8) : undefined;
  };
  const cur = frame(FOOTER_SIZE);
  if (cur && cur.subarray(56, 64).equals(MAGIC_CURRENT)) {
    if (u64(cur, 24) !== 1) throw formatError('FOOTER_INVALID', `footer manifest type ${u64(cur, 24)} is not 1`);
    const tarSplit = { offset: u64(cur, 32), compressed: u64(cur, 40), uncompressed: u64(cur, 48) };
    return {
      kind: 'current',
      toc: { offset: u64(cur, 0), compressed: u64(cur, 8), uncompressed: u64(cur, 16) },
      ...(tarSplit.offset > 0 ? { tarSplit } : {}),
    };
  }
  for (const [size, kind] of [[56, 'legacy-56'], [40, 'legacy-40']] as const) {
    const f = frame(size);
    if (f && f.subarray(32, 40).equals(MAGIC_LEGACY)) {
      return { kind, toc: { offset: u64(f, 0), compressed: u64(f, 8), uncompressed: u64(f, 16) } };
    }
  }
  throw formatError('FOOTER_INVALID', 'no zstd:chunked footer at the end of the blob (neither "GNUlInUx" nor "GnUlInUx")');
}
