import { TocfsError } from '../util/index.js';
import type { LayerContent } from './content.js';
import type { LayerTree } from './tree.js';

/** Files up to this size are fetched first: they cost a round trip each when a container reads them. */
const SMALL_FILE = 256 << 10;
/** Verified background chunks allowed to wait for their disk write before fetching pauses. */
const MAX_UNWRITTEN = 64 << 20;
/**
 * Rank-0 chunks (what the container read first last time, or hinted) are kept in memory as well as on disk, up to
 * this share of the memory cache per layer: the reader that follows then finds them there instead of opening and
 * hashing one disk-cache file per chunk while it waits (python's imports from a warm cache: 3.4 s -> see
 * docs/benchmarks.md).
 */
const RANK0_MEMORY_SHARE = 4;
/**
 * Longest wait of a hinted layer's other work for the store to be idle, per batch (see LayerPrefetcher.run): a
 * container that keeps the store busy gets the rest of the layer at one batch per this many ms at most.
 */
const HINTED_PAUSE_MS = 1000;
/** A layer none of whose readers fetched for this long counts as one the container is not working in. */
const OTHER_LAYER_QUIET_MS = 2000;
/**
 * Longest wait of such a layer's background work per batch while the container reads other layers: it still gets
 * a batch every 10 s (its DiffID proof needs every byte), ~0.2 MiB/s instead of a share of the link.
 */
const OTHER_LAYER_PAUSE_MS = 10_000;
/** Chunks loaded from disk per worker task, and tasks in flight, when rank-0 chunks are brought into memory. */
const LOAD_BATCH_BYTES = 1 << 20;
/** Local chunks looked at between yields to the event loop when a batch skips them. */
const LOCAL_SCAN_SLICE = 2000;
const LOAD_INFLIGHT = 2;

/**
 * Global pacing of background work across layers. When no reader has fetched for `quietMs`, up to `concurrency`
 * batches of `batchBytes` run at once. While readers are fetching, exactly one small batch (`busyBatchBytes`)
 * may be in flight: it keeps the background moving during a container's start (whose reads never pause for long)
 * while adding at most one small transfer ahead of a foreground read on a slow link.
 */
export class BackgroundScheduler {
  private running = 0;
  private readonly contents = new Set<LayerContent>();
  /** Acquirers waiting, by rank. */
  private readonly waiting = [0, 0, 0];
  /** Layers whose rank-0 work is not done yet (see rank0Start). */
  private rank0Layers = 0;
  /** TOCs being fetched and processed now (see lookupStart). */
  private lookups = 0;
  private lastActivity = -1;
  private stopped = false;
  private lastActivityAt = 0;

  constructor(
    readonly concurrency = 2,
    private readonly opts: {
      quietMs?: number; batchBytes?: number; busyBatchBytes?: number; pollMs?: number;
      /**
       * While a reader fetched within this many ms, small files and the rest start no batch (default 1500): every
       * byte they put on the link queues ahead of the reader's next miss.
       */
      readerQuietMs?: number;
      /** ...but a batch that waited this long (ms, default 5000) goes anyway, one at a time: never starved. */
      readerMaxWaitMs?: number;
      /** After that, until readers have not fetched for this long (ms, default 10000): one small batch at a time. */
      readerCalmMs?: number;
      /** A count of filesystem requests served so far: any change means a container is using the store. */
      activity?: () => number;
      /** Longest pause of CPU-heavy work for a busy filesystem, per piece (ms; default 1000: a 256 MiB proof then
       * takes ~4 min on a filesystem that is never quiet, and barely touches a starting container). */
      maxPauseMs?: number;
    } = {},
  ) {}

  register(c: LayerContent): void {
    this.contents.add(c);
  }

  /** The daemon is stopping: every waiting and future acquire() and slot() rejects, pace() too. */
  stop(): void {
    this.stopped = true;
  }

  get stopping(): boolean {
    return this.stopped;
  }

  checkStopped(): void {
    if (this.stopped) throw new TocfsError('STOPPED', 'the daemon is stopping; background work resumes on the next start');
  }

