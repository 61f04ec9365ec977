// HTTP plumbing: one undici Pool per origin, per-attempt deadlines, bounded retries with jittered backoff,
// body readers that check lengths, and URL redaction for messages.
import type { Readable } from 'node:stream';
import { Pool, type Dispatcher } from 'undici';
import { TocfsError } from '../util/index.js';
import { RegistryAbortedError, RegistryTimeoutError, RegistryUnavailableError, type RegistryError } from './errors.js';

export interface RetryPolicy {
  /** Attempts in total, the first one included (≥ 1). */
  maxAttempts: number;
  /** No new attempt starts after this many milliseconds, and a running one is cut off at this point. */
  maxTotalMs: number;
  /** Backoff before retry n is a random value in [d/2, d], d = min(maxDelayMs, baseDelayMs · 2^(n-1)). */
  baseDelayMs: number;
  maxDelayMs: number;
}

export interface Timeouts {
  connectMs: number;
  /** Until the response headers have arrived. */
  headersMs: number;
  /** Longest pause between two body chunks (a stalled transfer fails after this). */
  bodyIdleMs: number;
}

export const DEFAULT_RETRY_POLICY: Readonly<RetryPolicy> = Object.freeze({
  maxAttempts: 4, maxTotalMs: 30_000, baseDelayMs: 100, maxDelayMs: 2_000,
});

export const DEFAULT_TIMEOUTS: Readonly<Timeouts> = Object.freeze({ connectMs: 10_000, headersMs: 30_000, bodyIdleMs: 30_000 });

/** How long a read or lookup may take, retries included, when its caller names no deadline (the daemon sets
 * RegistryClientOptions.fetchTimeoutMs from fetch_timeout). */
export const DEFAULT_FETCH_TIMEOUT_MS = 30_000;

/** Minimal logger shape (pino-compatible). Never receives secrets. */
export interface RegistryLogger {
  debug(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export const silentLogger: RegistryLogger = { debug: () => undefined, warn: () => undefined };

/** Thrown inside an attempt to ask for a retry (5xx, reset, stall, truncation). */
export class TransientError extends Error {
  readonly retryAfterMs: number | undefined;
  constructor(message: string, options?: { cause?: unknown; retryAfterMs?: number }) {
    super(message, options);
    this.name = 'TransientError';
    this.retryAfterMs = options?.retryAfterMs;
  }
}

const TRANSIENT_CODES = new Set([
  'UND_ERR_SOCKET', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_CLOSED',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH', 'ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN',
  'ENETUNREACH', 'EHOSTUNREACH', 'ECONNABORTED',
]);

export function isTransient(err: unknown): boolean {
  if (err instanceof TransientError) return true;
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && TRANSIENT_CODES.has(code);
}

/** origin + path, never the query (signed URLs carry credentials there) nor any header. */
export function redactUrl(url: URL | string): string {
  const u = typeof url === 'string' ? new URL(url) : url;
  return `${u.protocol}//${u.host}${u.pathname}${u.search ? '?…' : ''}`;
}

export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
  }
  return String(err);
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) { reject(signal.reason); return; }
    const timer = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve(); }, ms);
    const onAbort = (): void => { clearTimeout(timer); reject(signal?.reason); };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export function backoffDelay(policy: RetryPolicy, retry: number, random = Math.random): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (retry - 1));
  return ceiling / 2 + random() * (ceiling / 2);
}

/** What bounds one operation, whatever it is waiting for (connect, TLS, headers, body, a shared ping or token,
 * a backoff sleep): the caller's abort, and an absolute deadline. */
export interface Limits {
  /** Ends the operation at once with RegistryAbortedError (or RegistryTimeoutError if it is a timeout signal). */
  signal?: AbortSignal | undefined;
  /** Absolute time (Date.now() ms) at which the operation fails with RegistryTimeoutError. */
  deadline?: number | undefined;
}

/** One operation as messages name it. */
export interface Operation {
  /** What it does: "reading bytes 0-9 of blob sha256:… of 127.0.0.1:5000/repo". */
  what: string;
  /** The registry host it talks to. */
  host: string;
  limits: Limits;
  /** The configured fetch timeout, named in timeout messages. */
  timeoutMs?: number | undefined;
}

