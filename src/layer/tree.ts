import type { LayerToc } from '../format/index.js';
import type { Digest } from '../util/index.js';
import { buildTreeIndex, type TreeFacts } from './tree-build.js';
import type { TreeArrays, TreeIndex, TreeMeta } from './tree-index.js';
import { S_IFDIR, S_IFMT, S_IFREG, type ChunkView, type NodeAttr } from './tree-types.js';

export { S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, LayerTreeError, type NodeAttr, type ChunkView } from './tree-types.js';

/**
 * The directory tree of one layer as overlayfs wants a lower layer (design.md §4), read-only, over the compact
 * binary index of tree-index.ts (built by tree-build.ts, in a worker thread in the daemon). Everything a FUSE
 * request needs is a few array reads or a binary search: nothing here grows with the layer, except `idSets`
 * (precomputed) and `approximateBytes`.
 *
 * Node 0 is the root. Directory entries are sorted by UTF-8 bytes.
 */
export class LayerTree {
  readonly nodeCount: number;
  readonly chunkTotal: number;
  readonly meta: TreeMeta;
  private readonly a: TreeArrays;
  /** Byte views for comparisons and decoding without copies. */
  private readonly names: Buffer;
  private readonly symlinkBytes: Buffer;
  private readonly xattrBytes: Buffer;
  /** Decoded xattrs of nodes asked for recently (`ls -l` asks one node many times). */
  private readonly xattrMemo = new Map<number, ReadonlyMap<string, Buffer>>();

  constructor(readonly index: TreeIndex) {
    this.a = index.arrays;
    this.meta = index.meta;
    this.nodeCount = index.counts.nodes;
    this.chunkTotal = index.counts.chunks;
    const buf = (v: Uint8Array) => Buffer.from(v.buffer, v.byteOffset, v.length);
    this.names = buf(this.a.names);
    this.symlinkBytes = buf(this.a.symlinkBytes);
    this.xattrBytes = buf(this.a.xattrBytes);
  }

  /** Build from a TOC on this thread (tests, CLI tools; the daemon builds in a worker). */
  static fromToc(toc: LayerToc, facts: Partial<TreeFacts> = {}): LayerTree {
    return new LayerTree(buildTreeIndex(toc, { tocDigest: toc.tocDigest, diffSize: 0, ...facts }));
  }

  isDir(node: number): boolean {
    return (this.a.mode[node]! & S_IFMT) === S_IFDIR;
  }

  isRegular(node: number): boolean {
    return (this.a.mode[node]! & S_IFMT) === S_IFREG;
  }

  attr(node: number): NodeAttr {
    const a = this.a;
    const rdev = a.rdev[node]!;
    return {
      mode: a.mode[node]!, uid: a.uid[node]!, gid: a.gid[node]!, size: a.size[node]!,
      nlink: a.nlink[node]!, rdevMajor: rdev >>> 20, rdevMinor: rdev & 0xfffff,
      mtimeSec: a.mtimeSec[node]!, mtimeNsec: a.mtimeNsec[node]!,
    };
  }

  /** Size of a node (regular files: content bytes). */
  sizeOf(node: number): number {
    return this.a.size[node]!;
  }

  modeOf(node: number): number {
    return this.a.mode[node]!;
  }

  private nameStart(e: number): number {
    return e === 0 ? 0 : this.a.entryNameEnd[e - 1]!;
  }

