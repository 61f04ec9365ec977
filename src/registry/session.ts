// Talking to one registry API endpoint: scheme choice (https, or http for `insecure`), the /v2/ ping that
// reveals the auth challenge, authorised requests with one re-authentication on 401, and the transient-status
// policy (5xx, 429, 408 are retried by the caller's retry loop).
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { Authenticator, repositoryScope } from './auth.js';
import { RegistryAuthError, RegistryHttpError, RegistryNotFoundError, RegistryPlainHttpError } from './errors.js';
import { awaitShared, DEFAULT_FETCH_TIMEOUT_MS, discard, header, HttpTransport, isTransient, parseRetryAfter, readLimited, redactUrl,
  TransientError, withRetries, type AttemptContext, type Limits, type Operation, type RegistryLogger, type Response,
  type RetryPolicy } from './http.js';
import type { Endpoint } from './registries-conf.js';

export interface CallOptions {
  method: Dispatcher.HttpMethod;
  /** Path below the endpoint's origin (`/v2/...`) or an absolute URL (upload locations). */
  path: string | URL;
  headers?: Record<string, string>;
  /** Called per attempt, so a stream body can be re-created for a retry. */
  body?: () => string | Buffer | Uint8Array | Readable | null;
  /** Repository actions the token must grant, e.g. ['pull'] or ['pull', 'push']. */
  actions: readonly string[];
  /** Extra scopes (e.g. pull on the source repository of a cross-repository mount). */
  extraScopes?: readonly string[];
  /** What this request does, for messages: "fetching manifest docker.io/library/alpine:latest". */
  what: string;
}

const TRANSIENT_STATUS = new Set([408, 429, 500, 502, 503, 504]);

export interface SessionOptions {
  /** Bound of an operation whose caller gives no deadline (default DEFAULT_FETCH_TIMEOUT_MS). */
  fetchTimeoutMs?: number;
  /** The registries.conf file in use, named in the advice for a plain-HTTP registry. */
  registriesConfName?: string;
}

/** What callers may pass to bound an operation. */
export interface CallLimits {
  signal?: AbortSignal | undefined;
  /** Absolute time (Date.now() ms) by which the operation must be over. */
  deadline?: number | undefined;
}

/** OpenSSL's complaint when the peer of a TLS handshake speaks plain HTTP. */
function isPlainHttpAnswer(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'ERR_SSL_WRONG_VERSION_NUMBER' || (err instanceof Error && /wrong version number/i.test(err.message));
}

export class RegistrySession {
  readonly http: HttpTransport;
  readonly auth: Authenticator;
  readonly retry: RetryPolicy;
  readonly logger: RegistryLogger;
  readonly fetchTimeoutMs: number;
  readonly #registriesConfName: string;
  readonly #bases = new Map<string, Promise<URL>>();
  /** Bases already settled, so the hot path needs no await for them. */
  readonly #resolved = new Map<string, URL>();

  constructor(http: HttpTransport, auth: Authenticator, retry: RetryPolicy, logger: RegistryLogger, opts: SessionOptions = {}) {
    this.http = http;
    this.auth = auth;
    this.retry = retry;
    this.logger = logger;
    this.fetchTimeoutMs = opts.fetchTimeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS;
    this.#registriesConfName = opts.registriesConfName ?? 'registries.conf';
  }

  /** The limits of a read or lookup: the caller's, with the fetch timeout as the deadline when it names none. */
  limits(call: CallLimits = {}): Limits {
    return { signal: call.signal, deadline: call.deadline ?? Date.now() + this.fetchTimeoutMs };
  }

  /** An operation against an endpoint, as messages name it. */
  op(ep: Endpoint, what: string, limits: Limits): Operation {
    return { what, host: ep.apiHost, limits, timeoutMs: this.fetchTimeoutMs };
  }

