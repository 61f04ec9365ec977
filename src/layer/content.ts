import { TocfsError } from '../util/index.js';
import type { ChunkCache } from './cache.js';
import type { ChunkView, LayerTree } from './tree.js';
import { layerWork, type LayerWork } from './work.js';

/** The seam to compressed bytes (design.md §2): a registry blob, a local file, a cache. */
export interface BlobSource {
  readonly size: number;
  /** `deadline` (Date.now() ms): the whole read, retries included, ends by then. */
  readRanges(ranges: readonly { start: number; end: number }[], signal?: AbortSignal, deadline?: number): Promise<Buffer[]>;
}

/**
 * A read that cannot be served with verified bytes. The store answers EIO and logs `message`. Codes: FETCH_FAILED
 * (the source did not deliver: transient), VERIFY_FAILED (bytes that do not match the TOC), TOO_BIG, EINTR.
 */
export class ContentError extends TocfsError {}

export interface ContentLogger {
  error(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  info?(obj: object, msg: string): void;
  /** Each read that waits for the registry (log_level = "debug"): what a hint missed. */
  debug?(obj: object, msg: string): void;
}

export interface ContentOptions {
  /** Names the layer in log lines: "<ref> layer <digest>". */
  name: string;
  /** Uncompressed bytes to fetch ahead of a sequential reader. */
  readaheadBytes?: number;
  /**
   * On the first miss in a directory, fetch its other small files (≤ 64 KiB) in the same request, up to this many
   * compressed bytes (0: off). Containers read files of one directory together (a package's modules, a
   * directory of libraries): each would otherwise cost a round trip, and on the same request they cost only
   * their transfer time.
   */
  dirPrefetchBytes?: number;
  /**
   * On every miss, also fetch the small files (≤ NEARBY_FILE_MAX) stored within this many compressed bytes before and
   * after the missed chunk in the blob (0: off), in the request beside the miss's own (see obtain). A layer's tar keeps a package's files together,
   * and a starting program reads a package's files together: bench:realworld's read sets, replayed against their
   * TOCs, need 47 round trips instead of 289 (node), 142 instead of 365 (python) with 512 KiB, for ~25 % more bytes.
   */
  nearbyBytes?: number;
  /**
   * The neighbour window adapts between nearbyBytes and this (default: nearbyBytes, fixed): it doubles at a miss
   * when neighbours fetched since the previous miss were read, and halves when none were. On bench:realworld
   * (100 Mbit/s, 40 ms), 512 KiB..4 MiB cut python's own fetches 130 → 104, node's 40 → 35, but moved 6–11 MiB more
   * and the totals stayed within noise (medians of 4): the link's bandwidth, not its round trips, paid for it.
   */
  nearbyMaxBytes?: number;
  /**
   * A file up to this many bytes is fetched whole from its first miss on (0: off), in requests of about
   * WHOLE_FILE_BATCH compressed bytes, WHOLE_FILE_INFLIGHT at a time per layer, starting after the missed chunk.
   * Programs map executables and libraries and fault their pages in at scattered offsets: one round trip per
   * fault (bench:realworld: 374 serial 128 KiB requests for one gcc start) costs far more than moving the whole
   * file, and a file's first miss says the rest is likely needed.
   */
  wholeFileBytes?: number;
  /** Largest chunk we will decompress in memory. */
  maxChunkBytes?: number;
  /** A fetch that has not delivered within this bound fails (EIO) instead of hanging the reader (ms). */
  fetchTimeoutMs?: number;
  /** Called with every first read of a file (for prefetch ordering next time). */
  onFirstRead?: (node: number) => void;
  /** Every read of a file by a container, after onFirstRead: chunks [first, last] of `node` (for chunk-level hints). */
  onRead?: (node: number, first: number, last: number) => void;
  /** Called after every fetch from the source (for metrics). */
  onFetch?: (seconds: number, bytes: number, ok: boolean, background: boolean) => void;
  logger?: ContentLogger;
  /** Worker threads for big chunks and holes (default: the process's). */
  work?: LayerWork;
  /** Aborted when the daemon stops: fetches in flight end at once. */
  stop?: AbortSignal;
}

export interface ContentStats {
  /** Compressed bytes fetched from the source. */
  fetchedBytes: number;
  /** Uncompressed bytes found in the disk cache instead. */
  diskBytes: number;
  fetches: number;
  /** Uncompressed bytes handed to readers. */
  servedBytes: number;
  verifyFailures: number;
}

const MAX_CHUNK_DEFAULT = 512 << 20;
/** Uncompressed bytes processed between yields to the event loop (which also serves FUSE requests). */
const YIELD_BYTES = 512 << 10;

/** A chunk some reader waits for, and how to hand it over. */
interface Pending {
  node: number;
  chunk: ChunkView;
  resolve: (b: Buffer) => void;
  reject: (e: unknown) => void;
  /** Background work: straight to disk, not into memory, and not counted as a foreground fetch. */
  background?: boolean;
  /** Background work a reader is expected to want soon: kept in memory too. */
  memory?: boolean;
}

/** Compressed bytes per request of a whole-file fetch: short enough that a miss elsewhere waits little behind it. */
const WHOLE_FILE_BATCH = 1 << 20;
/** Whole-file requests in flight per layer: two keep the link busy across a round trip. */
const WHOLE_FILE_INFLIGHT = 2;
/** Files fetched whole are remembered (not to queue them twice) up to this many per layer. */
const WHOLE_FILE_MEMORY = 100_000;

/**
 * A reader going through a directory's files in name order (`find | sort | xargs`, tar, cp -r) gets the next files
 * fetched before it asks: up to DIR_AHEAD_BYTES compressed ahead of it, files up to DIR_AHEAD_FILE each (bigger ones
 * are for readahead and wholeFileBytes). Without it, each file of such a walk cost a round trip (bench:realworld,
 * bigread: 512 files of 256 KiB, 35 s with one 256 KiB request in flight).
 */
const DIR_AHEAD_BYTES = 4 << 20;
const DIR_AHEAD_FILE = 4 << 20;
/** Entries looked at beyond the file read, and behind it for the previous file (bounds the work per read). */
const DIR_AHEAD_SCAN = 1024;
/** Directories whose last first-read file is remembered (for detecting a walk). */
const DIR_AHEAD_MEMORY = 100_000;

/** Files up to this size are fetched with a sibling's first miss (dirPrefetchBytes). */
const SIBLING_MAX = 64 << 10;

/** Largest file fetched as a missed chunk's neighbour in the blob (nearbyBytes). */
const NEARBY_FILE_MAX = 256 << 10;
/** Tree nodes looked at on each side of a missed file for its neighbours (bounds the work per miss). */
const NEARBY_SCAN = 2048;
/** Neighbour files remembered as fetched and not read yet (for the window's adaptation) before the record restarts. */
const NEARBY_UNREAD_MAX = 100_000;

/** Zero chunks are served as slices of this (a hole can be gigabytes; reads are at most 1 MiB). */
const ZERO = Buffer.alloc(1 << 20);

/**
 * Serves file contents of one layer: chunk map → shared cache → fetch plan → decompress → verify (design.md §3).
 * Only verified bytes leave this class; everything else is a ContentError.
 */
export class LayerContent {
  readonly stats: ContentStats = { fetchedBytes: 0, diskBytes: 0, fetches: 0, servedBytes: 0, verifyFailures: 0 };
  /** Where each file's last read ended: a read starting there is sequential and earns readahead. */
  private readonly lastEnd = new Map<number, number>();
  private readonly readahead: number;
  /** See ContentOptions.wholeFileBytes (0: off). */
  private readonly wholeFile: number;
  private readonly maxChunk: number;
  private readonly timeoutMs: number;
  private readonly work: LayerWork;
  /** Directories whose small files were fetched along with a first miss (see dirPrefetchBytes). */
  private readonly batchedDirs = new Set<number>();
  /** The entry index of the last file read for the first time, per directory (see DIR_AHEAD_BYTES). */
  private readonly lastFirstRead = new Map<number, number>();
  /** Files whose whole content was queued on their first miss (see wholeFileBytes), and the queue. */
  private readonly wholeFiles = new Set<number>();
  private readonly wholeQueue: { node: number; indexes: number[] }[] = [];
  private wholeInflight = 0;
  /** Files a hint says are read only in part (see markReadInPart). */
  private readonly readInPart = new Set<number>();
  /**
   * The neighbour window now, and its bounds (see nearbyMaxBytes). Only while they differ: the files fetched as
   * neighbours and not read yet, and how many were read since the last miss.
   */
  private nearbyWindow: number;
  private readonly nearbyLeast: number;
  private readonly nearbyMost: number;
  private readonly nearbyUnread = new Set<number>();
  private nearbyRead = 0;
  /**
   * A hint or this node's record of first reads says what containers read next, and its fetch (rank 0) is under
   * way: a miss then fetches what it reads and its readahead, not its siblings and neighbours, which would only
   * take the link from rank 0 (bench:realworld, hinted: 54 MiB → 58 MiB before ready with them). Set by the
   * resolver, cleared by the prefetcher once rank 0 has settled.
   */
  guided = false;
  /** Foreground fetches in flight, and when the last one ended: background work yields to both. */
  foreground = 0;
  lastForegroundAt = 0;

