import { availableParallelism } from 'node:os';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { verifyChunkBytes, zerosDigest, type ChunkSpec, type LayerSections } from '../format/index.js';
import { transferable, WorkerPool, type Digest } from '../util/index.js';
import { verifiedChunkFile } from './chunk-file.js';
import { adoptTreeIndex } from './tree-index.js';
import { LayerTree } from './tree.js';
import type { AssembleResult } from './assembled.js';
import type { IndexFiles, ProofRequest } from './worker.js';

export type { IndexFiles } from './worker.js';

/**
 * Work below this many bytes runs inline: posting to a worker costs ~0.1 ms, decompressing and hashing 256 KiB
 * ~0.5 ms. Above it, a chunk (up to 512 MiB) would hold the FUSE thread for up to seconds.
 */
const INLINE_BYTES = 256 << 10;

/** Disk-cache chunks up to this size are read and hashed on the calling thread (see readChunkFile). */
const INLINE_READ_BYTES = 64 << 10;

/**
 * CPU work that grows with its input, on worker threads, so the thread serving FUSE never waits for it (issue:
 * one hostile image froze every container on the node). Three pools, so that the kinds never queue behind each other:
 *  - `toc`: TOC decode, validation, tar-split cross-check, tree build, index load (seconds for a 200k-entry TOC);
 *  - `verify`: decompress + SHA-256 of big chunks and disk-cache loads (a reader waits for these);
 *  - `proof`: the DiffID proof (minutes of hashing for a big layer), at the lowest CPU priority;
 *  - `files`: complete files assembled from verified chunks for FUSE passthrough (seconds of I/O and hashing per
 *    big file), one at a time, below the readers' priority.
 */
export class LayerWork {
  private readonly toc: WorkerPool;
  private readonly verify: WorkerPool;
  private readonly proof: WorkerPool;
  private readonly files: WorkerPool;
  private readonly disk: WorkerPool;
  private readonly zeroDigests = new Map<number, Promise<Digest>>();
  private readonly threads: number;

  constructor(opts: { threads?: number; tocHeapMb?: number } = {}) {
    const script = new URL('./worker.js', import.meta.url);
    const threads = opts.threads ?? Math.max(1, Math.min(4, availableParallelism()));
    this.threads = threads;
    // A worker's heap holds one TOC's objects while it builds (~1 KiB per entry); the limit turns a hostile TOC into
    // a refused layer instead of a daemon the kernel kills.
    // Two TOC workers per thread: a layer opens as two tasks (TOC, tar-split), and a TOC task waiting for its
    // tar-split must not leave another layer's continuation queued behind the next layer's TOC decode. With one per
    // CPU here (2), python's 6.6k-entry base layer was ready 0.9–1.1 s after its TOC arrived while the 31k-entry
    // layer was opened beside it, against 0.4–0.55 s with two per CPU (the big layer the same, ~1.3–1.6 s).
    const tocThreads = opts.threads ?? Math.min(8, 2 * threads);
    this.toc = new WorkerPool({ name: 'TOC worker', script, size: tocThreads, nice: 5, idleExitMs: 5_000, resourceLimits: { maxOldGenerationSizeMb: opts.tocHeapMb ?? 2048 } });
    this.verify = new WorkerPool({ name: 'chunk worker', script, size: threads, idleExitMs: 60_000, resourceLimits: { maxOldGenerationSizeMb: 256 } });
    this.proof = new WorkerPool({ name: 'proof worker', script, size: 1, nice: 19, idleExitMs: 10_000, resourceLimits: { maxOldGenerationSizeMb: 2048 } });
    this.files = new WorkerPool({ name: 'assembly worker', script, size: 1, nice: 10, idleExitMs: 10_000, resourceLimits: { maxOldGenerationSizeMb: 512 } });
    this.disk = new WorkerPool({ name: 'disk-cache writer', script, size: threads, idleExitMs: 10_000, resourceLimits: { maxOldGenerationSizeMb: 256 } });
  }

  /**
   * Assemble regular file `node` of `tree` from the disk cache in `cacheDir` into `<cacheDir>/files/<hex>` (see
   * worker.ts assembleFile: verified chunks only, whole-file digest checked), or check the copy already there.
   */
  assembleFile(tree: LayerTree, node: number, cacheDir: string, hex: string): Promise<AssembleResult> {
    return this.files.run<AssembleResult>('assembleFile', { buffer: tree.index.buffer, node, cacheDir, hex });
  }