  /** A reader is fetching now, or was within `quiet` ms (default: the quiet period). */
  busy(quiet = this.opts.quietMs ?? 250): boolean {
    const now = Date.now();
    for (const c of this.contents) if (fetchedWithin(c, quiet, now)) return true;
    return false;
  }

  /**
   * Readers fetch from other layers now (within the quiet period) while none fetched from `c` for OTHER_LAYER_QUIET_MS:
   * the container works in other layers, and `c`'s background bytes would only queue ahead of their misses.
   */
  othersReading(c: LayerContent): boolean {
    const now = Date.now();
    if (fetchedWithin(c, OTHER_LAYER_QUIET_MS, now)) return false;
    const quiet = this.opts.quietMs ?? 250;
    for (const d of this.contents) if (d !== c && fetchedWithin(d, quiet, now)) return true;
    return false;
  }

  /** Resolve once othersReading(c) is false, or after `maxMs` at the latest. */
  whileOthersRead(c: LayerContent, maxMs: number): Promise<void> {
    return this.waitWhile(() => this.othersReading(c), maxMs);
  }

  /**
   * Nobody fetches and nobody used the filesystem within the quiet period. CPU-heavy work waits for this: on a
   * 2-vCPU machine the DiffID proof running beside a starting container made its reads of already local files
   * 5–10× slower (every FUSE request queued behind hashing), measured with bench:coldstart's warm variant.
   */
  idle(): boolean {
    if (this.busy()) return false;
    const now = Date.now();
    const a = this.opts.activity?.();
    if (a !== undefined && a !== this.lastActivity) {
      this.lastActivity = a;
      this.lastActivityAt = now;
    }
    return now - this.lastActivityAt >= (this.opts.quietMs ?? 250);
  }

  /** Resolve once the store is idle (see idle()), or after `maxMs` at the latest. */
  whenIdle(maxMs = Infinity): Promise<void> {
    return this.waitWhile(() => !this.idle(), maxMs);
  }

  /**
   * Resolve once the store has stayed idle for `quietMs` on end, or after `maxMs` at the latest: for work that can
   * wait for the end of a container's start, not just for a pause in it (between podman's pull and its run).
   */
  async whenIdleFor(quietMs: number, maxMs: number): Promise<void> {
    const until = Date.now() + maxMs;
    let since: number | undefined;
    while (Date.now() < until) {
      this.checkStopped();
      if (!this.idle()) since = undefined;
      else if (since === undefined) since = Date.now();
      else if (Date.now() - since >= quietMs) return;
      await new Promise((r) => setTimeout(r, Math.max(this.opts.pollMs ?? 10, 50)));
    }
  }

  /** Poll until `busy` is false or `maxMs` have passed (rejects once the daemon stops). */
  private async waitWhile(busy: () => boolean, maxMs: number): Promise<void> {
    const until = Date.now() + maxMs;
    while (busy() && Date.now() < until) {
      this.checkStopped();
      await new Promise((r) => setTimeout(r, this.opts.pollMs ?? 10));
    }
  }

  /**
   * Wait for a background slot; returns the byte budget of the batch to run in it, and its release. Rank 0 (files
   * the image hints or that were read first last time) is urgent: it runs at full speed even while readers fetch,
   * since it is what they read next. Other work starts nothing while readers fetch and for `readerQuietMs` after
   * (a container starting: its misses, with the neighbours and siblings they bring, are what it needs; bytes queued
   * ahead of them only delay them), except a batch that has waited `readerMaxWaitMs`, one at a time. Then one batch
   * of `busyBatchBytes` at a time until readers have been quiet for `readerCalmMs`, then every slot at full size.
   * A slot goes to the best rank waiting.
   */
  async acquire(rank: Rank = 2): Promise<{ budget: number; release: () => void }> {
    this.waiting[rank]++;
    try {
      return await this.grant(rank);
    } finally {
      this.waiting[rank]--;
    }
  }