  constructor(
    private readonly tree: LayerTree,
    private readonly source: BlobSource,
    private readonly cache: ChunkCache,
    private readonly opts: ContentOptions,
  ) {
    this.readahead = opts.readaheadBytes ?? 4 << 20;
    this.wholeFile = opts.wholeFileBytes ?? 0;
    this.maxChunk = opts.maxChunkBytes ?? MAX_CHUNK_DEFAULT;
    this.timeoutMs = opts.fetchTimeoutMs ?? 30_000;
    this.work = opts.work ?? layerWork();
    this.nearbyLeast = opts.nearbyBytes ?? 0;
    this.nearbyMost = this.nearbyLeast > 0 ? Math.max(this.nearbyLeast, opts.nearbyMaxBytes ?? 0) : 0;
    this.nearbyWindow = this.nearbyLeast;
  }

  /** One whole verified chunk (the DiffID proof asks for the chunks the disk cache lacks). */
  async chunkBytes(node: number, index: number): Promise<Buffer> {
    const c = this.tree.chunk(node, index);
    return Buffer.concat(await this.read(node, c.fileOffset, c.size, undefined, true));
  }

  /** Bytes [offset, offset+size) of regular file `node` (fewer at end of file), as verified slices. */
  async read(node: number, offset: number, size: number, signal?: AbortSignal, internal = false): Promise<Buffer[]> {
    const fileSize = this.tree.attr(node).size;
    const end = Math.min(offset + size, fileSize);
    if (offset >= end) return [];
    const first = this.tree.chunkAt(node, offset);
    const last = this.tree.chunkAt(node, end - 1);
    const wanted: number[] = [];
    for (let i = first; i <= last; i++) wanted.push(i);
    const sequential = offset === 0 || this.lastEnd.get(node) === offset;
    // Internal reads (the DiffID proof) are not a workload's access order.
    const firstRead = !internal && !this.lastEnd.has(node);
    if (firstRead) this.opts.onFirstRead?.(node);
    if (firstRead && this.nearbyUnread.delete(node)) this.nearbyRead++;
    if (!internal) this.opts.onRead?.(node, first, last);
    this.lastEnd.set(node, end);
    const ahead = sequential ? this.readaheadAfter(node, last) : [];
    const { results, missed, joined } = this.obtain(node, wanted, ahead);
    // A reader that waits (for its own fetch, or one under way): logged with the wait once served, at debug level.
    const waitFrom = (missed || joined) && !internal && this.opts.logger?.debug ? performance.now() : undefined;
    if (missed && !internal) {
      // A file a hint says is read only in part: its parts read come first in the background, the rest never
      // with a reader (fetched whole, python's 30 MiB libraries took the link from what it read next).
      if (fileSize <= this.wholeFile && !this.readInPart.has(node)) this.fetchWholeFile(node, first, last);
    }
    if (firstRead && this.wholeFile > 0) this.fetchDirAhead(node);
    const parts = await abortable(Promise.all(results), signal);
    if (waitFrom !== undefined) {
      this.opts.logger?.debug?.({ layer: this.opts.name, path: this.tree.pathOf(node), offset, size, chunks: [first, last], fetched: missed, waitedMs: Math.round(performance.now() - waitFrom) }, missed ? 'read miss: fetched' : 'read miss: waited for a fetch under way');
    }
    const out: Buffer[] = [];
    for (let k = 0; k < wanted.length; k++) {
      const c = this.tree.chunk(node, wanted[k]!);
      const data = parts[k];
      const from = Math.max(offset, c.fileOffset) - c.fileOffset;
      const to = Math.min(end, c.fileOffset + c.size) - c.fileOffset;
      // A zero chunk (verified, never fetched) becomes just the zeros this read needs, however big the hole.
      out.push(data === undefined ? zeroSlice(to - from) : data.subarray(from, to));
    }
    if (!internal) this.stats.servedBytes += end - offset;
    return out;
  }