  /**
   * Open a layer from its TOC and tar-split sections (verified, cross-checked, tree built and kept in `files`). The
   * tar-split is read on a second worker meanwhile (see openToc in worker.ts); its findings go straight to the
   * first over a MessageChannel, never through this thread.
   */
  async openToc(sections: LayerSections, files?: IndexFiles): Promise<{ tree: LayerTree; saved: boolean }> {
    // Fresh copies: the sections may be views into a larger response buffer, which must not be transferred.
    const tocZ = Buffer.from(sections.tocZ);
    const tarSplitZ = sections.tarSplitZ ? Buffer.from(sections.tarSplitZ) : undefined;
    let port: MessagePort | undefined;
    let side: Promise<unknown> | undefined;
    if (tarSplitZ) {
      const channel = new MessageChannel();
      port = channel.port1;
      const copy = Buffer.from(tarSplitZ);
      // Its findings reach openToc through the port; its failure is only read if openToc hears nothing (below).
      side = this.toc.run('tarSplitFacts', { annotations: sections.annotations, tarSplitZ: copy, port: channel.port2 }, {
        transfer: [...transferable(copy), channel.port2],
      });
      side.catch(() => {});
    }
    try {
      const r = await this.toc.run<{ buffer: SharedArrayBuffer; saved: boolean }>('openToc', {
        sections: { annotations: sections.annotations, tocZ, ...(tarSplitZ ? { tarSplitZ } : {}) }, ...(files ? { files } : {}), ...(port ? { port } : {}),
      }, { transfer: [...transferable(tocZ), ...(tarSplitZ ? transferable(tarSplitZ) : []), ...(port ? [port] : [])] });
      return { tree: new LayerTree(adoptTreeIndex(r.buffer)), saved: r.saved };
    } catch (err) {
      throw await sideFailure(err, side) ?? err;
    }
  }

  /**
   * An image's layers are about to be opened (its manifest is known): start the TOC workers now, so their start-up
   * overlaps the TOC fetch instead of following it (~120 ms per pull here; the workers exit after 5 s idle).
   */
  prewarmToc(): void {
    // One per CPU: starting them costs CPU too, and a warm pull (trees kept) needs one at most.
    this.toc.prewarm(this.threads);
  }

  /** The tree an earlier run kept for this TOC digest, if it is intact. */
  async loadIndex(files: IndexFiles, tocDigest: Digest): Promise<LayerTree | undefined> {
    const buffer = await this.toc.run<SharedArrayBuffer | undefined>('loadIndex', { files, tocDigest });
    return buffer ? new LayerTree(adoptTreeIndex(buffer)) : undefined;
  }

  /** Decompress and verify one chunk (throws like verifyChunkBytes). */
  async verifyChunk(where: string, spec: ChunkSpec, compressed: Buffer): Promise<Buffer> {
    if (spec.size <= INLINE_BYTES) return verifyChunkBytes(where, spec, compressed);
    const copy = Buffer.from(compressed);
    const out = await this.verify.run<Uint8Array>('verifyChunk', { where, spec: { size: spec.size, digest: spec.digest, zeros: spec.zeros }, compressed: copy }, { transfer: transferable(copy) });
    return Buffer.from(out.buffer, out.byteOffset, out.length);
  }

  /**
   * A disk-cache file of `size` bytes if it hashes to `hex`. Big ones are read and hashed on a worker: reading a file
   * through the thread pool costs the FUSE thread four round trips (open, fstat, read, close; ~0.35 ms a chunk in
   * all with the hash), which made warm sequential reads ~3× slower than a local file. Chunks up to INLINE_READ_BYTES
   * are read and hashed right here: ~30 µs for a page-cached 16 KiB chunk against ~120 µs for a worker round trip on
   * an idle machine, and far more when the workload keeps both CPUs busy (python's imports from a warm cache: 2.96 s
   * against 4.37 s, docs/benchmarks.md). `offThread` sends even small ones to a worker (work ahead of readers).
   */
  async readChunkFile(path: string, hex: string, size: number, offThread = false): Promise<{ data?: Buffer; corrupt?: boolean }> {
    if (size <= INLINE_READ_BYTES && !offThread) {
      const data = verifiedChunkFile(path, hex);
      return data === 'missing' ? {} : data === 'corrupt' ? { corrupt: true } : { data };
    }
    const r = await this.verify.run<{ data?: Uint8Array; corrupt?: boolean; missing?: boolean }>('readChunkFile', { path, hex });
    if (r.data) return { data: Buffer.from(r.data.buffer, r.data.byteOffset, r.data.length) };
    return r.corrupt ? { corrupt: true } : {};
  }

