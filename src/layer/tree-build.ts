import type { LayerFile, LayerToc, TarTime } from '../format/index.js';
import type { Digest } from '../util/index.js';
import { allocateTreeIndex, encodeMeta, sealTreeIndex, type IndexCounts, type TreeIndex } from './tree-index.js';
import { LayerTreeError, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG } from './tree-types.js';

const TYPE_BITS: Record<LayerFile['type'], number> = {
  reg: S_IFREG, hardlink: S_IFREG, dir: S_IFDIR, symlink: S_IFLNK, char: S_IFCHR, block: S_IFBLK, fifo: S_IFIFO,
};

const WHITEOUT_PREFIX = '.wh.';
const OPAQUE_MARKER = '.wh..wh..opq';
/** Extended attributes never taken from an image: overlay metadata is ours to synthesise; SELinux labels are the host's (c/storage ignores them too). */
const DROPPED_XATTR = /^(trusted\.overlay\.|user\.overlay\.|security\.selinux$)/;
const OPAQUE_XATTRS = ['trusted.overlay.opaque', 'user.overlay.opaque'];
const Y = Buffer.from('y');

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

/** What the index keeps about the layer beside its tree. */
export interface TreeFacts {
  tocDigest: Digest;
  diffSize: number;
  tarSplitDigest?: Digest;
}

/**
 * Build the directory tree of one layer as overlayfs wants a lower layer (design.md §4) from its TOC, in the
 * compact binary form of tree-index.ts. This is the CPU-heavy part of opening a layer (it grows with the TOC):
 * the daemon runs it in a worker thread, never on the thread serving FUSE.
 *
 * Node 0 is the root. Directory entries are sorted by their UTF-8 bytes (deterministic readdir, binary-search
 * lookup), and node numbers depend on the TOC alone, so inode numbers are the same in every run.
 */
export function buildTreeIndex(toc: LayerToc, facts: TreeFacts): TreeIndex {
  return writeTreeIndex(planTreeIndex(toc), facts);
}

/** The part of buildTreeIndex that needs only the TOC (most of its work); writeTreeIndex finishes it. */
export interface TreePlan {
  toc: LayerToc;
  draft: DraftNode[];
  names: Map<number, { name: Buffer; node: number }[]>;
  counts: IndexCounts;
  symlinks: [number, Buffer][];
  xattrs: [number, Buffer][];
  fileDigests: [number, Digest][];
  uids: Set<number>;
  gids: Set<number>;
}

/**
 * Plan a layer's tree from its TOC alone: the daemon does this while the tar-split it is cross-checked against is
 * still being read on another worker (layer/worker.ts openToc).
 */
export function planTreeIndex(toc: LayerToc): TreePlan {
  const draft = buildDraft(toc);
  const n = draft.length;
  const names = new Map<number, { name: Buffer; node: number }[]>();
  let entries = 0;
  let nameBytes = 0;
  let chunks = 0;
  let symlinkBytes = 0;
  const symlinks: [number, Buffer][] = [];
  const xattrs: [number, Buffer][] = [];
  let xattrBytes = 0;
  const fileDigests: [number, Digest][] = [];
  const uids = new Set<number>();
  const gids = new Set<number>();
  draft.forEach((d, i) => {
    uids.add(d.uid);
    gids.add(d.gid);
    if (d.children) {
      const list = [...d.children].map(([name, node]) => ({ name: Buffer.from(name), node }));
      list.sort((a, b) => Buffer.compare(a.name, b.name));
      names.set(i, list);
      entries += list.length;
      for (const e of list) nameBytes += e.name.length;
    }
    if (d.file && (d.mode & S_IFMT) === S_IFREG) {
      chunks += d.file.chunks.length;
      // A single-chunk file's digest is its chunk's: keep whole-file digests only for chunked files.
      if (d.file.digest && d.file.chunks.length > 1) fileDigests.push([i, d.file.digest]);
    }
    if (d.file?.type === 'symlink') {
      const t = Buffer.from(d.file.linkName!);
      symlinks.push([i, t]);
      symlinkBytes += t.length;
    }
    const x = encodeXattrs(d);
    if (x) {
      xattrs.push([i, x]);
      xattrBytes += x.length;
    }
  });
  const counts: IndexCounts = {
    nodes: n, entries, chunks, nameBytes, symlinks: symlinks.length, symlinkBytes, xattrNodes: xattrs.length, xattrBytes,
    fileDigests: fileDigests.length, uids: uids.size, gids: gids.size, metaBytes: 0,
  };
  return { toc, draft, names, counts, symlinks, xattrs, fileDigests, uids, gids };
}

