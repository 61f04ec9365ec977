import { createHash } from 'node:crypto';
import { TocfsError, type Digest } from '../util/index.js';

/**
 * The binary form of a layer tree: every array of the tree in one SharedArrayBuffer. A tree built in a worker
 * thread reaches the FUSE thread without a copy (the buffer is shared, not cloned), the DiffID proof's worker
 * reads the same memory, and the same bytes are kept on disk per TOC digest so a restarted daemon loads a tree in
 * milliseconds instead of fetching and parsing its TOC again.
 *
 * Layout: a 64-byte header (magic, version, section counts, SHA-256 of everything after the header), then the
 * sections below, each 8-byte aligned, in this order. Both sides compute the offsets from the counts alone.
 */
export const INDEX_MAGIC = 'TOCFSIX2';
export const INDEX_VERSION = 2;
const HEADER = 64;

export class TreeIndexError extends TocfsError {}

/** Counts that fix the layout. */
export interface IndexCounts {
  nodes: number;
  entries: number;
  chunks: number;
  nameBytes: number;
  symlinks: number;
  symlinkBytes: number;
  xattrNodes: number;
  xattrBytes: number;
  fileDigests: number;
  uids: number;
  gids: number;
  metaBytes: number;
}

const COUNT_KEYS: readonly (keyof IndexCounts)[] = [
  'nodes', 'entries', 'chunks', 'nameBytes', 'symlinks', 'symlinkBytes', 'xattrNodes', 'xattrBytes', 'fileDigests', 'uids', 'gids', 'metaBytes',
];

type Kind = 'u8' | 'u32' | 'i32' | 'f64';
const WIDTH: Record<Kind, number> = { u8: 1, u32: 4, i32: 4, f64: 8 };

/** Section name, element kind, element count. */
function sections(c: IndexCounts): [keyof TreeArrays, Kind, number][] {
  return [
    ['mode', 'u32', c.nodes], ['uid', 'u32', c.nodes], ['gid', 'u32', c.nodes], ['size', 'f64', c.nodes],
    ['nlink', 'u32', c.nodes], ['rdev', 'u32', c.nodes], ['mtimeSec', 'f64', c.nodes], ['mtimeNsec', 'u32', c.nodes],
    ['dirFirst', 'u32', c.nodes], ['dirCount', 'u32', c.nodes], ['nodeEntry', 'i32', c.nodes],
    ['fileChunkFirst', 'u32', c.nodes], ['fileChunkCount', 'u32', c.nodes],
    ['entryNode', 'u32', c.entries], ['entryDir', 'u32', c.entries], ['entryNameEnd', 'u32', c.entries], ['names', 'u8', c.nameBytes],
    ['chunkFileOffset', 'f64', c.chunks], ['chunkSize', 'f64', c.chunks], ['chunkStart', 'f64', c.chunks], ['chunkEnd', 'f64', c.chunks],
    ['chunkDigest', 'u8', c.chunks * 32], ['chunkZeros', 'u8', c.chunks],
    ['symlinkNode', 'u32', c.symlinks], ['symlinkEnd', 'u32', c.symlinks], ['symlinkBytes', 'u8', c.symlinkBytes],
    ['xattrNode', 'u32', c.xattrNodes], ['xattrEnd', 'u32', c.xattrNodes], ['xattrBytes', 'u8', c.xattrBytes],
    ['fileDigestNode', 'u32', c.fileDigests], ['fileDigest', 'u8', c.fileDigests * 32],
    ['uids', 'u32', c.uids], ['gids', 'u32', c.gids], ['meta', 'u8', c.metaBytes],
  ];
}

/** Facts about the layer kept with its tree (small). */
export interface TreeMeta {
  tocDigest: Digest;
  /** Exact size of the layer's tar (from the tar-split). */
  diffSize: number;
  /** Entries of the TOC (files, dirs, links…; chunk entries not counted). */
  tocEntries: number;
  /** The tar-split's digest (the TOC names it): the proof reads the tar-split kept beside the index. */
  tarSplitDigest?: Digest;
}

/** The arrays of a tree (views into one buffer). */
export interface TreeArrays {
  mode: Uint32Array;
  uid: Uint32Array;
  gid: Uint32Array;
  size: Float64Array;
  nlink: Uint32Array;
  /** major << 20 | minor */
  rdev: Uint32Array;
  mtimeSec: Float64Array;
  mtimeNsec: Uint32Array;
  /** Directories: their entries are [dirFirst, dirFirst + dirCount), sorted by name bytes. */
  dirFirst: Uint32Array;
  dirCount: Uint32Array;
  /** The entry of a node's first name (-1 for the root). */
  nodeEntry: Int32Array;
  fileChunkFirst: Uint32Array;
  fileChunkCount: Uint32Array;
  entryNode: Uint32Array;
  entryDir: Uint32Array;
  /** End of each entry's name in `names` (its start is the previous entry's end). */
  entryNameEnd: Uint32Array;
  names: Uint8Array;
  chunkFileOffset: Float64Array;
  chunkSize: Float64Array;
  chunkStart: Float64Array;
  chunkEnd: Float64Array;
  chunkDigest: Uint8Array;
  chunkZeros: Uint8Array;
  /** Sorted node numbers with a symlink target / xattrs / a whole-file digest, and where their data ends. */
  symlinkNode: Uint32Array;
  symlinkEnd: Uint32Array;
  symlinkBytes: Uint8Array;
  xattrNode: Uint32Array;
  xattrEnd: Uint32Array;
  xattrBytes: Uint8Array;
  fileDigestNode: Uint32Array;
  fileDigest: Uint8Array;
  /** Sorted distinct owners (the info file's uidset/gidset). */
  uids: Uint32Array;
  gids: Uint32Array;
  meta: Uint8Array;
}