  /**
   * Background fetch: make these chunks local (verified, in the disk cache) without touching the memory cache.
   * Chunks already on disk, in memory or in flight are skipped. Resolves once the chunks are verified (readers
   * get them from the disk cache's write queue from then on) with the compressed bytes fetched and a promise
   * for their arrival on disk; rejects when the fetch fails (the caller retries later).
   */
  async fetchToDisk(wanted: readonly { node: number; index: number }[], opts: { memory?: boolean } = {}): Promise<{ bytes: number; written: Promise<void> }> {
    const items: Pending[] = [];
    const waits: Promise<unknown>[] = [];
    for (const { node, index } of wanted) {
      const c = this.tree.chunk(node, index);
      // isLocal, not get: background bookkeeping must not count as cache hits in status and metrics.
      if (c.zeros || this.cache.isLocal(c.digest)) continue;
      const inflight = this.cache.pending(c.digest);
      if (inflight) {
        waits.push(inflight.catch(() => undefined));
        continue;
      }
      const { item, promise } = this.newFetch(node, c, true);
      if (opts.memory) item.memory = true;
      items.push(item);
      waits.push(promise);
    }
    const { bytes, writes } = items.length > 0 ? await this.fetch(items) : { bytes: 0, writes: [] };
    await Promise.all(waits);
    return { bytes, written: Promise.all(writes).then(() => undefined) };
  }

