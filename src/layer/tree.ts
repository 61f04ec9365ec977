import { TocfsError, type Digest } from '../util/index.js';
import type { LayerChunk, LayerFile, LayerToc, TarTime } from '../format/index.js';

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;
export const S_IFIFO = 0o010000;

const TYPE_BITS: Record<LayerFile['type'], number> = {
  reg: S_IFREG, hardlink: S_IFREG, dir: S_IFDIR, symlink: S_IFLNK, char: S_IFCHR, block: S_IFBLK, fifo: S_IFIFO,
};

export class LayerTreeError extends TocfsError {}

const WHITEOUT_PREFIX = '.wh.';
const OPAQUE_MARKER = '.wh..wh..opq';
/** Extended attributes never taken from an image: overlay metadata is ours to synthesise; SELinux labels are the host's (c/storage ignores them too). */
const DROPPED_XATTR = /^(trusted\.overlay\.|user\.overlay\.|security\.selinux$)/;
const OPAQUE_XATTRS = ['trusted.overlay.opaque', 'user.overlay.opaque'];
const Y = Buffer.from('y');

/** Attributes of one node, as the store turns them into FUSE attributes. */
export interface NodeAttr {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  rdevMajor: number;
  rdevMinor: number;
  mtimeSec: number;
  mtimeNsec: number;
}

/** A regular file's content as chunks: [fileOffset, +size) ← blob [start, end); the format's own chunk type. */
export type ChunkView = LayerChunk;

interface DraftNode {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: TarTime | undefined;
  rdevMajor: number;
  rdevMinor: number;
  links: number;
  file?: LayerFile;
  children?: Map<string, number>;
  opaque?: boolean;
  implicit?: boolean;
  whiteouts?: string[];
  /** Entry name and parent dir of the first name given to this node (for paths in log lines). */
  name: string;
  parent: number;
}

/**
 * The directory tree of one layer as overlayfs wants a lower layer (design.md §4), built once from the TOC and
 * then read-only. Memory is kept in typed arrays (struct of arrays) rather than an object per entry: a layer can
 * hold 100k+ entries, and the tree stays resident while containers run.
 *
 * Node 0 is the root. Directory children are sorted by name (deterministic readdir, binary-search lookup).
 */
export class LayerTree {
  readonly nodeCount: number;
  private readonly mode: Uint32Array;
  private readonly uid: Uint32Array;
  private readonly gid: Uint32Array;
  private readonly size: Float64Array;
  private readonly nlink: Uint32Array;
  private readonly rdev: Uint32Array; // major << 20 | minor (the store turns it into the kernel encoding)
  private readonly mtimeSec: Float64Array;
  private readonly mtimeNsec: Uint32Array;
  /** Directories: [first, first+count) in the entry arrays. */
  private readonly dirFirst: Uint32Array;
  private readonly dirCount: Uint32Array;
  /** First name of a node: its entry index (root: none). */
  private readonly nodeEntry: Int32Array;
  /** Entries: name, node, and the directory holding it. */
  private readonly entryName: string[];
  private readonly entryNode: Uint32Array;
  private readonly entryDir: Uint32Array;
  /** Regular files: their chunks in the chunk arrays. */
  private readonly fileChunkFirst: Uint32Array;
  private readonly fileChunkCount: Uint32Array;
  private readonly chunkFileOffset: Float64Array;
  private readonly chunkSize: Float64Array;
  private readonly chunkStart: Float64Array;
  private readonly chunkEnd: Float64Array;
  private readonly chunkDigest: Uint8Array;
  private readonly chunkZeros: Uint8Array;
  private readonly fileDigest = new Map<number, Digest>();
  private readonly symlinks = new Map<number, string>();
  private readonly xattrs = new Map<number, Map<string, Buffer>>();
  /** Largest file size: how much a single read can ask of this layer. */
  readonly totalFileBytes: number;
  readonly chunkTotal: number;