  /** The child of directory `dir` called `name`, or undefined. */
  lookup(dir: number, name: string): number | undefined {
    if (!this.isDir(dir)) return undefined;
    const target = Buffer.from(name);
    let lo = this.a.dirFirst[dir]!;
    let hi = lo + this.a.dirCount[dir]! - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const cmp = this.names.compare(target, 0, target.length, this.nameStart(mid), this.a.entryNameEnd[mid]!);
      if (cmp === 0) return this.a.entryNode[mid];
      if (cmp < 0) lo = mid + 1;
      else hi = mid - 1;
    }
    return undefined;
  }

  /** Number of entries in a directory (without "." and ".."). */
  childCount(dir: number): number {
    return this.isDir(dir) ? this.a.dirCount[dir]! : 0;
  }

  /** The i-th entry of a directory, in name order. */
  child(dir: number, i: number): { name: string; node: number } {
    const e = this.a.dirFirst[dir]! + i;
    return { name: this.names.toString('utf8', this.nameStart(e), this.a.entryNameEnd[e]!), node: this.a.entryNode[e]! };
  }

  /** The node of the i-th entry of a directory, without decoding its name. */
  childNode(dir: number, i: number): number {
    return this.a.entryNode[this.a.dirFirst[dir]! + i]!;
  }

  /** Position of `node`'s first name among its directory's entries, in name order (-1 for the root). */
  indexInParent(node: number): number {
    const e = this.a.nodeEntry[node]!;
    return e < 0 ? -1 : e - this.a.dirFirst[this.a.entryDir[e]!]!;
  }

  /** The directory containing `node`'s first name (the root is its own parent). */
  parentOf(node: number): number {
    const e = this.a.nodeEntry[node]!;
    return e < 0 ? 0 : this.a.entryDir[e]!;
  }

  /** A path for log lines ("/usr/bin/tool"); hardlinked files show their first name. */
  pathOf(node: number): string {
    const parts: string[] = [];
    for (let n = node, guard = 0; n !== 0 && guard < 4096; guard++) {
      const e = this.a.nodeEntry[n]!;
      if (e < 0) break;
      parts.push(this.names.toString('utf8', this.nameStart(e), this.a.entryNameEnd[e]!));
      n = this.a.entryDir[e]!;
    }
    return '/' + parts.reverse().join('/');
  }

  readlink(node: number): string | undefined {
    const k = findSorted(this.a.symlinkNode, node);
    if (k < 0) return undefined;
    return this.symlinkBytes.toString('utf8', k === 0 ? 0 : this.a.symlinkEnd[k - 1]!, this.a.symlinkEnd[k]!);
  }

  xattrsOf(node: number): ReadonlyMap<string, Buffer> | undefined {
    const memo = this.xattrMemo.get(node);
    if (memo) return memo;
    const k = findSorted(this.a.xattrNode, node);
    if (k < 0) return undefined;
    const m = new Map<string, Buffer>();
    const b = this.xattrBytes;
    let at = k === 0 ? 0 : this.a.xattrEnd[k - 1]!;
    const end = this.a.xattrEnd[k]!;
    while (at < end) {
      const nl = b.readUInt16LE(at);
      const name = b.toString('utf8', at + 2, at + 2 + nl);
      at += 2 + nl;
      const vl = b.readUInt32LE(at);
      m.set(name, Buffer.from(b.subarray(at + 4, at + 4 + vl)));
      at += 4 + vl;
    }
    if (this.xattrMemo.size >= 256) this.xattrMemo.delete(this.xattrMemo.keys().next().value!);
    this.xattrMemo.set(node, m);
    return m;
  }

  /** The chunks of a regular file, in file order. */
  chunkCount(node: number): number {
    return this.a.fileChunkCount[node]!;
  }

  chunk(node: number, i: number): ChunkView {
    const a = this.a;
    const c = a.fileChunkFirst[node]! + i;
    return {
      fileOffset: a.chunkFileOffset[c]!, size: a.chunkSize[c]!, start: a.chunkStart[c]!, end: a.chunkEnd[c]!,
      digest: this.chunkDigestAt(c), zeros: a.chunkZeros[c] === 1,
    };
  }

  /** A chunk's blob range without building its digest string (bulk walks over every chunk of a layer). */
  chunkRange(node: number, i: number): { start: number; end: number; zeros: boolean } {
    const c = this.a.fileChunkFirst[node]! + i;
    return { start: this.a.chunkStart[c]!, end: this.a.chunkEnd[c]!, zeros: this.a.chunkZeros[c] === 1 };
  }

  /** The file bytes [start, end) chunk `i` of `node` holds. */
  chunkFileRange(node: number, i: number): { start: number; end: number } {
    const c = this.a.fileChunkFirst[node]! + i;
    return { start: this.a.chunkFileOffset[c]!, end: this.a.chunkFileOffset[c]! + this.a.chunkSize[c]! };
  }

  /** Uncompressed bytes of chunk `i` of `node`. */
  chunkSize(node: number, i: number): number {
    return this.a.chunkSize[this.a.fileChunkFirst[node]! + i]!;
  }

  chunkDigest(node: number, i: number): Digest {
    return this.chunkDigestAt(this.a.fileChunkFirst[node]! + i);
  }

  private chunkDigestAt(c: number): Digest {
    return `sha256:${Buffer.from(this.a.chunkDigest.buffer, this.a.chunkDigest.byteOffset + c * 32, 32).toString('hex')}`;
  }

  /** Index of the chunk of `node` holding file offset `offset` (binary search). */
  chunkAt(node: number, offset: number): number {
    const first = this.a.fileChunkFirst[node]!;
    let lo = 0;
    let hi = this.a.fileChunkCount[node]! - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.a.chunkFileOffset[first + mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  fileDigestOf(node: number): Digest | undefined {
    const k = findSorted(this.a.fileDigestNode, node);
    if (k >= 0) return `sha256:${Buffer.from(this.a.fileDigest.buffer, this.a.fileDigest.byteOffset + k * 32, 32).toString('hex')}`;
    return this.a.fileChunkCount[node] === 1 ? this.chunk(node, 0).digest : undefined;
  }

  /** Sorted distinct uids and gids (the `uidset`/`gidset` of the info file). */
  idSets(): { uids: number[]; gids: number[] } {
    return { uids: [...this.a.uids], gids: [...this.a.gids] };
  }

  /** Resident bytes of this tree (one buffer). */
  approximateBytes(): number {
    return this.index.buffer.byteLength;
  }
}

/** Position of `value` in a sorted array, or -1. */
function findSorted(sorted: Uint32Array, value: number): number {
  let lo = 0;
  let hi = sorted.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const v = sorted[mid]!;
    if (v === value) return mid;
    if (v < value) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}