  /** The base URL of an endpoint's API host; pings /v2/ once per host to learn scheme and auth challenge. */
  base(ep: Endpoint, limits: Limits): Promise<URL> {
    const key = `${ep.insecure ? 'insecure ' : ''}${ep.apiHost}`;
    const what = `contacting registry ${ep.apiHost}`;
    let pending = this.#bases.get(key);
    if (!pending) {
      // Shared by every caller, so bounded by the fetch timeout, not a caller's limits; each caller waits within its own.
      const op = this.op(ep, what, this.limits());
      pending = withRetries({ op, policy: this.retry, logger: this.logger }, (ctx) => this.#ping(ep, ctx));
      this.#bases.set(key, pending);
      pending.then((url) => this.#resolved.set(key, url), () => this.#bases.delete(key));
    }
    return awaitShared(pending, this.op(ep, what, limits));
  }

  async #ping(ep: Endpoint, ctx: AttemptContext): Promise<URL> {
    const schemes = ep.insecure ? ['https:', 'http:'] : ['https:'];
    let lastError: unknown;
    for (const scheme of schemes) {
      const base = new URL(`${scheme}//${ep.apiHost}/`);
      try {
        const res = await this.http.send(new URL('/v2/', base), {
          method: 'GET', signal: ctx.signal, tlsInsecure: ep.insecure, deadline: ctx.deadline,
        });
        await discard(res);
        if (TRANSIENT_STATUS.has(res.statusCode)) throw new TransientError(`${redactUrl(res.url)} answered HTTP ${res.statusCode}`);
        if (res.statusCode === 401) this.auth.learn(base.origin, header(res.headers, 'www-authenticate'), base);
        else this.auth.learn(base.origin, undefined, base);
        return base;
      } catch (err) {
        lastError = err;
        // With `insecure`, anything that is not an HTTP answer over TLS (handshake failure, plain-HTTP peer)
        // moves on to plain HTTP, as containers/image does; a transient failure of plain HTTP is retried.
        if (scheme === 'https:' && ep.insecure) continue;
        if (isPlainHttpAnswer(err)) throw new RegistryPlainHttpError(ep.apiHost, this.#registriesConfName, { cause: err });
        throw err;
      }
    }
    throw lastError;
  }

  #scopes(ep: Endpoint, opts: Pick<CallOptions, 'actions' | 'extraScopes'>): string[] {
    return [repositoryScope(ep.reference.path, opts.actions), ...(opts.extraScopes ?? [])];
  }

  /**
   * One authorised request (no retry loop): adds Authorization, and on a 401 learns the challenge, drops the
   * cached token and tries once more. Transient statuses become TransientError; other statuses are returned.
   */
  async send(ep: Endpoint, opts: CallOptions, ctx: AttemptContext): Promise<Response> {
    const base = this.#resolved.get(`${ep.insecure ? 'insecure ' : ''}${ep.apiHost}`) ?? await this.base(ep, ctx.limits);
    const url = opts.path instanceof URL ? opts.path : new URL(opts.path, base);
    const scopes = this.#scopes(ep, opts);
    for (let authTry = 0; ; authTry++) {
      const authorization = url.origin === base.origin ? await this.auth.authorization(base.origin, ep, scopes, this.op(ep, opts.what, ctx.limits)) : undefined;
      const res = await this.http.send(url, {
        method: opts.method,
        headers: { ...opts.headers, ...(authorization ? { authorization } : {}) },
        body: opts.body?.() ?? null,
        signal: ctx.signal,
        tlsInsecure: ep.insecure,
        deadline: ctx.deadline,
      });
      // A 401 from another origin (object storage behind a redirect) says nothing about this registry's auth.
      if (res.statusCode === 401 && url.origin === base.origin) {
        await discard(res);
        const challenge = header(res.headers, 'www-authenticate');
        if (authTry === 0 && this.auth.learn(base.origin, challenge, base)) {
          this.auth.invalidate(base.origin, ep, scopes);
          continue;
        }
        throw new RegistryAuthError(`${opts.what}: ${ep.apiHost} refused the ${authorization ? 'credentials' : 'anonymous request'} ` +
          `(HTTP 401); check \`podman login ${ep.reference.domain}\` and that the account may ${opts.actions.join('/')} ${ep.reference.path}`);
      }
      if (TRANSIENT_STATUS.has(res.statusCode)) {
        await discard(res);
        throw new TransientError(`${opts.what}: ${redactUrl(url)} answered HTTP ${res.statusCode}`,
          { retryAfterMs: parseRetryAfter(header(res.headers, 'retry-after')) });
      }
      return res;
    }
  }

  /** A request with the retry policy; `handle` consumes the response (and may throw TransientError to retry). */
  call<T>(ep: Endpoint, opts: CallOptions, limits: Limits, handle: (res: Response, ctx: AttemptContext) => Promise<T>,
    policy: RetryPolicy = this.retry): Promise<T> {
    return withRetries({ op: this.op(ep, opts.what, limits), policy, logger: this.logger },
      async (ctx) => handle(await this.send(ep, opts, ctx), ctx));
  }
}

/** Turn an unexpected answer into a typed error that names the operation and the registry's own error codes. */
export async function unexpectedStatus(res: Response, what: string): Promise<Error> {
  let detail = '';
  try {
    const body = await readLimited(res.body, 64 * 1024, () => new Error('too large'));
    const doc = JSON.parse(body.toString('utf8')) as { errors?: { code?: unknown; message?: unknown }[] };
    if (Array.isArray(doc.errors)) {
      detail = doc.errors.map((e) => `${String(e.code)}: ${String(e.message)}`).join('; ');
    }
  } catch {
    // not a registry error document
  }
  const suffix = detail ? ` (${detail})` : '';
  if (res.statusCode === 404) return new RegistryNotFoundError(`${what}: not found at ${redactUrl(res.url)}${suffix}`);
  if (res.statusCode === 403) {
    return new RegistryAuthError(`${what}: access denied by ${res.url.host} (HTTP 403)${suffix}; check the account's permissions`);
  }
  return new RegistryHttpError(res.statusCode, `${what}: ${redactUrl(res.url)} answered HTTP ${res.statusCode}${suffix}`);
}

/** Errors that mean "try the next mirror": anything but the caller's abort and integrity failures. */
export function shouldTryNextEndpoint(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  // A timeout used up the caller's whole budget: the next endpoint would have none left.
  if (code === 'REGISTRY_ABORTED' || code === 'REGISTRY_DIGEST_MISMATCH' || code === 'REGISTRY_TIMEOUT') return false;
  return isTransient(err) || (err instanceof Error && typeof code === 'string');
}

