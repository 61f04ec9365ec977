import { isDigest, sha256Digest, type Digest } from '../util/index.js';
import { formatError } from './errors.js';
import { MAX_TOC_ENTRIES, type TocDocument, type TocEntry } from './metadata.js';
import { cleanAbsPath, hasDotDot } from './paths.js';
import type { TarTime, TocEntryType } from './tar.js';

/** One chunk of a file: bytes [fileOffset, fileOffset+size) of the file live in blob range [start, end). */
export interface LayerChunk {
  fileOffset: number;
  size: number;
  start: number;
  end: number;
  /** sha256 of the chunk's uncompressed bytes (the file digest for single-chunk files). */
  digest: Digest;
  /** A run of zeros: can be synthesised without fetching. */
  zeros: boolean;
}

export type LayerFileType = Exclude<TocEntryType, 'chunk'>;

/** A file of the layer, format-neutral (zstd:chunked and eStargz both produce it). */
export interface LayerFile {
  type: LayerFileType;
  /** The name exactly as the TOC has it. */
  name: string;
  /** Where it lives in the layer: cleaned, absolute ("/" is the root). */
  path: string;
  /** Symlink target verbatim; hardlink target as in the TOC. */
  linkName?: string;
  /** Hardlinks: the cleaned absolute path of the target (a regular file of this layer). */
  linkPath?: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  modtime?: TarTime;
  accesstime?: TarTime;
  changetime?: TarTime;
  devMajor: number;
  devMinor: number;
  xattrs?: Map<string, Buffer>;
  /** sha256 of the whole content (sha256 of nothing for empty files). */
  digest?: Digest;
  chunks: LayerChunk[];
  /** The TOC entry it came from (for the TOC↔tar-split check). */
  entry: TocEntry;
}

export interface LayerToc {
  format: 'zstd:chunked';
  tocDigest: Digest;
  version: number;
  files: LayerFile[];
  tarSplitDigest?: Digest;
  /** Number of TOC entries of type chunk (beyond each file's first). */
  chunkEntries: number;
}

/** Limits that keep a hostile TOC from costing unbounded memory or producing unservable names. */
export const LIMITS = {
  maxEntries: MAX_TOC_ENTRIES,
  maxPathBytes: 4096,
  maxNameBytes: 255,
  maxXattrValue: 65536,
  maxFileSize: Number.MAX_SAFE_INTEGER,
  /**
   * Largest "zeros" chunk (a sparse hole): its digest is checked by hashing that many zeros (~0.5 s per GiB), so
   * a TOC may not make us hash a terabyte. A layer beyond it is not served lazily; podman pulls it normally.
   */
  maxZeroChunk: 4 * 2 ** 30,
};

const EMPTY_DIGEST = sha256Digest(new Uint8Array(0));

/**
 * A zstd block regenerates at most 128 KiB and takes at least 4 bytes (an RLE block), so no blob range can
 * decompress to more than 32768 times its length: a chunk claiming more is a lie we can refuse before fetching.
 */
const MAX_ZSTD_RATIO = 32768;

function invalid(name: string | undefined, msg: string): Error {
  return formatError('TOC_INVALID', `invalid TOC${name !== undefined ? ` entry "${name}"` : ''}: ${msg}`);
}

/**
 * Validate a decoded TOC with c/storage's rules (and stricter ones where c/storage silently repairs: names that
 * climb out of the root are refused rather than clamped) and compute every chunk's blob range.
 * `dataEnd` is where the data frames end (the TOC's skippable frame starts there): no range may pass it.
 */
export function buildLayerToc(doc: TocDocument, tocDigest: Digest, dataEnd: number): LayerToc {
  if (doc.entries.length > LIMITS.maxEntries) throw invalid(undefined, `${doc.entries.length} entries exceed the limit of ${LIMITS.maxEntries}`);
  if (doc.tarSplitDigest !== undefined && !isDigest(doc.tarSplitDigest)) {
    throw invalid(undefined, `tarSplitDigest ${JSON.stringify(doc.tarSplitDigest)} is not a sha256 digest`);
  }
  const files: LayerFile[] = [];
  const byPath = new Map<string, LayerFile>();
  let chunkEntries = 0;
  let current: LayerFile | undefined; // the reg whose chunk entries may follow
  for (const e of doc.entries) {
    if (e.type === 'chunk') {
      if (!current || current.name !== e.name) throw invalid(e.name, 'chunk entry without a preceding regular file of that name');
      addChunk(current, e);
      chunkEntries++;
      continue;
    }
    const f = fileFromEntry(e);
    if (byPath.has(f.path)) throw invalid(e.name, `duplicate path ${f.path}`);
    byPath.set(f.path, f);
    files.push(f);
    current = f.type === 'reg' && f.size > 0 ? f : undefined;
  }
  assignRanges(files, dataEnd);
  for (const f of files) checkFile(f, byPath);
  return {
    format: 'zstd:chunked', tocDigest, version: doc.version, files, chunkEntries,
    ...(doc.tarSplitDigest ? { tarSplitDigest: doc.tarSplitDigest as Digest } : {}),
  };
}

