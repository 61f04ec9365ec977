import { readFileSync } from 'node:fs';
import { open as openFile, type FileHandle } from 'node:fs/promises';
import {
  Errno, makedev, type Attr, type AttrReply, type BackingFiles, type DirSink, type Entry, type OpenReply, type Operations,
  type RequestContext, type StatfsReply,
} from '../fuse/index.js';
import { ContentError, S_IFDIR, S_IFMT, S_IFREG, type AssembledFiles } from '../layer/index.js';
import { isDigest, type Digest } from '../util/index.js';
import { layerInfo, type KeyGeneration } from './info.js';
import type { NamespaceJournal, NamespaceRecord } from './namespace.js';
import { Passthrough, type PassthroughCandidate, type PassthroughStats } from './passthrough.js';
import type { FoundLayer, LayerData, Resolver } from './resolver.js';

/** A `<b64 ref>/<key>` directory: one layer as one podman generation asked for it. */
interface LayerDir {
  ino: number;
  slot: number;
  refName: string;
  key: Digest;
  generation: KeyGeneration;
  data: LayerData;
  info: Buffer;
  uses: number;
  children: { diff: number; info: number; blob: number; tocDigest: number };
  /**
   * Handed out by an earlier server of this connection: the kernel may hold page-cache opens of its files that this
   * server never counted, so its files are never given passthrough here (an open the other way would fail).
   */
  restored: boolean;
}

type StoreNode =
  | { kind: 'root' }
  | { kind: 'ref'; name: string; ref: string; layers: Map<Digest, LayerDir> }
  | { kind: 'layer'; dir: LayerDir }
  | { kind: 'info' | 'blob' | 'toc-digest'; dir: LayerDir };