  /**
   * Bring these chunks from the disk cache into memory ahead of a reader (the files a container read first last
   * time, on a warm start): read and verified on a worker, so the FUSE thread neither blocks on the disk nor hashes.
   * Chunks in memory or in flight are skipped; readers of a chunk being loaded join its load. Resolves with the
   * bytes loaded; never rejects (a chunk that cannot be loaded is read the usual way).
   */
  async loadFromDisk(wanted: readonly { node: number; index: number }[]): Promise<number> {
    const items: Pending[] = [];
    const waits: Promise<Buffer>[] = [];
    for (const { node, index } of wanted) {
      const c = this.tree.chunk(node, index);
      if (c.zeros || this.cache.has(c.digest) || !this.cache.disk?.has(c.digest)) continue;
      const { item, promise } = this.newFetch(node, c, true);
      item.memory = true;
      items.push(item);
      waits.push(promise);
    }
    if (items.length === 0) return 0;
    await this.fill(items, true);
    const loaded = await Promise.all(waits.map((p) => p.then((b) => b.length, () => 0)));
    return loaded.reduce((a, b) => a + b, 0);
  }

  /** The memory cache's size (what loads ahead of readers must stay well within). */
  get memoryCacheBytes(): number {
    return this.cache.maxBytes;
  }

  /** Verified bytes queued for the disk cache and not written yet. */
  get pendingDiskBytes(): number {
    return this.cache.disk?.pendingBytes ?? 0;
  }

  /**
   * These files are read only in part (a hint names the byte ranges read): a miss in one fetches what it reads,
   * not the whole file (wholeFileBytes), since the parts read are on their way with the background's rank 0.
   */
  markReadInPart(nodes: Iterable<number>): void {
    for (const n of nodes) this.readInPart.add(n);
  }

  /** On disk and neither in memory nor on its way there (a zeros chunk never is). */
  onDiskOnly(node: number, index: number): boolean {
    const c = this.tree.chunkRange(node, index);
    if (c.zeros) return false;
    const digest = this.tree.chunkDigest(node, index);
    return !this.cache.has(digest) && (this.cache.disk?.has(digest) ?? false);
  }

  /** In memory or on disk (no hit counted). */
  isLocal(digest: string): boolean {
    return this.cache.isLocal(digest);
  }

  private readaheadAfter(node: number, last: number): number[] {
    const ahead: number[] = [];
    let budget = this.readahead;
    for (let i = last + 1; i < this.tree.chunkCount(node) && budget > 0; i++) {
      const c = this.tree.chunk(node, i);
      budget -= c.size;
      if (!c.zeros && !this.cache.has(c.digest)) ahead.push(i);
    }
    return ahead;
  }