export interface AttemptContext {
  /** 1-based. */
  attempt: number;
  /** The caller's signal (if any), to pass on to requests. */
  signal: AbortSignal | undefined;
  /** Absolute time (Date.now() scale) by which everything must be over; requests cut themselves off there. */
  deadline: number;
  /** The caller's limits, for waits on shared work inside an attempt. */
  limits: Limits;
  /** Milliseconds left until the deadline. */
  remainingMs(): number;
}

function isTimeoutReason(reason: unknown): boolean {
  return reason instanceof Error && reason.name === 'TimeoutError';
}

function abortedError(op: Operation, started: number): RegistryError {
  const reason = op.limits.signal?.reason;
  // AbortSignal.timeout(ms) is a deadline too: say so, not "aborted by the caller".
  if (isTimeoutReason(reason)) return new RegistryTimeoutError(op.what, op.host, Date.now() - started, op.timeoutMs, { cause: reason });
  return new RegistryAbortedError(op.what, { cause: reason });
}

/**
 * Call `fn` once Date.now() has reached `deadline`; returns a cancel function. A plain setTimeout can fire a
 * millisecond before it by Date.now() (timers run on the monotonic clock, deadlines on the wall clock), and an
 * early fire would let a nested wait's timeout race ahead of the operation's own and name the wrong operation,
 * or be taken for an ordinary failure by the retry loop's `Date.now() >= deadline` test.
 */
function atDeadline(deadline: number, fn: () => void, unref = false): () => void {
  let timer: ReturnType<typeof setTimeout>;
  // `fn` always runs from a timer, never inside this call: callers cancel through the function returned here.
  const arm = (): void => {
    timer = setTimeout(() => (Date.now() >= deadline ? fn() : arm()), Math.max(0, deadline - Date.now()));
    if (unref) timer.unref();
  };
  arm();
  return () => clearTimeout(timer);
}

/**
 * Settle with `work`, or fail at the operation's deadline or on its abort, whichever comes first. The work
 * itself is left to end on its own (requests carry the same deadline); this is what makes the bound hold even
 * where undici cannot be interrupted (a request queued for a connection, a TCP or TLS handshake).
 */
export function bounded<T>(work: Promise<T>, op: Operation, started = Date.now()): Promise<T> {
  const { signal, deadline } = op.limits;
  if (!signal && deadline === undefined) return work;
  if (signal?.aborted) {
    work.catch(() => undefined);
    return Promise.reject(abortedError(op, started));
  }
  const timeout = (): RegistryTimeoutError => new RegistryTimeoutError(op.what, op.host, (deadline ?? started) - started, op.timeoutMs);
  if (deadline !== undefined && Date.now() >= deadline) {
    work.catch(() => undefined);
    return Promise.reject(timeout());
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => { done(); reject(abortedError(op, started)); };
    const cancelTimer = deadline === undefined ? undefined : atDeadline(deadline, () => { done(); reject(timeout()); });
    function done(): void {
      cancelTimer?.();
      signal?.removeEventListener('abort', onAbort);
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    work.then((v) => { done(); resolve(v); }, (e: unknown) => { done(); reject(e); });
  });
}

export interface RetryRun {
  op: Operation;
  policy: RetryPolicy;
  logger: RegistryLogger;
}

/**
 * Run `fn` until it succeeds, fails with a non-transient error, or the policy (attempt count or total time)
 * is used up. The caller's limits end everything at their point: abort with RegistryAbortedError, the
 * deadline with RegistryTimeoutError; no new attempt or backoff starts after that.
 */
export async function withRetries<T>(run: RetryRun, fn: (ctx: AttemptContext) => Promise<T>): Promise<T> {
  const started = Date.now();
  const state = { over: false };
  try {
    return await bounded(retryLoop(run, fn, started, state), run.op, started);
  } finally {
    state.over = true;
  }
}