  private async grant(rank: Rank): Promise<{ budget: number; release: () => void }> {
    const since = Date.now();
    for (;;) {
      this.checkStopped();
      // While a container's reads fetch, only its misses (and rank 0, what it reads next) use the link: on a shared
      // link every background byte queues ahead of the reader's next miss. Measured on bench:realworld (one run
      // each): node's start fetched the whole image (130 MiB, 17.0 s) beside small-file batches, 64 MiB (13.9 s) with
      // them held while it read; python went 22.0 s -> 18.3 s with no background work at all, since batches at full
      // size in its pauses put 4 MiB (330 ms) ahead of its next miss. So: nothing while readers fetch (and for
      // readerQuietMs after), then one small batch at a time until they have been quiet for readerCalmMs.
      const reading = rank > 0 && this.busy(this.opts.readerQuietMs ?? 1500);
      const recent = rank > 0 && this.busy(this.opts.readerCalmMs ?? 10_000);
      const starved = reading && Date.now() - since >= (this.opts.readerMaxWaitMs ?? 5000);
      // Across layers too, hinted and first-read files go before small files, and those before the rest.
      const better = this.waiting.slice(0, rank).some((n) => n > 0);
      // While any layer still has hinted or first-read work (rank 0), nothing less urgent starts: that work is
      // exactly what the starting container reads next, and it needs the whole link.
      // Nor while a layer's TOC is fetched and processed: podman's pull waits for that, and background batches
      // slowed it (bench:realworld, python: the 31k-entry TOC took 3 s instead of 1 s beside the base layer's
      // background fetch, which took the CPU from the TOC worker as well as the link).
      const held = rank > 0 && (this.rank0Layers > 0 || this.lookups > 0);
      // Rank 0 gets one slot more: with two, both batches tend to finish together and the link idles for a round
      // trip and their processing (bench:coldstart, hinted image: ~80 % busy).
      const limit = rank === 0 ? this.concurrency + 1 : reading ? (starved ? 1 : 0) : recent ? 1 : this.concurrency;
      if (!better && !held && this.running < limit) {
        this.running++;
        let released = false;
        return {
          budget: recent ? (this.opts.busyBatchBytes ?? 256 << 10) : (this.opts.batchBytes ?? 2 << 20),
          release: () => {
            if (!released) this.running--;
            released = true;
          },
        };
      }
      await new Promise((r) => setTimeout(r, this.opts.pollMs ?? 10));
    }
  }

  /** A layer's TOC is being fetched and processed (a lookup waits); call the returned function when that is over. */
  lookupStart(): () => void {
    return this.hold('lookups');
  }

  /** A layer starts its rank-0 work; call the returned function once all of it has settled. */
  rank0Start(): () => void {
    return this.hold('rank0Layers');
  }

  /** Count one holder of `what` until the returned function is called (once; later calls do nothing). */
  private hold(what: 'lookups' | 'rank0Layers'): () => void {
    this[what]++;
    let done = false;
    return () => {
      if (!done) this[what]--;
      done = true;
    };
  }

  /**
   * Run `work` (CPU-heavy background work such as the DiffID proof) in a slot once the store is idle; `work`
   * gets `pace`, to await between pieces: while the filesystem is in use it gives its slot back and pauses, at
   * most `maxPauseMs` at a time, so a busy host slows the work down but never starves it. `urgent` work (a lookup
   * waits for it) neither waits for idleness nor pauses.
   */
  async slot<T>(work: (pace: () => Promise<void>) => Promise<T>, urgent = false): Promise<T> {
    const maxPause = this.opts.maxPauseMs ?? 1000;
    const idleOrLate = () => (urgent ? Promise.resolve() : this.whenIdle(maxPause));
    const take = async () => {
      while (this.running >= this.concurrency) {
        this.checkStopped();
        await new Promise((r) => setTimeout(r, this.opts.pollMs ?? 10));
      }
      this.checkStopped();
      this.running++;
    };
    await idleOrLate();
    await take();
    let held = true;
    const pace = async (): Promise<void> => {
      this.checkStopped();
      if (urgent || this.idle()) return;
      this.running--;
      held = false;
      await idleOrLate();
      await take();
      held = true;
    };
    try {
      return await work(pace);
    } finally {
      if (held) this.running--;
    }
  }
}

/** A reader of `c` is fetching now, or its last fetch ended less than `ms` before `now`. */
function fetchedWithin(c: LayerContent, ms: number, now: number): boolean {
  return c.foreground > 0 || now - c.lastForegroundAt < ms;
}