  /**
   * Promises for the chunks `wanted` (in order). Cached and in-flight chunks are reused; the rest, plus the
   * readahead chunks, go out in one batch (the source merges nearby ranges into multi-range requests).
   */
  private obtain(node: number, wanted: number[], ahead: number[]): { results: Promise<Buffer | undefined>[]; missed: boolean; joined: boolean } {
    const results: Promise<Buffer | undefined>[] = [];
    let joined = false;
    // What the reader waits for goes in a request of its own, ahead of the speculative rest (readahead, siblings,
    // neighbours) in a second one: in one request the reader waited for all of it (on a 100 Mbit/s link, up to 1 MiB of
    // neighbours is 85 ms on top of a 40 ms round trip).
    const own: Pending[] = [];
    const extra: Pending[] = [];
    const schedule = (into: Pending[], c: ChunkView, of = node): Promise<Buffer> => {
      const { item, promise } = this.newFetch(of, c);
      into.push(item);
      return promise;
    };
    for (const i of wanted) {
      const c = this.tree.chunk(node, i);
      if (c.zeros) {
        results.push(this.zeros(node, c));
        continue;
      }
      const cached = this.cache.get(c.digest);
      if (cached) {
        results.push(Promise.resolve(cached));
        continue;
      }
      this.cache.misses++;
      const inflight = this.cache.pending(c.digest);
      if (inflight) joined = true;
      results.push(inflight ?? schedule(own, c));
    }
    for (const i of ahead) {
      const c = this.tree.chunk(node, i);
      if (!this.cache.has(c.digest)) schedule(extra, c);
    }
    const missed = own.length > 0 || extra.length > 0;
    if (missed) {
      // The blob range of this file's chunks being fetched (before siblings join).
      const mine = own.length > 0 ? own : extra;
      const start = mine[0]!.chunk.start;
      const end = mine[mine.length - 1]!.chunk.end;
      if (!this.guided) {
        for (const { node: sibling, chunk } of this.siblings(node)) schedule(extra, chunk, sibling);
        if (own.length > 0) this.adaptNearby();
        const adaptive = this.nearbyMost > this.nearbyLeast;
        for (const { node: near, chunk } of this.nearby(node, start, end)) {
          schedule(extra, chunk, near);
          if (adaptive) this.nearbyUnread.add(near);
        }
        // Bookkeeping only: a layer whose neighbours are never read must not grow it without bound.
        if (this.nearbyUnread.size > NEARBY_UNREAD_MAX) this.nearbyUnread.clear();
      }
      if (own.length > 0) void this.fill(own);
      if (extra.length > 0) void this.fill(extra);
    }
    return { results, missed, joined };
  }

  /**
   * Queue the chunks of `node` that are not local yet, after the missed ones [first, last] and then from the
   * start, in requests of WHOLE_FILE_BATCH compressed bytes (see ContentOptions.wholeFileBytes). Once per file.
   */
  private fetchWholeFile(node: number, first: number, last: number): void {
    if (this.wholeFiles.has(node) || this.wholeFiles.size >= WHOLE_FILE_MEMORY) return;
    this.wholeFiles.add(node);
    const n = this.tree.chunkCount(node);
    let batch: number[] = [];
    let bytes = 0;
    for (let k = 0; k < n; k++) {
      const i = (last + 1 + k) % n;
      if (i >= first && i <= last) continue;
      const c = this.tree.chunk(node, i);
      if (c.zeros || this.cache.present(c.digest)) continue;
      if (batch.length > 0 && bytes + (c.end - c.start) > WHOLE_FILE_BATCH) {
        this.wholeQueue.push({ node, indexes: batch });
        batch = [];
        bytes = 0;
      }
      batch.push(i);
      bytes += c.end - c.start;
    }
    if (batch.length > 0) this.wholeQueue.push({ node, indexes: batch });
    this.pumpWholeFiles();
  }