async function retryLoop<T>({ op, policy, logger }: RetryRun, fn: (ctx: AttemptContext) => Promise<T>, started: number,
  state: { over: boolean }): Promise<T> {
  const { what, limits } = op;
  const callerSignal = limits.signal;
  const callerDeadline = limits.deadline ?? Infinity;
  const deadline = Math.min(started + policy.maxTotalMs, callerDeadline);
  const remainingMs = (): number => Math.max(1, deadline - Date.now());
  let lastError: unknown;
  let attempt = 0;
  while (attempt < Math.max(1, policy.maxAttempts) && !state.over) {
    attempt++;
    if (callerSignal?.aborted) throw abortedError(op, started);
    try {
      return await fn({ attempt, signal: callerSignal, deadline, limits, remainingMs });
    } catch (err) {
      if (callerSignal?.aborted) throw abortedError(op, started);
      const outOfTime = Date.now() >= deadline;
      if (!outOfTime && !isTransient(err)) {
        if (err instanceof TocfsError) throw err;
        // TLS failures, DNS errors, protocol errors: not worth retrying, but still a typed error.
        throw new RegistryUnavailableError(`${what}: ${describeError(err)}`, attempt, { cause: err });
      }
      lastError = err;
      if (outOfTime) break;
      const retryAfter = err instanceof TransientError ? err.retryAfterMs : undefined;
      const delay = Math.max(backoffDelay(policy, attempt), Math.min(retryAfter ?? 0, policy.maxDelayMs));
      if (attempt >= policy.maxAttempts || Date.now() + delay >= deadline || state.over) break;
      logger.debug({ what, attempt, delayMs: Math.round(delay), error: describeError(err) }, 'registry request failed, retrying');
      try {
        await sleep(delay, callerSignal);
      } catch {
        throw abortedError(op, started);
      }
    }
  }
  if (Date.now() >= callerDeadline) {
    throw new RegistryTimeoutError(what, op.host, callerDeadline - started, op.timeoutMs, { cause: lastError });
  }
  const elapsed = Date.now() - started;
  const limit = Date.now() >= deadline ? ` (stopped at the ${policy.maxTotalMs} ms limit)` : '';
  throw new RegistryUnavailableError(`${what}: failed after ${attempt} attempt(s) in ${elapsed} ms: ${describeError(lastError)}${limit}; ` +
    'check that the registry is reachable and healthy', attempt, { cause: lastError });
}

/**
 * Wait for work that other callers share (a ping, a token, a manifest fetch) without letting one caller's abort
 * or deadline cancel it for the others: the shared work runs within its own bounds, and only this caller stops waiting.
 */
export function awaitShared<T>(shared: Promise<T>, op: Operation): Promise<T> {
  return bounded(shared, op);
}

/** Raised into a response body that is still streaming when the operation's deadline passes. */
export class DeadlineError extends TransientError {
  constructor(ms: number) {
    super(`the transfer was cut off at its deadline (${ms} ms)`);
  }
}

export interface SendOptions {
  method: Dispatcher.HttpMethod;
  headers?: Record<string, string>;
  body?: string | Buffer | Uint8Array | Readable | null;
  signal?: AbortSignal;
  /** Skip TLS verification (registries.conf `insecure`). */
  tlsInsecure?: boolean;
  /** Absolute time (Date.now() scale) at which the request is cut off, headers or body. */
  deadline?: number;
}

export type Response = Dispatcher.ResponseData<null> & { url: URL };

export interface HttpTransportOptions {
  /** Connections per origin (default 16). */
  connections?: number;
  timeouts?: Partial<Timeouts>;
  userAgent?: string;
}

/**
 * How long after the deadline undici's own header timer is set to fire. The operation's deadline is enforced
 * by `bounded` (exact, Node timers); undici's timer only frees the connection afterwards. Undici runs timers of
 * a second or more on a coarse clock that fires up to half a second off, and one firing before the deadline
 * turned a timeout into "failed after 1 attempt: Headers Timeout Error" (seen in CI).
 */
const UNDICI_TIMER_MARGIN_MS = 1000;