export interface TreeIndex {
  buffer: SharedArrayBuffer;
  counts: IndexCounts;
  arrays: TreeArrays;
  meta: TreeMeta;
}

const align8 = (n: number): number => (n + 7) & ~7;

function layout(c: IndexCounts): { total: number; offsets: number[] } {
  let at = HEADER;
  const offsets: number[] = [];
  for (const [, kind, count] of sections(c)) {
    offsets.push(at);
    at = align8(at + count * WIDTH[kind]);
  }
  return { total: at, offsets };
}

function views(buffer: SharedArrayBuffer, c: IndexCounts): TreeArrays {
  const { offsets } = layout(c);
  const out: Record<string, unknown> = {};
  sections(c).forEach(([name, kind, count], i) => {
    const at = offsets[i]!;
    out[name] = kind === 'u8' ? new Uint8Array(buffer, at, count)
      : kind === 'u32' ? new Uint32Array(buffer, at, count)
        : kind === 'i32' ? new Int32Array(buffer, at, count)
          : new Float64Array(buffer, at, count);
  });
  return out as unknown as TreeArrays;
}

/** A zeroed index with room for `counts`; the builder fills the arrays, then calls sealTreeIndex. */
export function allocateTreeIndex(counts: IndexCounts, meta: Uint8Array): TreeIndex {
  const { total } = layout(counts);
  const buffer = new SharedArrayBuffer(total);
  const arrays = views(buffer, counts);
  arrays.meta.set(meta);
  return { buffer, counts, arrays, meta: parseMeta(arrays.meta) };
}

/** Write the header (magic, version, counts): the buffer is then a complete index. */
export function sealTreeIndex(index: TreeIndex): void {
  const head = Buffer.from(index.buffer, 0, HEADER);
  head.fill(0);
  head.write(INDEX_MAGIC, 0, 'latin1');
  head.writeUInt32LE(INDEX_VERSION, 8);
  COUNT_KEYS.forEach((k, i) => head.writeUInt32LE(index.counts[k], 12 + i * 4));
}

/** The index file: the index, then the SHA-256 of everything after its header (32 bytes). */
export function indexFileBytes(index: TreeIndex): Uint8Array[] {
  const sum = createHash('sha256').update(new Uint8Array(index.buffer, HEADER)).digest();
  // A copy: file writes want memory that no other thread can change under them.
  return [Buffer.from(new Uint8Array(index.buffer)), sum];
}

/**
 * An index from its file bytes (or from a buffer another thread built): magic, version, size and SHA-256 are
 * checked, so a torn or corrupted file is refused (the caller rebuilds from the TOC), never used.
 */
export function openTreeIndex(file: Uint8Array, what: string): TreeIndex {
  if (file.length < HEADER + 32) throw new TreeIndexError('INDEX_INVALID', `${what}: ${file.length} bytes is too short for a tree index`);
  const counts = readHeader(Buffer.from(file.buffer, file.byteOffset, HEADER), what);
  const { total } = layout(counts);
  if (file.length !== total + 32) throw new TreeIndexError('INDEX_INVALID', `${what}: ${file.length} bytes, the header describes ${total + 32}`);
  const sum = createHash('sha256').update(file.subarray(HEADER, total)).digest();
  if (!sum.equals(file.subarray(total, total + 32))) throw new TreeIndexError('INDEX_INVALID', `${what}: checksum mismatch (torn or corrupted file)`);
  const buffer = new SharedArrayBuffer(total);
  new Uint8Array(buffer).set(file.subarray(0, total));
  const arrays = views(buffer, counts);
  return { buffer, counts, arrays, meta: parseMeta(arrays.meta) };
}

/** An index around a buffer this process built (shared from a worker thread): no copy, no checksum. */
export function adoptTreeIndex(buffer: SharedArrayBuffer): TreeIndex {
  const counts = readHeader(Buffer.from(buffer, 0, HEADER), 'a shared tree buffer');
  const arrays = views(buffer, counts);
  return { buffer, counts, arrays, meta: parseMeta(arrays.meta) };
}

/** The section counts of a header (what sealTreeIndex wrote), after checking its magic and version. */
function readHeader(head: Buffer, what: string): IndexCounts {
  if (head.toString('latin1', 0, 8) !== INDEX_MAGIC || head.readUInt32LE(8) !== INDEX_VERSION) {
    throw new TreeIndexError('INDEX_INVALID', `${what}: not a tree index of this tocfs version`);
  }
  const counts = {} as IndexCounts;
  COUNT_KEYS.forEach((k, i) => { counts[k] = head.readUInt32LE(12 + i * 4); });
  return counts;
}

function parseMeta(bytes: Uint8Array): TreeMeta {
  return JSON.parse(Buffer.from(bytes).toString('utf8')) as TreeMeta;
}

export function encodeMeta(meta: TreeMeta): Uint8Array {
  return Buffer.from(JSON.stringify(meta));
}