  /**
   * `node` is read for the first time: if the file its directory had read for the first time before was the
   * regular file just before it (a walk in name order), fetch the files after it that are not local or on their
   * way, up to DIR_AHEAD_BYTES (see there). Called on hits too, so the walk keeps the next files coming.
   */
  private fetchDirAhead(node: number): void {
    const tree = this.tree;
    const dir = tree.parentOf(node);
    const i = tree.indexInParent(node);
    if (i < 0) return;
    const prev = this.lastFirstRead.get(dir);
    if (this.lastFirstRead.size >= DIR_AHEAD_MEMORY && prev === undefined) this.lastFirstRead.clear();
    this.lastFirstRead.set(dir, i);
    if (prev === undefined || prev >= i || i - prev > DIR_AHEAD_SCAN) return;
    for (let k = prev + 1; k < i; k++) if (tree.isRegular(tree.childNode(dir, k)) && tree.sizeOf(tree.childNode(dir, k)) > 0) return;
    const items: Pending[] = [];
    let bytes = 0;
    let span = 0;
    const end = Math.min(tree.childCount(dir), i + 1 + DIR_AHEAD_SCAN);
    for (let k = i + 1; k < end && bytes < DIR_AHEAD_BYTES && span < 2 * DIR_AHEAD_BYTES; k++) {
      const f = tree.childNode(dir, k);
      if (!tree.isRegular(f) || tree.sizeOf(f) > DIR_AHEAD_FILE) continue;
      for (let c = 0; c < tree.chunkCount(f); c++) {
        const chunk = tree.chunk(f, c);
        if (chunk.zeros) continue;
        span += chunk.end - chunk.start;
        if (this.cache.present(chunk.digest)) continue;
        items.push(this.newFetch(f, chunk).item);
        bytes += chunk.end - chunk.start;
      }
    }
    if (items.length > 0) void this.fill(items);
  }

  /**
   * A fetch of `chunk` that readers join: tracked in the cache until it settles, its settling handed to whoever
   * sends `item`. A failure reaches whoever reads the chunk, never the process as an unhandled rejection (readahead,
   * siblings and speculative fetches have no reader yet).
   */
  private newFetch(node: number, chunk: ChunkView, background = false): { item: Pending; promise: Promise<Buffer> } {
    let resolve!: (b: Buffer) => void;
    let reject!: (e: unknown) => void;
    const p = new Promise<Buffer>((res, rej) => { resolve = res; reject = rej; });
    p.catch(() => {});
    return { item: { node, chunk, resolve, reject, ...(background ? { background } : {}) }, promise: this.cache.track(chunk.digest, p) };
  }

  /** Start queued whole-file requests while fewer than WHOLE_FILE_INFLIGHT are in flight. */
  private pumpWholeFiles(): void {
    while (this.wholeInflight < WHOLE_FILE_INFLIGHT && this.wholeQueue.length > 0) {
      const { node, indexes } = this.wholeQueue.shift()!;
      const items: Pending[] = [];
      for (const i of indexes) {
        const c = this.tree.chunk(node, i);
        // Readers may have fetched some meanwhile (a later fault jumps the queue with a request of its own).
        if (this.cache.present(c.digest)) continue;
        items.push(this.newFetch(node, c).item);
      }
      if (items.length === 0) continue;
      this.wholeInflight++;
      void this.fill(items).finally(() => {
        this.wholeInflight--;
        this.pumpWholeFiles();
      });
    }
  }

  /**
   * The chunks of the small files next to `node` that are not local yet, up to dirPrefetchBytes compressed: once per
   * directory, on its first miss (see ContentOptions.dirPrefetchBytes).
   */
  private siblings(node: number): { node: number; chunk: ChunkView }[] {
    let budget = this.opts.dirPrefetchBytes ?? 0;
    const dir = this.tree.parentOf(node);
    if (budget <= 0 || this.batchedDirs.has(dir) || this.batchedDirs.size >= 100_000) return [];
    this.batchedDirs.add(dir);
    const out: { node: number; chunk: ChunkView }[] = [];
    for (let i = 0; i < this.tree.childCount(dir) && budget > 0; i++) {
      const sibling = this.tree.childNode(dir, i);
      if (sibling === node || !this.tree.isRegular(sibling) || this.tree.sizeOf(sibling) > SIBLING_MAX) continue;
      if (this.lastEnd.has(sibling)) continue; // read already: what it needs is cached or on its way
      for (let k = 0; k < this.tree.chunkCount(sibling); k++) {
        const c = this.tree.chunk(sibling, k);
        if (c.zeros || this.cache.present(c.digest)) continue;
        if (c.end - c.start > budget) return out;
        budget -= c.end - c.start;
        out.push({ node: sibling, chunk: c });
      }
    }
    return out;
  }

  /** A miss: widen the neighbour window if the last one's neighbours were read, narrow it if none were. */
  private adaptNearby(): void {
    if (this.nearbyMost <= this.nearbyLeast) return;
    this.nearbyWindow = this.nearbyRead > 0
      ? Math.min(this.nearbyWindow * 2, this.nearbyMost)
      : Math.max(Math.floor(this.nearbyWindow / 2), this.nearbyLeast);
    this.nearbyRead = 0;
  }