  /**
   * Write verified chunks into the disk cache in `dir` (`chunks`: hex digest and bytes), on a worker: through the
   * thread pool each file cost the FUSE thread four promise round trips (open, write, close, rename), ~0.4 ms a chunk,
   * 2.2 s of a 20 s python start on bench:realworld (CPU profile). Resolves with, per chunk, undefined or why it
   * could not be written.
   */
  async writeChunkFiles(dir: string, chunks: readonly { hex: string; data: Buffer }[]): Promise<(string | undefined)[]> {
    // One fresh buffer, transferred: no copy on the way, and never a view of Node's shared pool.
    const all = new Uint8Array(chunks.reduce((n, c) => n + c.data.length, 0));
    let offset = 0;
    for (const c of chunks) {
      all.set(c.data, offset);
      offset += c.data.length;
    }
    return this.disk.run<(string | undefined)[]>('writeChunkFiles', {
      dir, hexes: chunks.map((c) => c.hex), lengths: chunks.map((c) => c.data.length), data: all,
    }, { transfer: [all.buffer] });
  }

  /** sha256 of `size` zero bytes (refused beyond LIMITS.maxZeroChunk); big holes are hashed in a worker, once. */
  zerosDigest(size: number): Promise<Digest> {
    if (size <= INLINE_BYTES) return Promise.resolve().then(() => zerosDigest(size));
    let p = this.zeroDigests.get(size);
    if (!p) {
      p = this.toc.run<Digest>('zerosDigest', { size });
      this.zeroDigests.set(size, p);
      p.catch(() => this.zeroDigests.delete(size));
      if (this.zeroDigests.size > 1024) this.zeroDigests.delete(this.zeroDigests.keys().next().value!);
    }
    return p;
  }

  /**
   * The DiffID proof of a layer in the proof worker. `chunk` supplies verified chunks the disk cache lacks; `pace`
   * is awaited before every chunk (the scheduler holds the proof back while containers use the store).
   */
  prove(tree: LayerTree, tarSplitFile: string, cacheDir: string | undefined, chunk: (node: number, index: number) => Promise<Buffer>, pace: () => Promise<void>): Promise<{ diffID: Digest; size: number }> {
    return this.proof.run('prove', { buffer: tree.index.buffer, tarSplitFile, ...(cacheDir ? { cacheDir } : {}) }, {
      onRequest: async (body) => {
        const req = body as ProofRequest;
        if (req.kind === 'pace') {
          await pace();
          return { value: true };
        }
        const data = Buffer.from(await chunk(req.node, req.index));
        return { value: data, transfer: transferable(data) };
      },
    });
  }

  /** Stop every worker (their tasks reject with POOL_CLOSED): the daemon is stopping. */
  async close(): Promise<void> {
    await Promise.all([this.toc.close(), this.verify.close(), this.proof.close(), this.files.close(), this.disk.close()]);
  }

  get stats(): { tasks: number; crashes: number; workers: number } {
    const pools = [this.toc, this.verify, this.proof, this.files];
    return {
      tasks: pools.reduce((n, p) => n + p.stats.tasks, 0),
      crashes: pools.reduce((n, p) => n + p.stats.crashes, 0),
      workers: pools.reduce((n, p) => n + p.workers, 0),
    };
  }
}

/**
 * When openToc failed only because the tar-split task never answered, that task's own failure, which says why
 * (its worker ran out of heap on a hostile tar-split, or died); undefined otherwise.
 */
async function sideFailure(err: unknown, side: Promise<unknown> | undefined): Promise<unknown> {
  if (!side || (err as { code?: unknown } | null)?.code !== 'TARSPLIT_UNANSWERED') return undefined;
  return side.then(() => undefined, (e: unknown) => e);
}

let shared: LayerWork | undefined;

/** The process's LayerWork (created on first use; the daemon closes it when it stops). */
export function layerWork(): LayerWork {
  shared ??= new LayerWork();
  return shared;
}

/** Close the process's LayerWork, if it was started; a later layerWork() starts a new one. */
export async function closeLayerWork(): Promise<void> {
  const w = shared;
  shared = undefined;
  await w?.close();
}