  constructor(toc: LayerToc) {
    const draft = buildDraft(toc);
    const n = draft.length;
    this.nodeCount = n;
    this.mode = new Uint32Array(n);
    this.uid = new Uint32Array(n);
    this.gid = new Uint32Array(n);
    this.size = new Float64Array(n);
    this.nlink = new Uint32Array(n);
    this.rdev = new Uint32Array(n);
    this.mtimeSec = new Float64Array(n);
    this.mtimeNsec = new Uint32Array(n);
    this.dirFirst = new Uint32Array(n);
    this.dirCount = new Uint32Array(n);
    this.nodeEntry = new Int32Array(n).fill(-1);
    this.fileChunkFirst = new Uint32Array(n);
    this.fileChunkCount = new Uint32Array(n);
    let entries = 0;
    let chunks = 0;
    for (const d of draft) {
      entries += d.children?.size ?? 0;
      chunks += d.file?.chunks.length ?? 0;
    }
    this.entryName = new Array<string>(entries);
    this.entryNode = new Uint32Array(entries);
    this.entryDir = new Uint32Array(entries);
    this.chunkFileOffset = new Float64Array(chunks);
    this.chunkSize = new Float64Array(chunks);
    this.chunkStart = new Float64Array(chunks);
    this.chunkEnd = new Float64Array(chunks);
    this.chunkDigest = new Uint8Array(chunks * 32);
    this.chunkZeros = new Uint8Array(chunks);
    this.chunkTotal = chunks;
    const newest = newestMtime(draft);
    let e = 0;
    let c = 0;
    let total = 0;
    draft.forEach((d, i) => {
      this.mode[i] = d.mode;
      this.uid[i] = d.uid;
      this.gid[i] = d.gid;
      this.size[i] = d.size;
      this.rdev[i] = ((d.rdevMajor & 0xfff) << 20) | (d.rdevMinor & 0xfffff);
      const t = d.mtime ?? newest;
      this.mtimeSec[i] = t.sec;
      this.mtimeNsec[i] = t.nsec;
      if (d.children) {
        this.dirFirst[i] = e;
        this.dirCount[i] = d.children.size;
        let subdirs = 0;
        for (const name of [...d.children.keys()].sort()) {
          const child = d.children.get(name)!;
          this.entryName[e] = name;
          this.entryNode[e] = child;
          this.entryDir[e] = i;
          if (this.nodeEntry[child] === -1) this.nodeEntry[child] = e;
          if ((draft[child]!.mode & S_IFMT) === S_IFDIR) subdirs++;
          e++;
        }
        this.nlink[i] = 2 + subdirs;
      } else {
        this.nlink[i] = d.links;
      }
      if (d.file && (d.mode & S_IFMT) === S_IFREG) {
        total += d.size;
        this.fileChunkFirst[i] = c;
        this.fileChunkCount[i] = d.file.chunks.length;
        // A single-chunk file's digest is its chunk's: keep whole-file digests only for chunked files.
        if (d.file.digest && d.file.chunks.length > 1) this.fileDigest.set(i, d.file.digest);
        for (const ch of d.file.chunks) {
          this.chunkFileOffset[c] = ch.fileOffset;
          this.chunkSize[c] = ch.size;
          this.chunkStart[c] = ch.start;
          this.chunkEnd[c] = ch.end;
          this.chunkDigest.set(Buffer.from(ch.digest.slice(7), 'hex'), c * 32);
          this.chunkZeros[c] = ch.zeros ? 1 : 0;
          c++;
        }
      }
      if (d.file?.type === 'symlink') this.symlinks.set(i, d.file.linkName!);
      const x = new Map<string, Buffer>();
      for (const [k, v] of d.file?.xattrs ?? []) if (!DROPPED_XATTR.test(k)) x.set(k, v);
      if (d.opaque) for (const k of OPAQUE_XATTRS) x.set(k, Y);
      if (x.size > 0) this.xattrs.set(i, x);
    });
    this.totalFileBytes = total;
  }

  isDir(node: number): boolean {
    return (this.mode[node]! & S_IFMT) === S_IFDIR;
  }

  attr(node: number): NodeAttr {
    const rdev = this.rdev[node]!;
    return {
      mode: this.mode[node]!, uid: this.uid[node]!, gid: this.gid[node]!, size: this.size[node]!,
      nlink: this.nlink[node]!, rdevMajor: rdev >>> 20, rdevMinor: rdev & 0xfffff,
      mtimeSec: this.mtimeSec[node]!, mtimeNsec: this.mtimeNsec[node]!,
    };
  }