  /**
   * The chunks of small files stored within the neighbour window (ContentOptions.nearbyBytes, nearbyMaxBytes) before
   * `start` and after `end` in the blob that are neither local nor on their way nor read already. Node numbers follow
   * the TOC, which follows the blob, so the neighbours are found by walking node numbers away from `node` until one
   * lies beyond the window (a TOC in another order only makes the walk find fewer).
   */
  private nearby(node: number, start: number, end: number): { node: number; chunk: ChunkView }[] {
    const window = this.nearbyWindow;
    if (window <= 0) return [];
    const out: { node: number; chunk: ChunkView }[] = [];
    const tree = this.tree;
    const walk = (step: 1 | -1): void => {
      for (let k = 1, n = node + step; k <= NEARBY_SCAN && n >= 0 && n < tree.nodeCount; k++, n += step) {
        if (!tree.isRegular(n) || tree.chunkCount(n) === 0) continue;
        const first = tree.chunkRange(n, 0);
        const last = tree.chunkRange(n, tree.chunkCount(n) - 1);
        if (step === 1 ? first.start >= end + window : last.end <= start - window) return;
        if (tree.sizeOf(n) > NEARBY_FILE_MAX || this.lastEnd.has(n)) continue;
        for (let i = 0; i < tree.chunkCount(n); i++) {
          const r = tree.chunkRange(n, i);
          if (r.zeros || r.end <= start - window || r.start >= end + window) continue;
          const c = tree.chunk(n, i);
          if (!this.cache.present(c.digest)) out.push({ node: n, chunk: c });
        }
      }
    };
    walk(-1);
    walk(1);
    return out;
  }

  /**
   * Misses: the disk cache first (each chunk re-verified there), then one batched fetch for the rest. `offThread`:
   * even small chunks are read on a worker (work ahead of readers must not hold the FUSE thread on the disk).
   */
  private async fill(batch: Pending[], offThread = false): Promise<void> {
    const disk = this.cache.disk;
    let rest = batch;
    if (disk) {
      const found = await Promise.all(batch.map((b) => (disk.has(b.chunk.digest) ? disk.get(b.chunk.digest, offThread, b.chunk.size).catch(() => undefined) : undefined)));
      rest = [];
      batch.forEach((b, i) => {
        const data = found[i];
        if (data && data.length === b.chunk.size) {
          this.stats.diskBytes += data.length;
          this.cache.set(b.chunk.digest, data);
          b.resolve(data);
        } else {
          rest.push(b);
        }
      });
    }
    if (rest.length > 0) await this.fetch(rest);
  }