/**
 * For chunks asked in file order: whether a chunk's bytes [start, end) meet one of `ranges`. Linear in chunks plus
 * ranges (a hostile hint may list thousands of ranges for a file of thousands of chunks).
 */
function rangeCursor(ranges: readonly (readonly [number, number])[]): (r: { start: number; end: number }) => boolean {
  const merged: [number, number][] = [];
  for (const [s, e] of [...ranges].sort((a, b) => a[0] - b[0])) {
    const last = merged[merged.length - 1];
    if (last && s <= last[1]) last[1] = Math.max(last[1], e);
    else merged.push([s, e]);
  }
  let k = 0;
  return (r) => {
    while (k < merged.length && merged[k]![1] <= r.start) k++;
    return k < merged.length && merged[k]![0] < r.end;
  };
}

/** Chunks to fetch, in order: parallel arrays of `length` entries. */
interface FetchOrder {
  node: Uint32Array;
  index: Uint32Array;
  rank: Uint8Array;
  /** Compressed bytes. */
  bytes: Float64Array;
  length: number;
}

/** Background priority: 0 hinted or read first last time, 1 small files, 2 the rest. */
export type Rank = 0 | 1 | 2;

export type PrefetchState = 'idle' | 'running' | 'done' | 'failed' | 'off';

export interface PrefetchProgress {
  state: PrefetchState;
  chunks: number;
  localChunks: number;
  fetchedBytes: number;
  /** Bytes brought from the disk cache into memory ahead of readers (rank 0, on a warm start). */
  loadedBytes: number;
  error?: string;
}

/**
 * Makes a whole layer local in the background, so it survives a registry outage, in the order that helps a
 * starting container most: files read first last time and files the image hints (`firstNodes`), then small
 * files (each would cost a round trip), then the rest, in blob order within each group. A batch gathers consecutive chunks of many files up to the scheduler's
 * budget; the source turns neighbouring ranges into one multi-range request, so hundreds of small files arrive
 * in one round trip.
 */
export class LayerPrefetcher {
  readonly progress: PrefetchProgress = { state: 'idle', chunks: 0, localChunks: 0, fetchedBytes: 0, loadedBytes: 0 };
  private running: Promise<void> | undefined;
  /** What is left of the rank-0 memory budget (RANK0_MEMORY_SHARE). */
  private memoryLeft = 0;

  constructor(
    private readonly tree: LayerTree,
    private readonly content: LayerContent,
    private readonly scheduler: BackgroundScheduler,
    private readonly opts: {
      firstNodes?: readonly number[];
      /** For some of firstNodes, the byte ranges read first: only their chunks go first, the rest with rank 2. */
      firstRanges?: ReadonlyMap<number, readonly (readonly [number, number])[]>;
      retries?: number; retryDelayMs?: number;
    } = {},
  ) {}

  start(): Promise<void> {
    this.running ??= this.run();
    return this.running;
  }

  /**
   * The layer's data chunks in fetch order, as typed arrays: a layer of 200,000 files must not cost 200,000 objects
   * (and their digest strings) on the thread serving FUSE.
   */
  private order(): FetchOrder {
    const tree = this.tree;
    const isFile = (n: number) => tree.isRegular(n) && tree.chunkCount(n) > 0;
    const seen = new Uint8Array(tree.nodeCount);
    const files: number[] = [];
    const add = (n: number) => {
      if (!seen[n] && isFile(n)) {
        seen[n] = 1;
        files.push(n);
      }
    };
    for (const n of this.opts.firstNodes ?? []) if (n < tree.nodeCount) add(n);
    const firstFiles = files.length;
    for (let n = 0; n < tree.nodeCount; n++) if (isFile(n) && tree.sizeOf(n) <= SMALL_FILE) add(n);
    const urgentFiles = files.length;
    for (let n = 0; n < tree.nodeCount; n++) add(n);
    let total = 0;
    for (const f of files) total += tree.chunkCount(f);
    const out: FetchOrder = { node: new Uint32Array(total), index: new Uint32Array(total), rank: new Uint8Array(total), bytes: new Float64Array(total), length: 0 };
    const push = (node: number, index: number, rank: Rank) => {
      const c = tree.chunkRange(node, index);
      if (c.zeros) return;
      const k = out.length++;
      out.node[k] = node;
      out.index[k] = index;
      out.rank[k] = rank;
      out.bytes[k] = c.end - c.start;
    };
    // The parts of partly read first files that were not read wait for rank 2, ahead of the other big files.
    const later: { node: number; index: number }[] = [];
    files.forEach((node, i) => {
      const rank: Rank = i < firstFiles ? 0 : i < urgentFiles ? 1 : 2;
      if (rank === 2 && later.length > 0) {
        for (const c of later.splice(0)) push(c.node, c.index, 2);
      }
      const ranges = rank === 0 ? this.opts.firstRanges?.get(node) : undefined;
      const read = ranges ? rangeCursor(ranges) : undefined;
      for (let index = 0; index < tree.chunkCount(node); index++) {
        if (read && !read(tree.chunkFileRange(node, index))) later.push({ node, index });
        else push(node, index, rank);
      }
    });
    for (const c of later) push(c.node, c.index, 2);
    return out;
  }