function nonNegative(e: TocEntry, key: 'mode' | 'uid' | 'gid' | 'size' | 'devMajor' | 'devMinor', max: number): number {
  const v = e[key] ?? 0;
  if (v < 0 || v > max) throw invalid(e.name, `${key} ${v} is out of range`);
  return v;
}

function checkName(name: string): string {
  if (name === '' || name.includes('\0')) throw invalid(name, 'empty name or NUL byte in the name');
  if (hasDotDot(name)) throw invalid(name, 'the name climbs out of the layer root with ".."');
  const path = cleanAbsPath(name);
  if (Buffer.byteLength(path) > LIMITS.maxPathBytes) throw invalid(name, `path longer than ${LIMITS.maxPathBytes} bytes`);
  for (const c of path.split('/')) {
    if (Buffer.byteLength(c) > LIMITS.maxNameBytes) throw invalid(name, `a path component is longer than ${LIMITS.maxNameBytes} bytes`);
  }
  return path;
}

function fileFromEntry(e: TocEntry): LayerFile {
  const path = checkName(e.name);
  const f: LayerFile = {
    type: e.type as LayerFileType, name: e.name, path,
    mode: nonNegative(e, 'mode', 0o7777777), uid: nonNegative(e, 'uid', 0xffffffff), gid: nonNegative(e, 'gid', 0xffffffff),
    size: nonNegative(e, 'size', LIMITS.maxFileSize),
    devMajor: nonNegative(e, 'devMajor', 0xffffffff), devMinor: nonNegative(e, 'devMinor', 0xffffffff),
    chunks: [], entry: e,
  };
  if (e.linkName !== undefined) f.linkName = e.linkName;
  if (e.modtime) f.modtime = e.modtime;
  if (e.accesstime) f.accesstime = e.accesstime;
  if (e.changetime) f.changetime = e.changetime;
  if (e.xattrs) f.xattrs = decodeXattrs(e);
  if (f.type === 'symlink' && !f.linkName) throw invalid(e.name, 'symlink without a target');
  if (f.type === 'hardlink') {
    if (!f.linkName) throw invalid(e.name, 'hardlink without a target');
    f.linkPath = checkName(f.linkName);
  }
  if (f.type !== 'reg') return f;
  if (f.size === 0) {
    if (e.digest !== undefined && e.digest !== EMPTY_DIGEST) throw invalid(e.name, `empty file with digest ${e.digest}`);
    f.digest = EMPTY_DIGEST;
    return f;
  }
  if (!isDigest(e.digest)) throw invalid(e.name, `regular file of ${f.size} bytes without a valid digest (${JSON.stringify(e.digest)})`);
  f.digest = e.digest;
  if (!e.offset || e.offset <= 0) throw invalid(e.name, 'regular file with content but no offset');
  addChunk(f, e);
  return f;
}

function decodeXattrs(e: TocEntry): Map<string, Buffer> {
  const m = new Map<string, Buffer>();
  for (const [k, v] of Object.entries(e.xattrs ?? {})) {
    if (k === '' || k.includes('\0')) throw invalid(e.name, `bad xattr name ${JSON.stringify(k)}`);
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(v) || v.length % 4 !== 0) throw invalid(e.name, `xattr ${k} is not base64`);
    const b = Buffer.from(v, 'base64');
    if (b.length > LIMITS.maxXattrValue) throw invalid(e.name, `xattr ${k} is larger than ${LIMITS.maxXattrValue} bytes`);
    m.set(k, b);
  }
  return m;
}

