import type { LayerContent } from './content.js';
import type { LayerTree } from './tree.js';
import { S_IFMT, S_IFREG } from './tree.js';

/** Files up to this size are fetched first: they cost a round trip each when a container reads them. */
const SMALL_FILE = 256 << 10;

/**
 * Global pacing of background work across layers. When no reader has fetched for `quietMs`, up to `concurrency`
 * batches of `batchBytes` run at once. While readers are fetching, exactly one small batch (`busyBatchBytes`)
 * may be in flight: it keeps the background moving during a container's start (whose reads never pause for long)
 * while adding at most one small transfer ahead of a foreground read on a slow link.
 */
export class BackgroundScheduler {
  private running = 0;
  private readonly contents = new Set<LayerContent>();

  constructor(
    readonly concurrency = 2,
    private readonly opts: { quietMs?: number; batchBytes?: number; busyBatchBytes?: number; pollMs?: number } = {},
  ) {}

  register(c: LayerContent): void {
    this.contents.add(c);
  }

  /** A reader is fetching now, or was within the quiet period. */
  busy(): boolean {
    const now = Date.now();
    const quiet = this.opts.quietMs ?? 250;
    for (const c of this.contents) if (c.foreground > 0 || now - c.lastForegroundAt < quiet) return true;
    return false;
  }

  /**
   * Wait for a background slot; returns the byte budget of the batch to run in it, and its release. `urgent`
   * work (small files, files read first last time: what a starting container reads one round trip at a time) runs
   * at full speed even while readers fetch: fetched in bulk, those reads become cache hits.
   */
  async acquire(urgent = false): Promise<{ budget: number; release: () => void }> {
    for (;;) {
      const busy = !urgent && this.busy();
      if (this.running < (busy ? 1 : this.concurrency)) {
        this.running++;
        let released = false;
        return {
          // Measured (bench:coldstart): throttling urgent work behind readers made cold starts slower (1.45× vs
          // 2.0–2.3× over a normal pull), so only ordinary background work shrinks while readers fetch.
          budget: busy ? (this.opts.busyBatchBytes ?? 256 << 10) : (this.opts.batchBytes ?? 2 << 20),
          release: () => {
            if (!released) this.running--;
            released = true;
          },
        };
      }
      await new Promise((r) => setTimeout(r, this.opts.pollMs ?? 10));
    }
  }

  /** Run `work` (CPU-heavy background work such as the DiffID proof) when no reader is fetching. */
  async slot<T>(work: () => Promise<T>): Promise<T> {
    while (this.running >= this.concurrency || this.busy()) await new Promise((r) => setTimeout(r, this.opts.pollMs ?? 10));
    this.running++;
    try {
      return await work();
    } finally {
      this.running--;
    }
  }
}

export type PrefetchState = 'idle' | 'running' | 'done' | 'failed' | 'off';

export interface PrefetchProgress {
  state: PrefetchState;
  chunks: number;
  localChunks: number;
  fetchedBytes: number;
  error?: string;
}

/**
 * Makes a whole layer local in the background, so it survives a registry outage, in the order that helps a
 * starting container most: files read first last time, then small files (each would cost a round trip), then the
 * rest, in blob order within each group. A batch gathers consecutive chunks of many files up to the scheduler's
 * budget; the source turns neighbouring ranges into one multi-range request, so hundreds of small files arrive
 * in one round trip.
 */
export class LayerPrefetcher {
  readonly progress: PrefetchProgress = { state: 'idle', chunks: 0, localChunks: 0, fetchedBytes: 0 };
  private running: Promise<void> | undefined;

  constructor(
    private readonly tree: LayerTree,
    private readonly content: LayerContent,
    private readonly scheduler: BackgroundScheduler,
    private readonly opts: { firstNodes?: readonly number[]; retries?: number; retryDelayMs?: number } = {},
  ) {}

  start(): Promise<void> {
    this.running ??= this.run();
    return this.running;
  }

  /** The layer's data chunks in fetch order. */
  private order(): { node: number; index: number; bytes: number; digest: string; urgent: boolean }[] {
    const isFile = (n: number) => (this.tree.attr(n).mode & S_IFMT) === S_IFREG && this.tree.chunkCount(n) > 0;
    const seen = new Set<number>();
    const files: number[] = [];
    const add = (n: number) => {
      if (!seen.has(n) && isFile(n)) {
        seen.add(n);
        files.push(n);
      }
    };
    for (const n of this.opts.firstNodes ?? []) if (n < this.tree.nodeCount) add(n);
    for (let n = 0; n < this.tree.nodeCount; n++) if (isFile(n) && this.tree.attr(n).size <= SMALL_FILE) add(n);
    const urgentFiles = files.length;
    for (let n = 0; n < this.tree.nodeCount; n++) add(n);
    const out: { node: number; index: number; bytes: number; digest: string; urgent: boolean }[] = [];
    files.forEach((node, i) => {
      for (let index = 0; index < this.tree.chunkCount(node); index++) {
        const c = this.tree.chunk(node, index);
        if (!c.zeros) out.push({ node, index, bytes: c.end - c.start, digest: c.digest, urgent: i < urgentFiles });
      }
    });
    return out;
  }

  private async run(): Promise<void> {
    const chunks = this.order();
    this.progress.state = 'running';
    this.progress.chunks = chunks.length;
    let next = 0;
    while (next < chunks.length) {
      const urgent = chunks[next]!.urgent;
      const { budget, release } = await this.scheduler.acquire(urgent);
      // Fill the batch with chunks that are not local yet (readers may have fetched some meanwhile); urgent and
      // ordinary chunks never share a batch, so ordinary ones never ride on an urgent slot.
      const batch: { node: number; index: number }[] = [];
      let bytes = 0;
      while (next < chunks.length && chunks[next]!.urgent === urgent && (batch.length === 0 || bytes + chunks[next]!.bytes <= budget)) {
        const c = chunks[next++]!;
        this.progress.localChunks++;
        if (this.content.isLocal(c.digest)) continue;
        batch.push(c);
        bytes += c.bytes;
      }
      try {
        if (batch.length > 0) this.progress.fetchedBytes += await this.fetchWithRetries(batch);
      } finally {
        release();
      }
    }
    this.progress.state = 'done';
  }

  private async fetchWithRetries(batch: { node: number; index: number }[]): Promise<number> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.content.fetchToDisk(batch);
      } catch (err) {
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
