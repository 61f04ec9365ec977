import { TocfsError } from '../util/index.js';

/**
 * Every problem found in a layer's bytes or metadata. `code` says which rule broke; the message names the
 * entry (path), the offsets and the expected vs actual values, so a person can tell a corrupt blob from a bug.
 */
export class FormatError extends TocfsError {}

export type FormatErrorCode =
  | 'TAR_INVALID' // the tar stream is not a tar c/storage would accept
  | 'TAR_UNSUPPORTED' // valid tar, but a feature zstd:chunked cannot carry (global headers, sparse files)
  | 'ANNOTATION_INVALID' // descriptor annotations missing or malformed
  | 'FOOTER_INVALID'
  | 'TOC_TOO_LARGE'
  | 'TOC_INVALID' // TOC JSON violates c/storage's rules
  | 'TARSPLIT_INVALID'
  | 'TARSPLIT_MISMATCH' // TOC and tar-split describe different files
  | 'DIGEST_MISMATCH' // bytes do not hash to what the TOC / manifest says
  | 'ZSTD_INVALID' // a frame does not decompress, or decompresses to the wrong size
  | 'CRC_MISMATCH';

export function formatError(code: FormatErrorCode, message: string, cause?: unknown): FormatError {
  return new FormatError(code, message, cause === undefined ? undefined : { cause });
}