/** Lay out and fill the index of a planned tree. */
export function writeTreeIndex(plan: TreePlan, facts: TreeFacts): TreeIndex {
  const { toc, draft, names, symlinks, xattrs, fileDigests, uids, gids } = plan;
  const counts = { ...plan.counts };
  const meta = encodeMeta({
    tocDigest: facts.tocDigest, diffSize: facts.diffSize, tocEntries: toc.files.length,
    ...(facts.tarSplitDigest ? { tarSplitDigest: facts.tarSplitDigest } : {}),
  });
  counts.metaBytes = meta.length;
  const index = allocateTreeIndex(counts, meta);
  const a = index.arrays;
  const newest = newestMtime(draft);
  let e = 0;
  let nameAt = 0;
  let c = 0;
  a.nodeEntry.fill(-1);
  draft.forEach((d, i) => {
    a.mode[i] = d.mode;
    a.uid[i] = d.uid;
    a.gid[i] = d.gid;
    a.size[i] = d.size;
    a.rdev[i] = ((d.rdevMajor & 0xfff) << 20) | (d.rdevMinor & 0xfffff);
    const t = d.mtime ?? newest;
    a.mtimeSec[i] = t.sec;
    a.mtimeNsec[i] = t.nsec;
    const list = names.get(i);
    if (list) {
      a.dirFirst[i] = e;
      a.dirCount[i] = list.length;
      let subdirs = 0;
      for (const { name, node } of list) {
        a.names.set(name, nameAt);
        nameAt += name.length;
        a.entryNameEnd[e] = nameAt;
        a.entryNode[e] = node;
        a.entryDir[e] = i;
        if (a.nodeEntry[node] === -1) a.nodeEntry[node] = e;
        if ((draft[node]!.mode & S_IFMT) === S_IFDIR) subdirs++;
        e++;
      }
      a.nlink[i] = 2 + subdirs;
    } else {
      a.nlink[i] = d.links;
    }
    if (d.file && (d.mode & S_IFMT) === S_IFREG) {
      a.fileChunkFirst[i] = c;
      a.fileChunkCount[i] = d.file.chunks.length;
      for (const ch of d.file.chunks) {
        a.chunkFileOffset[c] = ch.fileOffset;
        a.chunkSize[c] = ch.size;
        a.chunkStart[c] = ch.start;
        a.chunkEnd[c] = ch.end;
        a.chunkDigest.set(Buffer.from(ch.digest.slice(7), 'hex'), c * 32);
        a.chunkZeros[c] = ch.zeros ? 1 : 0;
        c++;
      }
    }
  });
  fillSparse(symlinks, a.symlinkNode, a.symlinkEnd, a.symlinkBytes);
  fillSparse(xattrs, a.xattrNode, a.xattrEnd, a.xattrBytes);
  fileDigests.forEach(([node, digest], k) => {
    a.fileDigestNode[k] = node;
    a.fileDigest.set(Buffer.from(digest.slice(7), 'hex'), k * 32);
  });
  a.uids.set([...uids].sort((x, y) => x - y));
  a.gids.set([...gids].sort((x, y) => x - y));
  sealTreeIndex(index);
  return index;
}

/** Node-sorted (node, bytes) pairs into a node column, an end column and one byte array. */
function fillSparse(items: [number, Buffer][], node: Uint32Array, end: Uint32Array, bytes: Uint8Array): void {
  let at = 0;
  items.forEach(([n, b], k) => {
    node[k] = n;
    bytes.set(b, at);
    at += b.length;
    end[k] = at;
  });
}

/** A node's served xattrs as [u16 name length][name][u32 value length][value]…, or undefined if none. */
function encodeXattrs(d: DraftNode): Buffer | undefined {
  const x = new Map<string, Buffer>();
  for (const [k, v] of d.file?.xattrs ?? []) if (!DROPPED_XATTR.test(k)) x.set(k, v);
  if (d.opaque) for (const k of OPAQUE_XATTRS) x.set(k, Y);
  if (x.size === 0) return undefined;
  const parts: Buffer[] = [];
  for (const [k, v] of x) {
    const name = Buffer.from(k);
    const h = Buffer.alloc(2);
    h.writeUInt16LE(name.length);
    const l = Buffer.alloc(4);
    l.writeUInt32LE(v.length);
    parts.push(h, name, l, v);
  }
  return Buffer.concat(parts);
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
  // Built once, only if some hardlink points at a later hardlink (per link, it made hostile TOCs quadratic).
  let byFilePath: Map<string, LayerFile> | undefined;
  for (const f of hardlinks) {
    let target = byPath.get(f.linkPath!);
    if (target === undefined) {
      // The target may itself be a hardlink listed later: resolve through the TOC's chain.
      byFilePath ??= new Map(toc.files.map((x) => [x.path, x]));
      target = resolveLinkTarget(toc, f, byPath, byFilePath);
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

function resolveLinkTarget(toc: LayerToc, f: LayerFile, byPath: Map<string, number>, byFilePath: Map<string, LayerFile>): number {
  let cur: LayerFile | undefined = f;
  for (let hops = 0; cur?.type === 'hardlink' && hops < 64; hops++) {
    const found = byPath.get(cur.linkPath!);
    if (found !== undefined) return found;
    cur = byFilePath.get(cur.linkPath!);
  }
  return fail(toc, f.name, `hardlink target "${f.linkName}" is not in the layer`);
}