/** Record one chunk (from the reg entry itself or a following chunk entry); ranges are completed later. */
function addChunk(f: LayerFile, e: TocEntry): void {
  const chunked = e.chunkSize !== undefined && e.chunkSize > 0;
  if (e.type === 'chunk' && !chunked) throw invalid(e.name, 'chunk entry without chunkSize');
  if (!e.offset || e.offset <= 0) throw invalid(e.name, 'chunk without a blob offset');
  const prev = f.chunks[f.chunks.length - 1];
  const fileOffset = prev ? prev.fileOffset + prev.size : 0;
  if ((e.chunkOffset ?? 0) !== fileOffset) {
    throw invalid(e.name, `chunk at file offset ${e.chunkOffset ?? 0}, expected ${fileOffset} (chunks must be contiguous and in order)`);
  }
  if (prev && e.offset <= prev.start) throw invalid(e.name, `chunk blob offset ${e.offset} does not follow ${prev.start}`);
  let digest: Digest;
  if (chunked) {
    if (!isDigest(e.chunkDigest)) throw invalid(e.name, `chunk at ${fileOffset} without a valid chunkDigest`);
    digest = e.chunkDigest;
  } else {
    digest = f.digest!;
  }
  if (e.chunkType !== undefined && e.chunkType !== 'zeros') throw invalid(e.name, `unknown chunkType ${JSON.stringify(e.chunkType)}`);
  const size = chunked ? e.chunkSize! : f.size - fileOffset;
  if (e.chunkType === 'zeros' && size > LIMITS.maxZeroChunk) {
    throw invalid(e.name, `zeros chunk of ${size} bytes at file offset ${fileOffset} exceeds the ${LIMITS.maxZeroChunk}-byte limit for holes`);
  }
  f.chunks.push({
    fileOffset, size, start: e.offset, end: 0, digest,
    zeros: e.chunkType === 'zeros',
  });
}

/**
 * Blob ranges as c/storage infers them: a chunk ends where the next begins; a file's last chunk ends at its
 * endOffset, or (when absent) at the next payload's offset or the end of the data frames. Payloads must be in
 * blob order, or the inferred ranges would be wrong.
 */
function assignRanges(files: LayerFile[], dataEnd: number): void {
  const withData = files.filter((f) => f.chunks.length > 0);
  let prevEnd = 0;
  withData.forEach((f, i) => {
    const next = withData[i + 1]?.chunks[0]!.start ?? dataEnd;
    const end = f.entry.endOffset && f.entry.endOffset > 0 ? f.entry.endOffset : next;
    if (f.chunks[0]!.start < prevEnd) throw invalid(f.name, `payload at blob offset ${f.chunks[0]!.start} overlaps the previous file's (ends at ${prevEnd}); entries are not in blob order`);
    if (end > next || end > dataEnd) throw invalid(f.name, `payload end ${end} runs past the next payload or the data frames (${Math.min(next, dataEnd)})`);
    f.chunks.forEach((c, j) => {
      c.end = f.chunks[j + 1]?.start ?? end;
      if (c.end <= c.start) throw invalid(f.name, `empty or negative blob range [${c.start}, ${c.end}) for the chunk at ${c.fileOffset}`);
      if (c.size > (c.end - c.start) * MAX_ZSTD_RATIO) {
        throw invalid(f.name, `the chunk at ${c.fileOffset} claims ${c.size} bytes, more than its ${c.end - c.start}-byte blob range can decompress to`);
      }
    });
    prevEnd = end;
  });
}

function checkFile(f: LayerFile, byPath: ReadonlyMap<string, LayerFile>): void {
  if (f.type === 'reg' && f.size > 0) {
    const last = f.chunks[f.chunks.length - 1]!;
    if (last.fileOffset + last.size !== f.size) {
      throw invalid(f.name, `chunks cover ${last.fileOffset + last.size} bytes of a ${f.size}-byte file`);
    }
  }
  if (f.type === 'hardlink') {
    let target = byPath.get(f.linkPath!);
    for (let hops = 0; target?.type === 'hardlink' && hops < 64; hops++) target = byPath.get(target.linkPath!);
    if (!target) throw invalid(f.name, `hardlink to "${f.linkName}", which is not in the layer`);
    if (target.type === 'dir' || target.type === 'hardlink') throw invalid(f.name, `hardlink to "${f.linkName}", which is a ${target.type}`);
  }
}