/** Pools per origin; `request` only — redirects are the caller's business. */
export class HttpTransport {
  readonly timeouts: Timeouts;
  readonly #pools = new Map<string, Pool>();
  readonly #connections: number;
  readonly #userAgent: string;

  constructor(opts: HttpTransportOptions = {}) {
    this.timeouts = { ...DEFAULT_TIMEOUTS, ...opts.timeouts };
    this.#connections = opts.connections ?? 16;
    this.#userAgent = opts.userAgent ?? 'tocfs';
  }

  #pool(origin: string, tlsInsecure: boolean): Pool {
    const key = `${tlsInsecure ? 'insecure ' : ''}${origin}`;
    let pool = this.#pools.get(key);
    if (!pool) {
      pool = new Pool(origin, {
        connections: this.#connections,
        pipelining: 1,
        connectTimeout: this.timeouts.connectMs,
        headersTimeout: this.timeouts.headersMs,
        bodyTimeout: this.timeouts.bodyIdleMs,
        ...(tlsInsecure ? { connect: { rejectUnauthorized: false } } : {}),
      });
      this.#pools.set(key, pool);
    }
    return pool;
  }

  /**
   * One request. The deadline is enforced without an AbortSignal per request (they are costly on this hot
   * path): the header wait is capped to it, and a timer destroys a body still streaming when it passes.
   */
  async send(url: URL, opts: SendOptions): Promise<Response> {
    const pool = this.#pool(url.origin, opts.tlsInsecure ?? false);
    const deadline = opts.deadline;
    const res = await pool.request({
      path: url.pathname + url.search,
      method: opts.method,
      headers: { 'user-agent': this.#userAgent, ...opts.headers },
      body: opts.body ?? null,
      signal: opts.signal,
      headersTimeout: deadline === undefined ? this.timeouts.headersMs
        : Math.max(1, Math.min(this.timeouts.headersMs, deadline - Date.now() + UNDICI_TIMER_MARGIN_MS)),
      bodyTimeout: this.timeouts.bodyIdleMs,
    });
    if (deadline !== undefined) {
      const left = deadline - Date.now();
      const body = res.body;
      const cancel = atDeadline(deadline, () => body.destroy(new DeadlineError(left)), true);
      body.once('close', cancel);
    }
    return Object.assign(res, { url });
  }

  async close(): Promise<void> {
    const pools = [...this.#pools.values()];
    this.#pools.clear();
    await Promise.all(pools.map((p) => p.close().catch(() => p.destroy())));
  }
}

export function header(headers: Dispatcher.ResponseData['headers'], name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Discard a body without failing (the connection is reused if the body was small). */
export async function discard(res: Dispatcher.ResponseData): Promise<void> {
  try {
    await res.body.dump({ limit: 64 * 1024 });
  } catch {
    // the connection is gone anyway
  }
}

/** Read a whole body, failing with `tooLarge()` past `limit` bytes. */
export async function readLimited(body: Dispatcher.ResponseData['body'], limit: number, tooLarge: () => Error): Promise<Buffer> {
  const parts: Buffer[] = [];
  let total = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > limit) {
      body.destroy();
      throw tooLarge();
    }
    parts.push(chunk);
  }
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts, total);
}

/**
 * Read exactly `length` bytes. A short body is a TransientError (retry); a longer one is `tooLong()` (the
 * server answered something else than asked).
 */
export async function readExactly(body: Dispatcher.ResponseData['body'], length: number, what: string, tooLong: () => Error): Promise<Buffer> {
  const out = Buffer.allocUnsafe(length);
  let filled = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      if (filled + chunk.length > length) {
        body.destroy();
        throw tooLong();
      }
      chunk.copy(out, filled);
      filled += chunk.length;
    }
  } catch (err) {
    if (isTransient(err)) throw new TransientError(`${what}: transfer broke after ${filled} of ${length} bytes: ${describeError(err)}`, { cause: err });
    throw err;
  }
  if (filled !== length) throw new TransientError(`${what}: truncated answer, ${filled} of ${length} bytes`);
  return out;
}

export function parseRetryAfter(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}