  private async run(): Promise<void> {
    const chunks = this.order();
    this.progress.state = 'running';
    this.progress.chunks = chunks.length;
    let lastRank0 = -1;
    for (let k = 0; k < chunks.length; k++) if (chunks.rank[k] === 0) lastRank0 = k;
    this.memoryLeft = lastRank0 >= 0 ? Math.floor(this.content.memoryCacheBytes / RANK0_MEMORY_SHARE) : 0;
    // Local rank-0 chunks go to memory beside the fetch of the missing ones (no link involved: no slot taken).
    const loading = this.loadFirstIntoMemory(chunks, lastRank0);
    const held = lastRank0 >= 0 ? this.scheduler.rank0Start() : () => {};
    const rank0Done = () => {
      held();
      this.content.guided = false;
    };
    const rank0Batches: Promise<void>[] = [];
    let rank0Issued = lastRank0 < 0;
    const batches: Promise<void>[] = [];
    const written: Promise<void>[] = [];
    let failure: { err: unknown } | undefined;
    let next = 0;
    let skipped = 0;
    try {
      while (next < chunks.length && !failure) {
        // The slot is released once a batch is verified, before its chunks are on disk (small files are slow to
        // create: ~1.3 ms each here); the queue of unwritten chunks is bounded instead.
        while (this.content.pendingDiskBytes > MAX_UNWRITTEN) await new Promise((r) => setTimeout(r, 10));
        const rank = chunks.rank[next] as Rank;
        // After a slice of chunks found local: past rank 0, go on only once the store is idle (≤ 1 s wait), so the
        // walk takes no CPU from a starting container.
        if (skipped >= LOCAL_SCAN_SLICE) {
          skipped = 0;
          await (rank > 0 ? this.scheduler.whenIdle(HINTED_PAUSE_MS) : new Promise((r) => setImmediate(r)));
        }
        // A layer with rank-0 work (hinted, or read first last time) has what its containers read next covered:
        // the rest waits while the store is in use (a container starting), at most HINTED_PAUSE_MS per batch, so
        // it neither competes with the container's last misses on the link nor for the CPU.
        if (rank > 0 && lastRank0 >= 0) await this.scheduler.whenIdle(HINTED_PAUSE_MS);
        // A layer the container is not reading from yields to the layers it is reading from (bigread: the base
        // layer's 46 MiB queued ahead of the reader's misses in the data layer), at most OTHER_LAYER_PAUSE_MS per batch.
        if (rank > 0) await this.scheduler.whileOthersRead(this.content, OTHER_LAYER_PAUSE_MS);
        const { budget, release } = await this.scheduler.acquire(rank);
        // Fill the batch with chunks that are not local yet (readers may have fetched some meanwhile); chunks of
        // different ranks never share a batch, so less urgent ones never ride on a better slot.
        const batch: { node: number; index: number }[] = [];
        let bytes = 0;
        while (next < chunks.length && chunks.rank[next] === rank && (batch.length === 0 || bytes + chunks.bytes[next]! <= budget)) {
          const k = next++;
          const c = { node: chunks.node[k]!, index: chunks.index[k]! };
          this.progress.localChunks++;
          if (this.content.isLocal(this.tree.chunkDigest(c.node, c.index))) {
            // A layer already local is a walk over all its chunks (a restarted daemon's python layer: ~300 ms of
            // this thread): in slices (see the top of the loop).
            if (++skipped >= LOCAL_SCAN_SLICE) break;
            continue;
          }
          batch.push(c);
          bytes += chunks.bytes[k]!;
        }
        if (batch.length === 0) {
          release();
        } else {
          // Batches of one layer overlap (up to the scheduler's slots): one at a time left the link idle for a
          // round trip and the batch's processing between batches.
          // The budget is of memory: the chunks' uncompressed size (`bytes` counts what crosses the link).
          const memory = rank === 0 && this.takeMemory(batch.reduce((n, c) => n + this.tree.chunkSize(c.node, c.index), 0));
          const p = this.fetchWithRetries(batch, memory, rank === 0 ? rank0Done : undefined).then(
            (r) => { this.progress.fetchedBytes += r.bytes; written.push(r.written); },
            (err: unknown) => { failure ??= { err }; },
          ).finally(release);
          batches.push(p);
          if (rank === 0) rank0Batches.push(p);
        }
        if (!rank0Issued && next > lastRank0) {
          // Every rank-0 batch is issued: other layers' lesser work may start once they have settled.
          rank0Issued = true;
          void Promise.all(rank0Batches).finally(rank0Done);
        }
      }
      await Promise.all(batches); // they never reject: a failure is kept in `failure`
    } finally {
      rank0Done();
      await loading;
    }
    if (failure) throw failure.err;
    await Promise.all(written);
    this.progress.state = 'done';
  }

