// A small pool of worker threads for CPU work that grows with its input (TOC parsing, hashing, decompression):
// the thread serving FUSE hands it over and stays free. Tasks are named functions of the worker script (see
// serveTasks); a task may ask the main thread for something while it runs (ctx.request), e.g. chunk bytes.
import { readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import { parentPort, Worker, workerData, type ResourceLimits, type Transferable } from 'node:worker_threads';
import { TocfsError } from './errors.js';

export interface WorkerPoolOptions {
  /** Names the pool in errors and logs. */
  name: string;
  /** The worker script (compiled JS, ESM). */
  script: URL;
  /** Most workers at once; tasks beyond that share them (each worker runs several async tasks). */
  size: number;
  /**
   * Linux nice value of the pool's threads (0..19). The kernel then runs the FUSE thread first whenever both
   * want a CPU: on a 2-vCPU machine, background hashing otherwise doubles FUSE latencies.
   */
  nice?: number;
  /** Workers idle this long exit (their heap, possibly large after a big TOC, goes back to the system). */
  idleExitMs?: number;
  resourceLimits?: ResourceLimits;
}

/** Answers a task's ctx.request(body) on the main thread. */
export type RequestHandler = (body: unknown) => Promise<{ value: unknown; transfer?: Transferable[] }>;

export interface RunOptions {
  transfer?: Transferable[];
  onRequest?: RequestHandler;
}

/** A task failed in the worker (the message is the worker's error message). */
export class WorkerTaskError extends TocfsError {}

interface Pending {
  task: string;
  onRequest?: RequestHandler;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

interface Slot {
  worker: Worker;
  pending: Map<number, Pending>;
  idleTimer?: NodeJS.Timeout;
}

type ToWorker =
  | { kind: 'task'; id: number; task: string; input: unknown }
  | { kind: 'reply'; id: number; req: number; value?: unknown; error?: { message: string; code?: string } };
type FromWorker =
  | { kind: 'done'; id: number; value?: unknown; error?: { message: string; code?: string } }
  | { kind: 'request'; id: number; req: number; body: unknown };

export class WorkerPool {
  private readonly slots: Slot[] = [];
  private nextId = 1;
  private closed = false;
  /** Tasks started, and the ones that failed because their worker died (for status). */
  readonly stats = { tasks: 0, crashes: 0 };

  constructor(private readonly opts: WorkerPoolOptions) {}

  /** Run `task` on the least busy worker (starting one if all are busy and the pool is not full). */
  run<T>(task: string, input: unknown, opts: RunOptions = {}): Promise<T> {
    if (this.closed) return Promise.reject(new WorkerTaskError('POOL_CLOSED', `${this.opts.name}: the worker pool is closed (the daemon is stopping)`));
    const slot = this.pick();
    const id = this.nextId++;
    this.stats.tasks++;
    if (slot.idleTimer) clearTimeout(slot.idleTimer);
    slot.idleTimer = undefined;
    // A worker with tasks keeps the process alive (a CLI awaiting a task would otherwise just exit); an idle one not.
    slot.worker.ref();
    return new Promise<T>((resolve, reject) => {
      slot.pending.set(id, { task, resolve: resolve as (v: unknown) => void, reject, ...(opts.onRequest ? { onRequest: opts.onRequest } : {}) });
      const msg: ToWorker = { kind: 'task', id, task, input };
      try {
        slot.worker.postMessage(msg, opts.transfer ?? []);
      } catch (err) {
        slot.pending.delete(id);
        reject(err);
      }
    });
  }

  /**
   * Start workers up to `count` (at most the pool's size) before tasks come: a worker takes ~120 ms to start here
   * (loading its modules), which then overlaps the I/O the first task waits for. Idle ones exit after idleExitMs
   * as usual.
   */
  prewarm(count = this.opts.size): void {
    if (this.closed) return;
    while (this.slots.length < Math.min(count, this.opts.size)) this.idle(this.spawn());
  }

  /** Workers running now. */
  get workers(): number {
    return this.slots.length;
  }

  /** End every worker; their tasks reject. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate().catch(() => 0)));
  }

  private pick(): Slot {
    let best: Slot | undefined;
    for (const s of this.slots) if (!best || s.pending.size < best.pending.size) best = s;
    if (best && (best.pending.size === 0 || this.slots.length >= this.opts.size)) return best;
    return this.spawn();
  }

  private spawn(): Slot {
    const worker = new Worker(this.opts.script, {
      workerData: { poolName: this.opts.name, nice: this.opts.nice ?? 0 },
      ...(this.opts.resourceLimits ? { resourceLimits: this.opts.resourceLimits } : {}),
    });
    const slot: Slot = { worker, pending: new Map() };
    this.slots.push(slot);
    worker.on('message', (m: FromWorker) => this.onMessage(slot, m));
    worker.on('error', (err: Error & { code?: string }) => this.ended(slot, err, true));
    worker.on('exit', (code) => this.ended(slot, new Error(`exited with code ${code}`)));
    worker.unref();
    return slot;
  }

  private onMessage(slot: Slot, m: FromWorker): void {
    if (m.kind === 'request') {
      const p = slot.pending.get(m.id);
      const answer = p?.onRequest ? p.onRequest(m.body) : Promise.reject(new Error('no request handler'));
      answer.then(
        ({ value, transfer }) => this.post(slot, { kind: 'reply', id: m.id, req: m.req, value }, transfer),
        (err: unknown) => this.post(slot, { kind: 'reply', id: m.id, req: m.req, error: errorOf(err) }),
      );
      return;
    }
    const p = slot.pending.get(m.id);
    if (!p) return;
    slot.pending.delete(m.id);
    if (m.error) p.reject(new WorkerTaskError(m.error.code ?? 'TASK_FAILED', m.error.message));
    else p.resolve(m.value);
    if (slot.pending.size === 0) this.idle(slot);
  }

  /** A worker with no task: it no longer keeps the process alive, and exits after idleExitMs. */
  private idle(slot: Slot): void {
    slot.worker.unref();
    if (this.opts.idleExitMs === undefined || this.closed) return;
    slot.idleTimer = setTimeout(() => {
      if (slot.pending.size === 0) void slot.worker.terminate();
    }, this.opts.idleExitMs);
    slot.idleTimer.unref();
  }

  private post(slot: Slot, msg: ToWorker, transfer: Transferable[] = []): void {
    try {
      slot.worker.postMessage(msg, transfer);
    } catch {
      // The worker is gone: its tasks were rejected by ended().
    }
  }

  /** A worker is gone: exited (idle, or terminated), or `failed` (an uncaught error, also between tasks). */
  private ended(slot: Slot, err: Error & { code?: string }, failed = false): void {
    const i = this.slots.indexOf(slot);
    if (i < 0) return;
    this.slots.splice(i, 1);
    if (slot.idleTimer) clearTimeout(slot.idleTimer);
    if (slot.pending.size === 0) {
      // No task lost, but a worker that fails between tasks is a bug worth seeing in status.
      if (failed) this.stats.crashes++;
      return;
    }
    this.stats.crashes++;
    const oom = err.code === 'ERR_WORKER_OUT_OF_MEMORY';
    const limit = this.opts.resourceLimits?.maxOldGenerationSizeMb;
    for (const p of slot.pending.values()) {
      p.reject(new WorkerTaskError(oom ? 'WORKER_OUT_OF_MEMORY' : this.closed ? 'POOL_CLOSED' : 'WORKER_DIED', oom
        ? `${this.opts.name}: task ${p.task} needed more than the worker's ${limit ?? '?'} MiB heap (input too large)`
        : this.closed ? `${this.opts.name}: the worker pool is closed (the daemon is stopping)` : `${this.opts.name}: the worker running ${p.task} died: ${err.message}`));
    }
    slot.pending.clear();
  }
}

/** What a task gets besides its input. */
export interface TaskContext {
  /** Ask the main thread (WorkerPoolOptions.onRequest) and wait for its answer. */
  request<T>(body: unknown): Promise<T>;
}

export type TaskResult = { value: unknown; transfer?: Transferable[] } | undefined;
export type TaskHandler = (input: never, ctx: TaskContext) => Promise<TaskResult> | TaskResult;

/** Worker side: serve the named tasks of this script. Call once at the top level of a worker script. */
export function serveTasks(handlers: Record<string, TaskHandler>): void {
  const port = parentPort;
  if (!port) throw new Error('serveTasks() must run in a worker thread');
  lowerPriority((workerData as { nice?: number } | undefined)?.nice ?? 0);
  const waiting = new Map<string, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  let nextReq = 1;
  port.on('message', (m: ToWorker) => {
    if (m.kind === 'reply') {
      const w = waiting.get(`${m.id}:${m.req}`);
      waiting.delete(`${m.id}:${m.req}`);
      if (m.error !== undefined) w?.reject(Object.assign(new Error(m.error.message), m.error.code ? { code: m.error.code } : {}));
      else w?.resolve(m.value);
      return;
    }
    const handler = handlers[m.task];
    const ctx: TaskContext = {
      request: <T>(body: unknown) => new Promise<T>((resolve, reject) => {
        const req = nextReq++;
        waiting.set(`${m.id}:${req}`, { resolve: resolve as (v: unknown) => void, reject });
        port.postMessage({ kind: 'request', id: m.id, req, body } satisfies FromWorker);
      }),
    };
    Promise.resolve()
      .then(() => {
        if (!handler) throw new Error(`unknown task ${m.task}`);
        return handler(m.input as never, ctx);
      })
      .then(
        (r) => port.postMessage({ kind: 'done', id: m.id, value: r?.value } satisfies FromWorker, r?.transfer ?? []),
        (err: unknown) => port.postMessage({ kind: 'done', id: m.id, error: errorOf(err) } satisfies FromWorker),
      );
  });
}

/**
 * What to list for transfer so `b` crosses threads without a copy: its memory, when `b` owns all of it. A small
 * Buffer shares Node's 8 KiB pool, which must never be transferred (cloning it copies just that pool).
 */
export function transferable(b: Uint8Array): ArrayBuffer[] {
  return b.byteOffset === 0 && b.buffer.byteLength === b.length && !(b.buffer instanceof SharedArrayBuffer) ? [b.buffer as ArrayBuffer] : [];
}

/** An error as it crosses threads: its message and code (stacks and classes do not survive). */
function errorOf(err: unknown): { message: string; code?: string } {
  const e = err as { message?: string; code?: unknown };
  return { message: e?.message ?? String(err), ...(typeof e?.code === 'string' ? { code: e.code } : {}) };
}

/** Renice this thread (Linux: setpriority on the thread id); best effort. */
function lowerPriority(nice: number): void {
  if (nice <= 0) return;
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (Number.isInteger(tid) && tid > 0) setPriority(tid, nice);
  } catch {
    // Not Linux, or /proc is not mounted: the work still runs, just at normal priority.
  }
}
