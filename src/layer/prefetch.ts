import type { LayerContent } from './content.js';
import type { LayerTree } from './tree.js';
import { S_IFMT, S_IFREG } from './tree.js';

/**
 * Global pacing of background work across layers: a bounded number of batches at once, and none while any
 * reader is waiting for a foreground fetch (background fetches must never slow down a container's first reads).
 */
export class BackgroundScheduler {
  private running = 0;
  private readonly contents = new Set<LayerContent>();
  private lastForeground = 0;

  /**
   * @param quietMs background work starts only this long after the last foreground fetch: a container reading
   *   its first files issues fetch after fetch, and each must not queue behind a background transfer.
   */
  constructor(readonly concurrency = 2, private readonly quietMs = 250, private readonly pollMs = 20) {}

  register(c: LayerContent): void {
    this.contents.add(c);
  }

  private busy(): boolean {
    const now = Date.now();
    for (const c of this.contents) {
      if (c.foreground > 0 || now - c.lastForegroundAt < this.quietMs) {
        this.lastForeground = now;
        return true;
      }
    }
    return now - this.lastForeground < this.quietMs;
  }

  /** Run `work` when a slot is free and no foreground fetch is waiting. */
  async slot<T>(work: () => Promise<T>): Promise<T> {
    while (this.running >= this.concurrency || this.busy()) await new Promise((r) => setTimeout(r, this.pollMs));
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
 * Makes a whole layer local in the background, so it survives a registry outage: every data chunk, files read
 * first last time (`firstNodes`) first, then the rest in TOC order; batches of about `batchBytes` compressed.
 */
export class LayerPrefetcher {
  readonly progress: PrefetchProgress = { state: 'idle', chunks: 0, localChunks: 0, fetchedBytes: 0 };
  private running: Promise<void> | undefined;

  constructor(
    private readonly tree: LayerTree,
    private readonly content: LayerContent,
    private readonly scheduler: BackgroundScheduler,
    private readonly opts: { batchBytes?: number; firstNodes?: readonly number[]; retries?: number; retryDelayMs?: number } = {},
  ) {}

  start(): Promise<void> {
    this.running ??= this.run();
    return this.running;
  }

  private order(): number[] {
    const seen = new Set<number>();
    const out: number[] = [];
    const add = (n: number) => {
      if (seen.has(n) || (this.tree.attr(n).mode & S_IFMT) !== S_IFREG || this.tree.chunkCount(n) === 0) return;
      seen.add(n);
      out.push(n);
    };
    for (const n of this.opts.firstNodes ?? []) if (n < this.tree.nodeCount) add(n);
    for (let n = 0; n < this.tree.nodeCount; n++) add(n);
    return out;
  }

  private async run(): Promise<void> {
    // Small batches: a foreground read arriving mid-batch waits for at most one batch on a slow link.
    const batchBytes = this.opts.batchBytes ?? 2 << 20;
    const files = this.order();
    this.progress.state = 'running';
    this.progress.chunks = files.reduce((n, f) => n + this.tree.chunkCount(f), 0);
    // Batches: consecutive chunks of one file up to batchBytes (the source merges them into multi-range requests).
    const batches: { node: number; indices: number[] }[] = [];
    for (const node of files) {
      let cur: number[] = [];
      let bytes = 0;
      for (let i = 0; i < this.tree.chunkCount(node); i++) {
        const c = this.tree.chunk(node, i);
        cur.push(i);
        bytes += c.end - c.start;
        if (bytes >= batchBytes) {
          batches.push({ node, indices: cur });
          cur = [];
          bytes = 0;
        }
      }
      if (cur.length) batches.push({ node, indices: cur });
    }
    for (const b of batches) {
      let attempt = 0;
      for (;;) {
        try {
          this.progress.fetchedBytes += await this.scheduler.slot(() => this.content.fetchToDisk(b.node, b.indices));
          break;
        } catch (err) {
          if (++attempt > (this.opts.retries ?? 5)) {
            this.progress.state = 'failed';
            this.progress.error = (err as Error).message;
            this.running = undefined; // a later start() tries again
            throw err;
          }
          await new Promise((r) => setTimeout(r, (this.opts.retryDelayMs ?? 1000) * attempt));
        }
      }
      this.progress.localChunks += b.indices.length;
    }
    this.progress.state = 'done';
  }
}
