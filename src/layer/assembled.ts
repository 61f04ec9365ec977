// Complete files assembled from verified chunks, for FUSE passthrough: the kernel then reads a fully local file
// straight from `<cache>/files/<sha256 of its content>` (an ordinary file on the local filesystem), with no READ
// request reaching the daemon. The assembly itself runs on a worker (worker.ts assembleFile); this side decides
// when to ask for one and remembers which copies this process has checked.
import type { DiskCache } from './disk-cache.js';
import type { LayerTree } from './tree.js';
import { layerWork, type LayerWork } from './work.js';

/** What one assembly (or check of an existing copy) came to. */
export type AssembleResult =
  | { state: 'assembled' | 'reused'; bytes: number }
  /** Some chunks are not on disk (yet): tried again on a later open. */
  | { state: 'missing'; missing: number }
  /** A chunk file does not hash to its digest: it is removed from the disk cache and fetched again when read. */
  | { state: 'corrupt'; digest: string }
  /** The TOC is inconsistent for this file (its whole-file digest, or chunks that do not tile it): never assembled. */
  | { state: 'mismatch'; why: string };

export interface AssembledStats {
  /** Files assembled by this process, and copies of an earlier run checked and taken. */
  assembled: number;
  reused: number;
  /** Assemblies refused or failed (corrupt chunk, inconsistent TOC, I/O error). */
  failed: number;
  /** Under way now. */
  running: number;
}

export interface AssembledLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface AssembledOptions {
  /** Files smaller than this are served as usual (one READ request covers most of them). Default 1 MiB. */
  minBytes?: number;
  work?: LayerWork;
  logger?: AssembledLogger;
}

/** How long to wait before trying a file again after chunks were missing, or after a failure. */
const RETRY_MISSING_MS = 5_000;
const RETRY_FAILED_MS = 60_000;
/** Files with up to this many chunks are checked for locality on this thread before a worker is asked. */
const INLINE_CHECK_CHUNKS = 4096;
/** Files remembered as waiting for their chunks (beyond that, they wait for their next open). */
const MAX_WAITING = 10_000;

type FileState = { kind: 'ready' } | { kind: 'running' } | { kind: 'wait'; until: number };

/**
 * The assembled complete files of every layer, keyed by content digest (identical files of different layers share
 * one copy). Their bytes count in the disk cache's budget and are evicted with it (`tocfs gc` too).
 */
export class AssembledFiles {
  readonly stats: AssembledStats = { assembled: 0, reused: 0, failed: 0, running: 0 };
  private readonly state = new Map<string, FileState>();
  /** Files asked for while some of their chunks were not on disk: asked for again when their layer is local. */
  private readonly waiting = new Map<string, { tree: LayerTree; node: number; where: () => string }>();
  private readonly minBytes: number;

  constructor(private readonly disk: DiskCache, private readonly opts: AssembledOptions = {}) {
    this.minBytes = opts.minBytes ?? 1 << 20;
  }

  /** The content digest (hex) naming the assembled copy of `node`, if the file is one worth assembling. */
  private keyOf(tree: LayerTree, node: number): string | undefined {
    const size = tree.sizeOf(node);
    // A file over a quarter of the cap would evict everything else for itself.
    if (size < this.minBytes || size > this.disk.maxBytes / 4) return undefined;
    return tree.fileDigestOf(node)?.slice(7);
  }

  /** Whether `node` is big enough to be served by passthrough once assembled. */
  wanted(tree: LayerTree, node: number): boolean {
    return this.keyOf(tree, node) !== undefined;
  }

  /** The path of a copy of `node`'s content this process has checked, if one is on disk. */
  path(tree: LayerTree, node: number): string | undefined {
    const hex = this.keyOf(tree, node);
    if (hex === undefined || this.state.get(hex)?.kind !== 'ready') return undefined;
    if (!this.disk.hasFile(hex)) {
      this.state.delete(hex); // evicted (or removed by tocfs gc): assembled again on a later open
      return undefined;
    }
    this.disk.touchFile(hex);
    return this.disk.filePath(hex);
  }

  /**
   * Make a checked copy of `node` ready for later opens, in the background (never throws, never waits). `where`
   * names the file in log lines.
   */
  request(tree: LayerTree, node: number, where: () => string): void {
    const hex = this.keyOf(tree, node);
    if (hex === undefined) return;
    const s = this.state.get(hex);
    if (s && (s.kind !== 'wait' || Date.now() < s.until)) return;
    this.waiting.delete(hex);
    if (!this.disk.hasFile(hex) && !this.chunksLocal(tree, node)) {
      this.wait(hex, RETRY_MISSING_MS, { tree, node, where });
      return;
    }
    this.state.set(hex, { kind: 'running' });
    this.stats.running++;
    void this.run(tree, node, hex, where).finally(() => this.stats.running--);
  }

  /**
   * The layer of `tree` is local now (its background fetch is done): the files asked for while their chunks were
   * missing are assembled now, so that their next open gets passthrough.
   */
  layerLocal(tree: LayerTree): void {
    for (const [hex, w] of [...this.waiting]) {
      if (w.tree !== tree) continue;
      this.waiting.delete(hex);
      this.state.delete(hex);
      this.request(w.tree, w.node, w.where);
    }
  }

  private wait(hex: string, ms: number, file?: { tree: LayerTree; node: number; where: () => string }): void {
    this.state.set(hex, { kind: 'wait', until: Date.now() + ms });
    if (file && this.waiting.size < MAX_WAITING) this.waiting.set(hex, file);
  }

  /** Every data chunk in the disk cache (checked here only for files of moderately many chunks; else the worker does). */
  private chunksLocal(tree: LayerTree, node: number): boolean {
    const count = tree.chunkCount(node);
    if (count > INLINE_CHECK_CHUNKS) return true;
    for (let i = 0; i < count; i++) {
      if (!tree.chunkRange(node, i).zeros && !this.disk.has(tree.chunkDigest(node, i))) return false;
    }
    return true;
  }

  private async run(tree: LayerTree, node: number, hex: string, whereOf: () => string): Promise<void> {
    const log = this.opts.logger;
    const where = whereOf();
    const wait = (ms: number) => this.wait(hex, ms);
    let r: AssembleResult;
    try {
      r = await (this.opts.work ?? layerWork()).assembleFile(tree, node, this.disk.dir, hex);
    } catch (err) {
      this.stats.failed++;
      wait(RETRY_FAILED_MS);
      log?.warn({ file: where, err: (err as Error).message }, `passthrough: could not assemble ${where} into ${this.disk.filePath(hex)}: ${(err as Error).message}; its reads are served as usual`);
      return;
    }
    switch (r.state) {
      case 'assembled':
      case 'reused':
        await this.disk.addFile(hex, r.bytes);
        this.stats[r.state]++;
        this.state.set(hex, { kind: 'ready' });
        log?.info({ file: where, path: this.disk.filePath(hex), bytes: r.bytes, reused: r.state === 'reused' }, 'passthrough: complete file ready');
        return;
      case 'missing':
        this.wait(hex, RETRY_MISSING_MS, { tree, node, where: whereOf });
        return;
      case 'corrupt':
        this.stats.failed++;
        wait(RETRY_MISSING_MS);
        await this.disk.discardChunk(r.digest);
        return;
      case 'mismatch':
        this.stats.failed++;
        wait(Number.POSITIVE_INFINITY);
        log?.error({ file: where, why: r.why }, `passthrough: ${where} is not assembled: ${r.why}; its reads are served (and verified chunk by chunk) as usual`);
        return;
    }
  }
}