  /** Take `bytes` of the rank-0 memory budget, if that much is left. */
  private takeMemory(bytes: number): boolean {
    if (bytes > this.memoryLeft) return false;
    this.memoryLeft -= bytes;
    return true;
  }

  /**
   * Rank-0 chunks already on local disk, in order, into memory (LayerContent.loadFromDisk) while the budget lasts:
   * a few worker tasks at a time, so loading stays ahead of a reader that goes through the same files.
   */
  private async loadFirstIntoMemory(chunks: FetchOrder, lastRank0: number): Promise<void> {
    const inflight = new Set<Promise<unknown>>();
    let batch: { node: number; index: number }[] = [];
    let bytes = 0;
    const issue = async () => {
      const p = this.content.loadFromDisk(batch).then((n) => { this.progress.loadedBytes += n; });
      batch = [];
      bytes = 0;
      inflight.add(p);
      void p.finally(() => inflight.delete(p));
      while (inflight.size >= LOAD_INFLIGHT) await Promise.race(inflight);
    };
    for (let k = 0; k <= lastRank0; k++) {
      const node = chunks.node[k]!;
      const index = chunks.index[k]!;
      if (!this.content.onDiskOnly(node, index)) continue;
      const size = this.tree.chunkSize(node, index);
      if (!this.takeMemory(size)) break;
      batch.push({ node, index });
      bytes += size;
      if (bytes >= LOAD_BATCH_BYTES) await issue();
      if (this.scheduler.stopping) break;
    }
    if (batch.length > 0) await issue();
    await Promise.all(inflight);
  }

  /** `onFailure` runs at the first failure (a failing hinted batch must not hold other layers' work while it retries). */
  private async fetchWithRetries(batch: { node: number; index: number }[], memory: boolean, onFailure?: () => void): Promise<{ bytes: number; written: Promise<void> }> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.content.fetchToDisk(batch, { memory });
      } catch (err) {
        onFailure?.();
        this.scheduler.checkStopped();
        if (attempt >= (this.opts.retries ?? 5)) {
          this.progress.state = 'failed';
          this.progress.error = (err as Error).message;
          this.running = undefined; // a later start() tries again
          throw err;
        }
        await new Promise((r) => setTimeout(r, (this.opts.retryDelayMs ?? 1000) * (attempt + 1)));
      }
    }
  }
}