  /** The child of directory `dir` called `name`, or undefined. */
  lookup(dir: number, name: string): number | undefined {
    if (!this.isDir(dir)) return undefined;
    let lo = this.dirFirst[dir]!;
    let hi = lo + this.dirCount[dir]! - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const m = this.entryName[mid]!;
      if (m === name) return this.entryNode[mid];
      if (m < name) lo = mid + 1;
      else hi = mid - 1;
    }
    return undefined;
  }

  /** Number of entries in a directory (without "." and ".."). */
  childCount(dir: number): number {
    return this.isDir(dir) ? this.dirCount[dir]! : 0;
  }

  /** The i-th entry of a directory, in name order. */
  child(dir: number, i: number): { name: string; node: number } {
    const e = this.dirFirst[dir]! + i;
    return { name: this.entryName[e]!, node: this.entryNode[e]! };
  }

  /** The directory containing `node`'s first name (the root is its own parent). */
  parentOf(node: number): number {
    const e = this.nodeEntry[node]!;
    return e < 0 ? 0 : this.entryDir[e]!;
  }

  /** A path for log lines ("/usr/bin/tool"); hardlinked files show their first name. */
  pathOf(node: number): string {
    const parts: string[] = [];
    for (let n = node, guard = 0; n !== 0 && guard < 4096; guard++) {
      const e = this.nodeEntry[n]!;
      if (e < 0) break;
      parts.push(this.entryName[e]!);
      n = this.entryDir[e]!;
    }
    return '/' + parts.reverse().join('/');
  }

  readlink(node: number): string | undefined {
    return this.symlinks.get(node);
  }

  xattrsOf(node: number): ReadonlyMap<string, Buffer> | undefined {
    return this.xattrs.get(node);
  }

  /** The chunks of a regular file, in file order. */
  chunkCount(node: number): number {
    return this.fileChunkCount[node]!;
  }

  chunk(node: number, i: number): ChunkView {
    const c = this.fileChunkFirst[node]! + i;
    return {
      fileOffset: this.chunkFileOffset[c]!, size: this.chunkSize[c]!, start: this.chunkStart[c]!, end: this.chunkEnd[c]!,
      digest: `sha256:${Buffer.from(this.chunkDigest.subarray(c * 32, c * 32 + 32)).toString('hex')}`,
      zeros: this.chunkZeros[c] === 1,
    };
  }

  /** Index of the chunk of `node` holding file offset `offset` (binary search). */
  chunkAt(node: number, offset: number): number {
    const first = this.fileChunkFirst[node]!;
    let lo = 0;
    let hi = this.fileChunkCount[node]! - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.chunkFileOffset[first + mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  fileDigestOf(node: number): Digest | undefined {
    return this.fileDigest.get(node) ?? (this.fileChunkCount[node] === 1 ? this.chunk(node, 0).digest : undefined);
  }

  /** Sorted distinct uids and gids (the `uidset`/`gidset` of the info file). */
  idSets(): { uids: number[]; gids: number[] } {
    const u = new Set<number>(this.uid), g = new Set<number>(this.gid);
    return { uids: [...u].sort((a, b) => a - b), gids: [...g].sort((a, b) => a - b) };
  }

  /** Rough resident bytes of this tree (typed arrays + names), for memory accounting. */
  approximateBytes(): number {
    let names = 0;
    for (const n of this.entryName) names += 40 + n.length * 2;
    return this.nodeCount * 52 + this.entryNode.length * 16 + this.chunkTotal * 65 + names;
  }
}

function newestMtime(draft: DraftNode[]): TarTime {
  let best: TarTime = { sec: 0, nsec: 0 };
  for (const d of draft) {
    if (d.mtime && (d.mtime.sec > best.sec || (d.mtime.sec === best.sec && d.mtime.nsec > best.nsec))) best = d.mtime;
  }
  return best;
}

function fail(toc: LayerToc, name: string, msg: string): never {
  throw new LayerTreeError('LAYER_INVALID', `layer ${toc.tocDigest}: "${name}": ${msg}`);
}

/** Dirs named in paths but absent from the TOC: 0755 root:root, mtime of the newest entry (set later). */
function implicitDir(name: string, parent: number): DraftNode {
  return { mode: S_IFDIR | 0o755, uid: 0, gid: 0, size: 0, mtime: undefined, rdevMajor: 0, rdevMinor: 0, links: 1, children: new Map(), implicit: true, name, parent };
}

function fromFile(f: LayerFile, name: string, parent: number): DraftNode {
  const type = TYPE_BITS[f.type];
  return {
    mode: type | (f.mode & 0o7777), uid: f.uid, gid: f.gid, size: f.type === 'reg' ? f.size : f.type === 'symlink' ? Buffer.byteLength(f.linkName!) : 0,
    mtime: f.modtime, rdevMajor: f.devMajor, rdevMinor: f.devMinor, links: 1, file: f, name, parent,
    ...(type === S_IFDIR ? { children: new Map<string, number>() } : {}),
  };
}

/** First pass: nodes and names, with whiteouts, opaque markers, implicit parents and hardlinks resolved. */
function buildDraft(toc: LayerToc): DraftNode[] {
  const nodes: DraftNode[] = [implicitDir('', 0)];
  const byPath = new Map<string, number>([['/', 0]]);
  const dirOf = (path: string, from: string): number => {
    const known = byPath.get(path);
    if (known !== undefined) {
      if (!nodes[known]!.children) fail(toc, from, `parent ${path} is not a directory`);
      return known;
    }
    const cut = path.lastIndexOf('/');
    const parent = dirOf(cut === 0 ? '/' : path.slice(0, cut), from);
    const node = nodes.push(implicitDir(path.slice(cut + 1), parent)) - 1;
    nodes[parent]!.children!.set(path.slice(cut + 1), node);
    byPath.set(path, node);
    return node;
  };
  const hardlinks: LayerFile[] = [];
  for (const f of toc.files) {
    if (f.path === '/') {
      if (f.type !== 'dir') fail(toc, f.name, 'the layer root is not a directory');
      Object.assign(nodes[0]!, { ...fromFile(f, '', 0), children: nodes[0]!.children, implicit: false });
      continue;
    }
    if (f.type === 'hardlink') {
      hardlinks.push(f);
      continue;
    }
    const cut = f.path.lastIndexOf('/');
    const base = f.path.slice(cut + 1);
    const parent = dirOf(cut === 0 ? '/' : f.path.slice(0, cut), f.name);
    const dir = nodes[parent]!;
    if (base === OPAQUE_MARKER) {
      dir.opaque = true;
      continue;
    }
    if (base.startsWith(WHITEOUT_PREFIX)) {
      (dir.whiteouts ??= []).push(base.slice(WHITEOUT_PREFIX.length));
      continue;
    }
    const existing = byPath.get(f.path);
    if (existing !== undefined) {
      // An implicit directory made for an earlier child now gets its own metadata.
      const ex = nodes[existing]!;
      if (!ex.implicit || f.type !== 'dir') fail(toc, f.name, 'path given twice');
      Object.assign(ex, { ...fromFile(f, base, parent), children: ex.children, implicit: false });
      continue;
    }
    const node = nodes.push(fromFile(f, base, parent)) - 1;
    dir.children!.set(base, node);
    byPath.set(f.path, node);
  }
  for (const f of hardlinks) {
    let target = byPath.get(f.linkPath!);
    if (target === undefined) {
      // The target may itself be a hardlink listed later: resolve through the TOC's chain.
      target = resolveLinkTarget(toc, f, byPath);
    }
    const t = nodes[target]!;
    if ((t.mode & S_IFMT) === S_IFDIR) fail(toc, f.name, 'hardlink to a directory');
    const cut = f.path.lastIndexOf('/');
    const base = f.path.slice(cut + 1);
    if (base.startsWith(WHITEOUT_PREFIX)) fail(toc, f.name, 'a whiteout cannot be a hardlink');
    const parent = dirOf(cut === 0 ? '/' : f.path.slice(0, cut), f.name);
    if (byPath.has(f.path)) fail(toc, f.name, 'path given twice');
    nodes[parent]!.children!.set(base, target);
    byPath.set(f.path, target);
    t.links++;
  }
  for (const [i, d] of nodes.entries()) {
    for (const hidden of d.whiteouts ?? []) {
      if (d.children!.has(hidden) || hidden === '' || hidden.startsWith(WHITEOUT_PREFIX)) continue;
      const node = nodes.push({
        mode: S_IFCHR, uid: 0, gid: 0, size: 0, mtime: undefined, rdevMajor: 0, rdevMinor: 0, links: 1, name: hidden, parent: i,
      }) - 1;
      d.children!.set(hidden, node);
    }
  }
  return nodes;
}

function resolveLinkTarget(toc: LayerToc, f: LayerFile, byPath: Map<string, number>): number {
  const byFilePath = new Map(toc.files.map((x) => [x.path, x]));
  let cur: LayerFile | undefined = f;
  for (let hops = 0; cur?.type === 'hardlink' && hops < 64; hops++) {
    const found = byPath.get(cur.linkPath!);
    if (found !== undefined) return found;
    cur = byFilePath.get(cur.linkPath!);
  }
  return fail(toc, f.name, `hardlink target "${f.linkName}" is not in the layer`);
}