export interface StoreLogger {
  error(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

/** One line of `tocfs status`. */
/** One layer's files in the order containers first read them. */
export interface LayerReads {
  ref: string;
  blobDigest: string;
  tocDigest: string;
  paths: string[];
  /** Byte ranges read of the files of `paths` that were read only in part. */
  ranges: Record<string, [number, number][]>;
}

export interface LayerStatus {
  ref: string;
  key: string;
  generation: KeyGeneration;
  blobDigest: string;
  tocDigest: string;
  diffID: string;
  compressedSize: number;
  diffSize: number;
  entries: number;
  /** Data chunks (zero chunks are never fetched) and how many are local (memory or disk). */
  chunks: number;
  localChunks: number;
  /** Compressed bytes of the data chunks, and of those that are local. */
  contentBytes: number;
  localBytes: number;
  localPercent: number;
  fetchedBytes: number;
  servedBytes: number;
  verifyFailures: number;
  background: string;
  /** Files of the layer's prefetch hint (tocfs convert --prefetch) found in its tree. */
  hintedFiles: number;
  proof: string;
  proofDetail?: string;
  uses: number;
  quarantined?: string;
}

export interface StoreOptions {
  resolver: Resolver;
  logger?: StoreLogger;
  /** TTL (s) of store-level entries (refs, layer dirs): short, they come and go. */
  storeTtl?: number;
  /** TTL (s) of entries inside `diff/`: layers are immutable. */
  layerTtl?: number;
  /**
   * The mount lives in a user namespace (rootless: the daemon runs under `podman unshare`). Root there is the
   * unprivileged user, whose overlay mounts use `userxattr` and ask as namespace root. Default: detected.
   */
  userNamespace?: boolean;
  /**
   * Where node ids are recorded as they are handed out. A journal opened with NamespaceJournal.resume makes this
   * store answer the ids an earlier server of the same FUSE connection gave out (layers re-resolve on first use).
   */
  journal?: NamespaceJournal;
  /**
   * FUSE passthrough for big files complete on local disk: the connection's backing files (FuseSession.backing,
   * undefined while passthrough is off) and where checked complete copies are made. Without them, every read is ours.
   */
  passthrough?: { backing: () => BackingFiles | undefined; assembled: AssembledFiles };
}

type LayerRecord = Extract<NamespaceRecord, { t: 'layer' }>;

/** Proof states in which a layer's files may be served by passthrough. */
const PASSTHROUGH_PROOF_STATES: ReadonlySet<string> = new Set(['proven', 'skipped', 'off']);
const O_ACCMODE = 3;
const O_RDONLY = 0;

/**
 * Local-chunk counts (status, metrics) look at this many chunks per turn of the event loop: ~20 µs a chunk (its
 * digest string and two cache lookups), so a 40,000-chunk layer counted in one go held FUSE requests for ~0.9 s at
 * every metrics scrape.
 */
const COUNT_SLICE_CHUNKS = 2_000;

/** Layer tree inodes: (slot + 1) · 2^32 + node, far above the store's own inode numbers. */
const SLOT_SPAN = 2 ** 32;
const ROOT = 1;
const LAYER_DIR_NAMES = ['blob', 'diff', 'info', 'toc-digest'] as const;

/**
 * The additional layer store namespace (design.md §5, als-protocol.md): root → <base64 ref> → <digest> →
 * {diff/, info, blob, toc-digest}. Directories appear on LOOKUP; `use` and RMDIR count references and answer
 * ENOENT, as c/storage expects.
 */
export class LayerStore implements Operations {
  private readonly nodes = new Map<number, StoreNode>([[ROOT, { kind: 'root' }]]);
  private readonly refs = new Map<string, number>();
  private readonly slots = new Map<number, LayerDir>();
  private nextIno = ROOT + 1;
  private nextSlot = 0;
  private started = Math.floor(Date.now() / 1000);
  /** Layer directories an earlier server handed out and this one has not resolved yet: by slot, id and key. */
  private readonly pending = new Map<number, LayerRecord>();
  private readonly pendingIno = new Map<number, number>();
  private readonly pendingKey = new Map<string, number>();
  private readonly restoring = new Map<number, Promise<LayerDir>>();
  private readonly storeTtl: number;
  private readonly layerTtl: number;
  private readonly blobHandles = new Map<string, Promise<FileHandle>>();
  private readonly userNamespace: boolean;
  /** Local-chunk counts of big layers (see localCounts). */
  private readonly counts = new WeakMap<LayerData, LocalCounts & { at: number; running: boolean }>();
  /** Backing files an earlier server of this connection registered and did not unregister: node id → backing id. */
  private readonly inheritedBacking = new Map<number, number>();
  private readonly passthrough: Passthrough | undefined;

  constructor(private readonly opts: StoreOptions) {
    this.storeTtl = opts.storeTtl ?? 1;
    this.layerTtl = opts.layerTtl ?? 3600;
    this.userNamespace = opts.userNamespace ?? inUserNamespace();
    for (const r of opts.journal?.records ?? []) this.replay(r);
    const pt = opts.passthrough;
    this.passthrough = pt && new Passthrough({ ...pt, ...(opts.journal ? { journal: opts.journal } : {}), ...(opts.logger ? { logger: opts.logger } : {}) }, this.inheritedBacking);
  }

  /** Passthrough opens served and backing files registered, and why registering stopped working, if it did. */
  passthroughStatus(): (PassthroughStats & { failure?: string }) | undefined {
    const pt = this.passthrough;
    return pt && { ...pt.stats, ...(pt.failure ? { failure: pt.failure } : {}) };
  }

  /** Take back one id an earlier server of this connection handed out. */
  private replay(r: NamespaceRecord): void {
    switch (r.t) {
      case 'start':
        this.started = r.started;
        return;
      case 'ref': {
        const ref = decodeRefName(r.name);
        if (ref === undefined || this.nodes.has(r.ino)) return;
        this.nodes.set(r.ino, { kind: 'ref', name: r.name, ref, layers: new Map() });
        this.refs.set(r.name, r.ino);
        this.nextIno = Math.max(this.nextIno, r.ino + 1);
        return;
      }
      case 'layer':
        if (!this.refs.has(r.ref) || this.pending.has(r.slot)) return;
        this.pending.set(r.slot, r);
        for (const ino of [r.ino, r.info, r.blob, r.toc]) this.pendingIno.set(ino, r.slot);
        this.pendingKey.set(`${r.ref}/${r.key}`, r.slot);
        this.nextIno = Math.max(this.nextIno, r.ino + 1, r.info + 1, r.blob + 1, r.toc + 1);
        this.nextSlot = Math.max(this.nextSlot, r.slot + 1);
        return;
      case 'backing':
        this.inheritedBacking.set(r.ino, r.id);
        return;
      case 'unbacking':
        this.inheritedBacking.delete(r.ino);
        return;
    }
  }

  /** The slot behind `ino` if it is a layer an earlier server handed out that is not resolved here yet. */
  private pendingSlot(ino: number): number | undefined {
    if (this.pending.size === 0) return undefined;
    if (ino >= SLOT_SPAN) {
      const slot = Math.floor(ino / SLOT_SPAN) - 1;
      return this.slots.has(slot) || !this.pending.has(slot) ? undefined : slot;
    }
    return this.nodes.has(ino) ? undefined : this.pendingIno.get(ino);
  }

  /** Run `fn` once the layer behind `ino` is resolved: at once (no promise) in the ordinary case. */
  private when<T>(ino: number, fn: () => T | Promise<T>): T | Promise<T> {
    const slot = this.pendingSlot(ino);
    if (slot === undefined) return fn();
    return this.restore(slot).then(fn);
  }

  /** Resolve a layer an earlier server handed out, giving it the same slot and ids. */
  private restore(slot: number): Promise<LayerDir> {
    let p = this.restoring.get(slot);
    if (!p) {
      const r = this.pending.get(slot)!;
      const refNode = this.node(this.refs.get(r.ref)!) as Extract<StoreNode, { kind: 'ref' }>;
      // Recorded facts open the layer without the registry; a record without them looks it up again.
      const resolve = () => (r.layer ? this.opts.resolver.reopen(refNode.ref, r.layer) : this.opts.resolver.find(refNode.ref, r.key as Digest));
      p = this.layerDir(refNode, r.key as Digest, resolve);
      this.restoring.set(slot, p);
      p.catch(() => this.restoring.delete(slot)); // a later request tries again
    }
    return p;
  }

  /**
   * The recorded first-read order of every layer looked up (once per blob, whichever key generation found it),
   * for `tocfs reads` → `tocfs convert --prefetch`.
   */
  reads(): LayerReads[] {
    const seen = new Set<string>();
    const out: LayerReads[] = [];
    for (const dir of this.slots.values()) {
      const { data } = dir;
      if (seen.has(data.descriptor.digest)) continue;
      seen.add(data.descriptor.digest);
      out.push({ ref: dir.refName, blobDigest: data.descriptor.digest, tocDigest: data.tocDigest, paths: data.firstReads(), ranges: data.firstReadRanges() });
    }
    return out;
  }

  /** What every layer directory podman has looked up is doing, for `tocfs status` and metrics. */
  status(): LayerStatus[] {
    return [...this.slots.values()].map((dir) => {
      const { data } = dir;
      const { chunks, localChunks, total, local } = this.localCounts(data);
      return {
        ref: dir.refName, key: dir.key, generation: dir.generation, blobDigest: data.descriptor.digest,
        tocDigest: data.tocDigest, diffID: data.diffID, compressedSize: data.descriptor.size, diffSize: data.diffSize,
        entries: data.entries, chunks, localChunks, contentBytes: total, localBytes: local,
        localPercent: total === 0 ? 100 : Math.round((local / total) * 1000) / 10,
        fetchedBytes: data.content.stats.fetchedBytes, servedBytes: data.content.stats.servedBytes,
        verifyFailures: data.content.stats.verifyFailures,
        background: data.prefetcher?.progress.state ?? 'off', hintedFiles: data.hintedFiles, proof: data.proof.state,
        ...(data.proof.detail ? { proofDetail: data.proof.detail } : {}),
        uses: dir.uses, ...(data.quarantined ? { quarantined: data.quarantined } : {}),
      };
    });
  }

  /**
   * How much of a layer is local. Counting walks every chunk (a digest string and a cache lookup each): done
   * inline for ordinary layers, but for a big one (≥ 50k chunks, ~10 ms and more) in slices between FUSE requests,
   * status showing the last complete count meanwhile.
   */
  private localCounts(data: LayerData): LocalCounts {
    const tree = data.tree;
    const known = this.counts.get(data);
    if (tree.chunkTotal <= COUNT_SLICE_CHUNKS) {
      const c = emptyCounts();
      countLocal(data, 0, c);
      return c;
    }
    if (!known || (!known.running && Date.now() - known.at > 1000)) {
      const next = known ?? { ...emptyCounts(), at: 0, running: false };
      next.running = true;
      this.counts.set(data, next);
      void (async () => {
        const c = emptyCounts();
        for (let n = 0; n < tree.nodeCount;) {
          n = countLocal(data, n, c, COUNT_SLICE_CHUNKS);
          await new Promise((r) => setImmediate(r));
        }
        Object.assign(next, c, { at: Date.now(), running: false });
      })();
    }
    return this.counts.get(data)!;
  }

  // ---- lookup and attributes ----

  lookup(parent: number, name: string): Entry | Promise<Entry> {
    return this.when(parent, () => this.lookupNow(parent, name));
  }

  private async lookupNow(parent: number, name: string): Promise<Entry> {
    if (parent >= SLOT_SPAN) return this.treeEntry(this.slotOf(parent), this.tree(parent).lookup(parent % SLOT_SPAN, name));
    const node = this.node(parent);
    switch (node.kind) {
      case 'root': return this.storeEntry(this.refDir(name));
      case 'ref': return this.storeEntry((await this.layerDir(node, name)).ino);
      case 'layer': {
        if (name === 'diff') return this.treeEntry(node.dir, 0);
        const child = (LAYER_DIR_NAMES as readonly string[]).includes(name) ? node.dir.children[name === 'toc-digest' ? 'tocDigest' : name as 'info' | 'blob'] : undefined;
        if (child === undefined) throw Errno.ENOENT; // includes "use": it never exists
        return this.storeEntry(child);
      }
      default: throw Errno.ENOTDIR;
    }
  }

  getattr(ino: number): AttrReply | Promise<AttrReply> {
    return this.when(ino, () => this.getattrNow(ino));
  }

  private getattrNow(ino: number): AttrReply {
    if (ino >= SLOT_SPAN) return { attr: this.treeAttr(this.slotOf(ino), ino % SLOT_SPAN), attrTtl: this.layerTtl };
    return { attr: this.storeAttr(ino), attrTtl: this.storeTtl };
  }

  private node(ino: number): StoreNode {
    const n = this.nodes.get(ino);
    if (!n) throw Errno.ENOENT;
    return n;
  }

  private slotOf(ino: number): LayerDir {
    const dir = this.slots.get(Math.floor(ino / SLOT_SPAN) - 1);
    if (!dir) throw Errno.ENOENT;
    return dir;
  }

  private tree(ino: number) {
    return this.slotOf(ino).data.tree;
  }

  private storeEntry(ino: number): Entry {
    return { attr: this.storeAttr(ino), entryTtl: this.storeTtl, attrTtl: this.storeTtl };
  }

  private treeEntry(dir: LayerDir, node: number | undefined): Entry {
    if (node === undefined) throw Errno.ENOENT;
    return { attr: this.treeAttr(dir, node), entryTtl: this.layerTtl, attrTtl: this.layerTtl };
  }

  private storeAttr(ino: number): Attr {
    const n = this.node(ino);
    const base = { ino, uid: 0, gid: 0, mtime: this.started, ctime: this.started, atime: this.started };
    switch (n.kind) {
      case 'root':
        // Only root (podman, and overlay with the mounter's credentials) walks the store: with allow_other, a
        // world-readable root would let any local user read every image's files.
        return { ...base, mode: S_IFDIR | 0o700, nlink: 2, size: 4096 };
      case 'ref':
      case 'layer':
        return { ...base, mode: S_IFDIR | 0o755, nlink: 2, size: 4096 };
      case 'info':
        return { ...base, mode: S_IFREG | 0o444, nlink: 1, size: n.dir.info.length };
      case 'blob':
        return { ...base, mode: S_IFREG | 0o444, nlink: 1, size: n.dir.data.descriptor.size };
      case 'toc-digest':
        return { ...base, mode: S_IFREG | 0o444, nlink: 1, size: n.dir.data.tocDigest.length };
    }
  }

  private treeAttr(dir: LayerDir, node: number): Attr {
    const a = dir.data.tree.attr(node);
    return {
      ino: (dir.slot + 1) * SLOT_SPAN + node, mode: a.mode, nlink: a.nlink, uid: a.uid, gid: a.gid, size: a.size,
      rdev: makedev(a.rdevMajor, a.rdevMinor), mtime: a.mtimeSec, mtimeNsec: a.mtimeNsec,
      ctime: a.mtimeSec, ctimeNsec: a.mtimeNsec, atime: a.mtimeSec, atimeNsec: a.mtimeNsec,
    };
  }

  // ---- the namespace ----

  /** `<base64 ref>`: any valid standard-base64 name of a reference gets a directory (resolution comes later). */
  private refDir(name: string): number {
    const known = this.refs.get(name);
    if (known !== undefined) return known;
    const ref = decodeRefName(name);
    if (ref === undefined) throw Errno.ENOENT;
    const ino = this.nextIno++;
    this.opts.journal?.append({ t: 'ref', name, ino });
    this.nodes.set(ino, { kind: 'ref', name, ref, layers: new Map() });
    this.refs.set(name, ino);
    return ino;
  }

  private async layerDir(refNode: Extract<StoreNode, { kind: 'ref' }>, name: string, resolve?: () => Promise<FoundLayer>): Promise<LayerDir> {
    if (!isDigest(name)) throw Errno.ENOENT;
    const known = refNode.layers.get(name);
    if (known) {
      if (known.data.quarantined) throw Errno.ENOENT;
      return known;
    }
    // A layer an earlier server handed out is restored as recorded, whichever request comes first.
    const pendingSlot = this.pendingKey.get(`${refNode.name}/${name}`);
    if (!resolve && pendingSlot !== undefined) return this.restore(pendingSlot);
    let found;
    try {
      found = await (resolve ? resolve() : this.opts.resolver.find(refNode.ref, name));
    } catch {
      throw Errno.ENOENT; // logged by the resolver: podman falls back to a normal pull
    }
    const again = refNode.layers.get(name); // a concurrent lookup may have won
    if (again) return again;
    const { data, generation } = found;
    const ids = data.tree.idSets();
    // A layer an earlier server of this connection handed out keeps its slot and ids; a new one gets fresh ones,
    // recorded before the reply that hands them to the kernel.
    const old = this.pending.get(this.pendingKey.get(`${refNode.name}/${name}`) ?? -1);
    if (!old && this.nextSlot + 2 >= 2 ** 21) throw new Errno('ENOSPC');
    const ino = old?.ino ?? this.nextIno++;
    const children = old
      ? { diff: 0, info: old.info, blob: old.blob, tocDigest: old.toc }
      : { diff: 0, info: this.nextIno++, blob: this.nextIno++, tocDigest: this.nextIno++ };
    const dir: LayerDir = {
      ino, slot: old?.slot ?? this.nextSlot++, refName: refNode.ref, key: name, generation, data, uses: 0,
      info: layerInfo(generation, {
        blobDigest: data.descriptor.digest, blobSize: data.descriptor.size, diffID: data.diffID, diffSize: data.diffSize,
        tocDigest: data.tocDigest, uids: ids.uids, gids: ids.gids,
      }),
      children, restored: old !== undefined,
    };
    dir.children.diff = (dir.slot + 1) * SLOT_SPAN;
    if (old) {
      this.pending.delete(old.slot);
      this.pendingKey.delete(`${old.ref}/${old.key}`);
      for (const i of [old.ino, old.info, old.blob, old.toc]) this.pendingIno.delete(i);
    } else {
      this.opts.journal?.append({
        t: 'layer', ref: refNode.name, key: name, slot: dir.slot, ino, info: children.info, blob: children.blob, toc: children.tocDigest,
        layer: found.recorded,
      });
    }
    this.slots.set(dir.slot, dir);
    this.nodes.set(dir.ino, { kind: 'layer', dir });
    this.nodes.set(dir.children.info, { kind: 'info', dir });
    this.nodes.set(dir.children.blob, { kind: 'blob', dir });
    this.nodes.set(dir.children.tocDigest, { kind: 'toc-digest', dir });
    refNode.layers.set(name, dir);
    return dir;
  }

  // ---- directories ----

  opendir(ino: number): OpenReply {
    return { cacheDir: ino >= SLOT_SPAN };
  }

  readdirplus(ino: number, fh: number, offset: number, sink: DirSink): void | Promise<void> {
    return this.when(ino, () => this.readdirplusNow(ino, fh, offset, sink));
  }

  private readdirplusNow(ino: number, _fh: number, offset: number, sink: DirSink): void {
    if (ino >= SLOT_SPAN) return this.readTreeDir(ino, offset, sink);
    const entries = this.listDir(ino);
    for (let i = offset; i < entries.length; i++) {
      const [name, child] = entries[i]!;
      const entry = name === '.' || name === '..' ? undefined : this.entryFor(ino, child);
      const attr = entry?.attr ?? this.attrFor(child);
      if (!sink.add(name, i + 1, attr.ino, attr.mode, entry)) return;
    }
  }

  /**
   * A layer directory from `offset` on: only the entries that fit this reply are decoded (building the whole list
   * per request made listing a 200,000-entry directory quadratic).
   */
  private readTreeDir(ino: number, offset: number, sink: DirSink): void {
    const dir = this.slotOf(ino);
    const tree = dir.data.tree;
    const node = ino % SLOT_SPAN;
    if (!tree.isDir(node)) throw Errno.ENOTDIR;
    const base = (dir.slot + 1) * SLOT_SPAN;
    const count = tree.childCount(node) + 2;
    for (let i = offset; i < count; i++) {
      if (i < 2) {
        const child = i === 0 ? ino : node === 0 ? dir.ino : base + tree.parentOf(node);
        const attr = this.attrFor(child);
        if (!sink.add(i === 0 ? '.' : '..', i + 1, attr.ino, attr.mode, undefined)) return;
        continue;
      }
      const c = tree.child(node, i - 2);
      const entry = this.entryFor(ino, base + c.node);
      if (!sink.add(c.name, i + 1, entry.attr.ino, entry.attr.mode, entry)) return;
    }
  }

  private entryFor(parent: number, child: number): Entry {
    return parent >= SLOT_SPAN || child >= SLOT_SPAN
      ? { attr: this.treeAttr(this.slotOf(child), child % SLOT_SPAN), entryTtl: this.layerTtl, attrTtl: this.layerTtl }
      : this.storeEntry(child);
  }

  private attrFor(ino: number): Attr {
    return ino >= SLOT_SPAN ? this.treeAttr(this.slotOf(ino), ino % SLOT_SPAN) : this.storeAttr(ino);
  }

  /** Entries of a directory as [name, ino], "." and ".." first. */
  private listDir(ino: number): [string, number][] {
    const n = this.node(ino);
    switch (n.kind) {
      case 'root':
        return [['.', ROOT], ['..', ROOT], ...[...this.refs].map(([name, i]) => [name, i] as [string, number])];
      case 'ref':
        return [['.', ino], ['..', ROOT], ...[...n.layers].map(([k, d]) => [k, d.ino] as [string, number])];
      case 'layer': {
        const d = n.dir;
        return [['.', ino], ['..', this.refs.get(encodeRefName(d.refName))!], ['blob', d.children.blob], ['diff', d.children.diff], ['info', d.children.info], ['toc-digest', d.children.tocDigest]];
      }
      default: throw Errno.ENOTDIR;
    }
  }

  // ---- files ----

  readlink(ino: number): string | Promise<string> {
    return this.when(ino, () => this.readlinkNow(ino));
  }

  private readlinkNow(ino: number): string {
    if (ino < SLOT_SPAN) throw Errno.EINVAL;
    const target = this.tree(ino).readlink(ino % SLOT_SPAN);
    if (target === undefined) throw Errno.EINVAL;
    return target;
  }

  open(ino: number, flags: number): OpenReply | Promise<OpenReply> {
    return this.when(ino, () => this.openNow(ino, flags));
  }

  private openNow(ino: number, flags: number): OpenReply {
    if (ino >= SLOT_SPAN) {
      const a = this.tree(ino).attr(ino % SLOT_SPAN);
      if ((a.mode & S_IFMT) !== S_IFREG) throw Errno.EISDIR;
      // A quarantined layer's reads fail; a passthrough open's reads would not come to us to fail.
      if (this.slotOf(ino).data.quarantined && this.passthrough?.registered(ino)) throw Errno.EIO;
      if (this.passthrough) return this.passthrough.open(ino, this.passthroughCandidate(ino), (flags & O_ACCMODE) === O_RDONLY);
    } else if (this.node(ino).kind === 'root' || this.node(ino).kind === 'ref' || this.node(ino).kind === 'layer') {
      throw Errno.EISDIR;
    }
    // Everything here is immutable: let the page cache keep it across opens.
    return { keepCache: true };
  }

  release(ino: number, fh: number): void {
    // Never waits for a layer to be restored: a release names an open that exists, and needs no tree.
    if (ino >= SLOT_SPAN && this.passthrough) this.passthrough.release(ino, fh, this.slots.has(Math.floor(ino / SLOT_SPAN) - 1) ? this.passthroughCandidate(ino) : undefined);
  }

  /**
   * The layer file `ino` if it is worth a complete copy for passthrough: big enough, of a layer this server resolved
   * (see LayerDir.restored), not quarantined. It is granted passthrough only once its layer is proven (or not subject
   * to a proof), since a passthrough read never comes back to us to be refused.
   */
  private passthroughCandidate(ino: number): PassthroughCandidate | undefined {
    const dir = this.slotOf(ino);
    const { data } = dir;
    const node = ino % SLOT_SPAN;
    if (dir.restored || data.quarantined || !this.opts.passthrough?.assembled.wanted(data.tree, node)) return undefined;
    return {
      tree: data.tree, node, grant: PASSTHROUGH_PROOF_STATES.has(data.proof.state),
      where: () => `${dir.refName} layer ${data.descriptor.digest}: "${data.tree.pathOf(node)}"`,
    };
  }

  read(ino: number, fh: number, offset: number, size: number, ctx: RequestContext): Promise<Buffer | Buffer[]> {
    const r = this.when(ino, () => this.readNow(ino, fh, offset, size, ctx));
    return r instanceof Promise ? r : Promise.resolve(r);
  }

  private async readNow(ino: number, _fh: number, offset: number, size: number, ctx: RequestContext): Promise<Buffer | Buffer[]> {
    if (ino >= SLOT_SPAN) {
      const dir = this.slotOf(ino);
      if (dir.data.quarantined) throw Errno.EIO; // logged loudly when it was quarantined
      try {
        return await dir.data.content.read(ino % SLOT_SPAN, offset, size, ctx.signal);
      } catch (err) {
        if (err instanceof ContentError && err.code === 'EINTR') throw Errno.EINTR;
        throw Errno.EIO; // ContentError was logged with ref, layer, path and offsets
      }
    }
    const n = this.node(ino);
    switch (n.kind) {
      case 'info': return n.dir.info.subarray(offset, offset + size);
      case 'toc-digest': return Buffer.from(n.dir.data.tocDigest).subarray(offset, offset + size);
      case 'blob': return this.readBlob(n.dir, offset, size);
      default: throw Errno.EISDIR;
    }
  }

  private async readBlob(dir: LayerDir, offset: number, size: number): Promise<Buffer> {
    const digest = dir.data.descriptor.digest;
    let fh = this.blobHandles.get(digest);
    if (!fh) {
      fh = this.opts.resolver.blobFile(dir.data).then((path) => openFile(path, 'r'));
      this.blobHandles.set(digest, fh);
      fh.catch(() => this.blobHandles.delete(digest));
    }
    let handle: FileHandle;
    try {
      handle = await fh;
    } catch (err) {
      this.opts.logger?.error({ ref: dir.refName, layer: digest }, `blob of ${dir.refName} layer ${digest} cannot be served: ${(err as Error).message}`);
      throw Errno.EIO;
    }
    const len = Math.max(0, Math.min(size, dir.data.descriptor.size - offset));
    const buf = Buffer.allocUnsafe(len);
    const { bytesRead } = await handle.read(buf, 0, len, offset);
    return buf.subarray(0, bytesRead);
  }

  // ---- xattrs ----

  getxattr(ino: number, name: string, ctx: RequestContext): Buffer | Promise<Buffer> {
    return this.when(ino, () => this.getxattrNow(ino, name, ctx));
  }

  private getxattrNow(ino: number, name: string, ctx: RequestContext): Buffer {
    const visible = ino >= SLOT_SPAN && visibleXattr(name, ctx, this.userNamespace);
    const v = visible ? this.tree(ino).xattrsOf(ino % SLOT_SPAN)?.get(name) : undefined;
    if (v !== undefined) return v;
    // `ls -l` asks every file for its SELinux label and POSIX ACLs, and the kernel does not cache "no such
    // attribute". "Not supported" makes ls stop asking for the whole mount (it was 95k round trips for 50k files).
    // We never serve SELinux labels (they are the host's), and ACLs only where the image has them.
    if (name === 'security.selinux' || name.startsWith('system.')) throw Errno.EOPNOTSUPP;
    throw Errno.ENODATA;
  }

  listxattr(ino: number, ctx: RequestContext): string[] | Promise<string[]> {
    return this.when(ino, () => this.listxattrNow(ino, ctx));
  }

  private listxattrNow(ino: number, ctx: RequestContext): string[] {
    if (ino < SLOT_SPAN) return [];
    return [...(this.tree(ino).xattrsOf(ino % SLOT_SPAN)?.keys() ?? [])].filter((n) => visibleXattr(n, ctx, this.userNamespace));
  }

  // ---- the use/release protocol and the rest ----

  access(): void {
    // c/storage ≥ 1.54 checks existence with faccessat(F_OK): existence was already settled by LOOKUP.
  }

  create(parent: number, name: string): Promise<never> | never {
    return this.when(parent, () => this.createNow(parent, name));
  }

  private createNow(parent: number, name: string): never {
    const n = parent < SLOT_SPAN ? this.nodes.get(parent) : undefined;
    if (n?.kind === 'layer' && name === 'use') {
      n.dir.uses++;
      this.opts.logger?.info({ ref: n.dir.refName, key: n.dir.key, uses: n.dir.uses }, 'layer in use');
      throw Errno.ENOENT; // the only answer c/storage takes silently
    }
    throw new Errno(parent >= SLOT_SPAN ? 'EROFS' : 'ENOENT');
  }

  rmdir(parent: number, name: string): never {
    const n = parent < SLOT_SPAN ? this.nodes.get(parent) : undefined;
    if (n?.kind === 'ref' && isDigest(name)) {
      const dir = n.layers.get(name);
      if (dir && dir.uses > 0) dir.uses--;
      this.opts.logger?.info({ ref: n.ref, key: name, uses: dir?.uses ?? 0 }, 'layer released');
      // Zero uses keeps the layer: podman may come back through its diff symlink without a new "use".
      throw Errno.ENOENT;
    }
    throw new Errno(parent >= SLOT_SPAN ? 'EROFS' : 'ENOENT');
  }

  statfs(): StatfsReply {
    return { blocks: 0, bfree: 0, bavail: 0, files: this.nextIno, ffree: 0, bsize: 4096, frsize: 4096, namelen: 255 };
  }

  async destroy(): Promise<void> {
    for (const fh of this.blobHandles.values()) await fh.then((h) => h.close(), () => {});
    this.blobHandles.clear();
  }
}

/**
 * `user.overlay.*` (our synthetic opaque marker) is for rootless overlay mounts (`userxattr`), which ask as the
 * unprivileged mounter. Rootful overlay asks as root, reads `trusted.overlay.*` and hides only those from
 * containers: serving `user.overlay.opaque` to root would show containers an xattr a normal pull does not have.
 * In a user namespace, root is the unprivileged mounter (rootless podman's overlay asks as uid 0 there), and
 * every overlay uses `userxattr`, which hides `user.overlay.*` from containers itself.
 */
function visibleXattr(name: string, ctx: RequestContext, userNamespace: boolean): boolean {
  return !(name.startsWith('user.overlay.') && ctx.uid === 0 && !userNamespace);
}

/** Whether this process runs in a user namespace other than the initial one (whose uid map is the identity). */
function inUserNamespace(): boolean {
  try {
    return readFileSync('/proc/self/uid_map', 'utf8').trim().split(/\s+/).join(' ') !== '0 0 4294967295';
  } catch {
    return false;
  }
}

/** The directory name podman uses for a reference: standard base64 with padding. */
export function encodeRefName(ref: string): string {
  return Buffer.from(ref, 'utf8').toString('base64');
}

/** The reference behind a directory name, if it is canonical standard base64 of printable text. */
export function decodeRefName(name: string): string | undefined {
  if (name.length === 0 || name.length > 1024 || !/^[A-Za-z0-9+/]+={0,2}$/.test(name)) return undefined;
  const ref = Buffer.from(name, 'base64').toString('utf8');
  if (encodeRefName(ref) !== name || !/^[\x21-\x7e]+$/.test(ref)) return undefined;
  return ref;
}

interface LocalCounts {
  chunks: number;
  localChunks: number;
  total: number;
  local: number;
}

function emptyCounts(): LocalCounts {
  return { chunks: 0, localChunks: 0, total: 0, local: 0 };
}

/**
 * Count into `c` the data chunks of nodes from `from` on, stopping after the node where `maxChunks` were reached;
 * returns the node to continue from (the tree's node count once done).
 */
function countLocal(data: LayerData, from: number, c: LocalCounts, maxChunks = Number.POSITIVE_INFINITY): number {
  const tree = data.tree;
  const to = tree.nodeCount;
  let seen = 0;
  for (let n = from; n < to; n++) {
    if (seen >= maxChunks) return n;
    seen += tree.chunkCount(n);
    for (let i = 0; i < tree.chunkCount(n); i++) {
      const r = tree.chunkRange(n, i);
      if (r.zeros) continue;
      c.chunks++;
      c.total += r.end - r.start;
      if (data.isLocal(tree.chunkDigest(n, i))) {
        c.localChunks++;
        c.local += r.end - r.start;
      }
    }
  }
  return to;
}