  /**
   * One request for a batch of chunks (of any files of this layer); each waiter gets its verified chunk or an
   * error. Returns the compressed bytes it fetched and the disk writes of background chunks still under way.
   */
  private async fetch(batch: Pending[]): Promise<{ bytes: number; writes: Promise<void>[] }> {
    const tooBig = batch.filter((b) => b.chunk.size > this.maxChunk);
    for (const b of tooBig) {
      b.reject(this.error(b.node, b.chunk, `chunk of ${b.chunk.size} bytes exceeds the ${this.maxChunk}-byte in-memory limit`, undefined, 'TOO_BIG'));
    }
    const items = batch.filter((b) => b.chunk.size <= this.maxChunk);
    if (items.length === 0) return { bytes: 0, writes: [] };
    let buffers: Buffer[];
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const signal = this.opts.stop ? AbortSignal.any([timeout, this.opts.stop]) : timeout;
    const background = items.every((b) => b.background);
    if (!background) this.foreground++;
    const t0 = process.hrtime.bigint();
    let ok = false;
    try {
      this.stats.fetches++;
      buffers = await this.source.readRanges(items.map((b) => ({ start: b.chunk.start, end: b.chunk.end })), signal, Date.now() + this.timeoutMs);
      ok = true;
    } catch (err) {
      if (this.opts.stop?.aborted) {
        // Not a fault: one line for the batch, not an error per chunk on every stop with fetches under way.
        this.opts.logger?.info?.({ layer: this.opts.name, chunks: items.length }, `${this.opts.name}: ${items.length} chunk fetch(es) abandoned: the daemon is stopping`);
        for (const b of items) b.reject(this.error(b.node, b.chunk, 'the daemon is stopping', err, 'FETCH_FAILED', false));
        return { bytes: 0, writes: [] };
      }
      const why = timeout.aborted ? `the registry did not deliver within ${this.timeoutMs / 1000} s (fetch_timeout); check the registry and the network, or raise fetch_timeout`
        : `fetch failed: ${(err as Error).message}`;
      for (const b of items) b.reject(this.error(b.node, b.chunk, why, err, 'FETCH_FAILED'));
      return { bytes: 0, writes: [] };
    } finally {
      if (!background) {
        this.foreground--;
        this.lastForegroundAt = Date.now();
      }
      const bytes = ok ? items.reduce((n, b) => n + b.chunk.end - b.chunk.start, 0) : 0;
      this.opts.onFetch?.(Number(process.hrtime.bigint() - t0) / 1e9, bytes, ok, background);
    }
    const writes: Promise<void>[] = [];
    let fetched = 0;
    let sinceYield = 0;
    for (const [k, b] of items.entries()) {
      // Decompressing and hashing a 2 MiB batch is ~10 ms of CPU: let waiting FUSE requests in between chunks.
      if (sinceYield >= YIELD_BYTES) {
        sinceYield = 0;
        await new Promise((r) => setImmediate(r));
      }
      sinceYield += b.chunk.size;
      const compressed = buffers[k]!;
      fetched += compressed.length;
      if (compressed.length !== b.chunk.end - b.chunk.start) {
        b.reject(this.error(b.node, b.chunk, `source returned ${compressed.length} bytes for ${b.chunk.end - b.chunk.start}`, undefined, 'FETCH_FAILED'));
        continue;
      }
      try {
        // Big chunks are decompressed and hashed on a worker thread (a 512 MiB chunk is seconds of CPU).
        const data = await this.work.verifyChunk(this.where(b.node, b.chunk), b.chunk, compressed);
        if (!b.background || b.memory) this.cache.set(b.chunk.digest, data);
        const write = this.cache.disk?.put(b.chunk.digest, data);
        // Until the write is done, the disk cache serves the chunk from its queue (a reader never refetches it).
        if (write && b.background) writes.push(write);
        b.resolve(data);
      } catch (err) {
        this.stats.verifyFailures++;
        b.reject(this.error(b.node, b.chunk, (err as Error).message, err, 'VERIFY_FAILED'));
      }
    }
    // Background fetches are done when their chunks are on disk (a layer is "fully local" only then).
    this.stats.fetchedBytes += fetched;
    return { bytes: fetched, writes };
  }

  /**
   * Verify a zero chunk's digest; undefined stands for "zeros" (read() makes the slice it needs). A big hole is
   * hashed once, on a worker thread.
   */
  private async zeros(node: number, c: ChunkView): Promise<undefined> {
    let digest: string;
    try {
      digest = await this.work.zerosDigest(c.size);
    } catch (err) {
      throw this.error(node, c, `cannot check a zeros chunk: ${(err as Error).message}`, err, 'VERIFY_FAILED');
    }
    if (digest !== c.digest) {
      this.stats.verifyFailures++;
      throw this.error(node, c, `marked zeros, but its digest ${c.digest} is not that of ${c.size} zero bytes`, undefined, 'VERIFY_FAILED');
    }
    return undefined;
  }

  private where(node: number, c: ChunkView): string {
    return `${this.opts.name}: "${this.tree.pathOf(node)}" chunk at file offset ${c.fileOffset} (blob [${c.start}, ${c.end}))`;
  }

  private error(node: number, c: ChunkView, why: string, cause: unknown, code: 'FETCH_FAILED' | 'VERIFY_FAILED' | 'TOO_BIG', log = true): ContentError {
    const msg = why.startsWith(this.opts.name) ? why : `${this.where(node, c)}: ${why}`;
    if (log) this.opts.logger?.error({ layer: this.opts.name, path: this.tree.pathOf(node), fileOffset: c.fileOffset, blobStart: c.start, blobEnd: c.end }, msg);
    return new ContentError(code, msg, cause === undefined ? undefined : { cause });
  }
}

function zeroSlice(n: number): Buffer {
  return n <= ZERO.length ? ZERO.subarray(0, n) : Buffer.alloc(n);
}

function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(new ContentError('EINTR', 'read interrupted'));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new ContentError('EINTR', 'read interrupted'));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then((v) => { signal.removeEventListener('abort', onAbort); resolve(v); },
      (e) => { signal.removeEventListener('abort', onAbort); reject(e); });
  });
}
