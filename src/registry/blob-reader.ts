// Reading blobs from a registry: HEAD for sizes, single- and multi-range GETs, manual redirects with the final
// URL cached per blob, and the fallbacks for servers that ignore or refuse multi-range requests. Every answer
// is checked against what was asked; short data is retried, never returned.
import { LRUCache } from 'lru-cache';
import type { Digest } from '../util/index.js';
import { RangeResponseError, RegistryHttpError } from './errors.js';
import { discard, header, readExactly, readLimited, redactUrl, TransientError, withRetries, type AttemptContext, type Limits,
  type Response } from './http.js';
import { multipartBoundary, parseContentRange, parseMultipartByteRanges } from './multipart.js';
import type { Endpoint } from './registries-conf.js';
import { unexpectedStatus, type RegistrySession } from './session.js';

/** A byte range of a blob: `start` inclusive, `end` exclusive. */
export interface ByteRange {
  start: number;
  end: number;
}

export interface BlobReaderOptions {
  /** Ranges per multi-range request (default 32). */
  maxRangesPerRequest: number;
  /** Bytes per multi-range request (default 32 MiB); batches are split beyond it. */
  maxBytesPerRequest: number;
  /** Ranges closer than this are fetched as one (default 0: only overlapping or touching ranges merge). */
  coalesceGapBytes: number;
  /** A server that answers a range request with the whole blob (200): slice it out only up to this blob
   * size (default 1 MiB); bigger blobs get one range request per range instead. */
  fullBodyFallbackBytes: number;
  /** How long a redirect target is reused for the same blob (default 5 min; signed URLs expire). */
  redirectCacheTtlMs: number;
  /** How long a host that refused a multi-range request (416/400, or 200 for a big blob) gets single-range
   * requests only, before multi-range is tried again (default 10 min): a proxy or CDN hiccup is not forever. */
  multiRangeRetryMs: number;
}

export const DEFAULT_BLOB_READER_OPTIONS: Readonly<BlobReaderOptions> = Object.freeze({
  maxRangesPerRequest: 32,
  maxBytesPerRequest: 32 * 1024 * 1024,
  coalesceGapBytes: 0,
  fullBodyFallbackBytes: 1024 * 1024,
  redirectCacheTtlMs: 5 * 60_000,
  multiRangeRetryMs: 10 * 60_000,
});

const MAX_REDIRECTS = 5;
const REDIRECT_STATUS = new Set([301, 302, 303, 307, 308]);
/** Room for the part headers of a multipart answer (boundary line + Content-Type + Content-Range). */
const MULTIPART_OVERHEAD_PER_PART = 1024;

/** Statistics a benchmark or the metrics endpoint can read. */
export interface BlobReaderStats {
  requests: number;
  multiRangeRequests: number;
  singleRangeFallbacks: number;
  redirectsFollowed: number;
  redirectCacheHits: number;
}

export class BlobReader {
  readonly session: RegistrySession;
  readonly opts: BlobReaderOptions;
  readonly stats: BlobReaderStats = { requests: 0, multiRangeRequests: 0, singleRangeFallbacks: 0, redirectsFollowed: 0, redirectCacheHits: 0 };
  readonly #redirects: LRUCache<string, URL>;
  /** API hosts that answered a multi-range request with 200/400/416 (directly or through their redirects), and
   * until when (Date.now() ms) they get single-range requests only. */
  readonly #singleRangeUntil = new Map<string, number>();

  constructor(session: RegistrySession, opts: Partial<BlobReaderOptions> = {}) {
    this.session = session;
    this.opts = { ...DEFAULT_BLOB_READER_OPTIONS, ...opts };
    this.#redirects = new LRUCache<string, URL>({ max: 4096, ttl: this.opts.redirectCacheTtlMs });
  }

  #blobPath(ep: Endpoint, digest: Digest): string {
    return `/v2/${ep.reference.path}/blobs/${digest}`;
  }

  #cacheKey(ep: Endpoint, digest: Digest): string {
    return `${ep.apiHost}/${ep.reference.path}@${digest}`;
  }

  /**
   * GET or HEAD a blob, following redirects by hand: Authorization goes only to the registry's origin, and the
   * final URL is remembered so later reads skip the registry round trip until it expires or fails.
   */
  async open(ep: Endpoint, digest: Digest, method: 'GET' | 'HEAD', headers: Record<string, string>, ctx: AttemptContext,
    what: string): Promise<Response> {
    const key = this.#cacheKey(ep, digest);
    const cached = this.#redirects.get(key);
    this.stats.requests++;
    if (cached) {
      const res = await this.session.send(ep, { method, path: cached, headers, actions: ['pull'], what }, ctx)
        .catch((err: unknown) => {
          // A failing storage URL is not a failing registry: drop it and ask the registry again below.
          if (!(err instanceof TransientError)) throw err;
          this.#redirects.delete(key);
          return undefined;
        });
      if (res === undefined) return this.open(ep, digest, method, headers, ctx, what);
      if (res.statusCode < 300 || res.statusCode === 416) {
        this.stats.redirectCacheHits++;
        return res;
      }
      // Expired signature, moved object, or a failing storage: go back to the registry for a fresh URL.
      await discard(res);
      this.#redirects.delete(key);
    }
    let res = await this.session.send(ep, { method, path: this.#blobPath(ep, digest), headers, actions: ['pull'], what }, ctx);
    let hops = 0;
    while (REDIRECT_STATUS.has(res.statusCode)) {
      const location = header(res.headers, 'location');
      await discard(res);
      if (location === undefined) throw new RegistryHttpError(res.statusCode, `${what}: redirect without Location from ${redactUrl(res.url)}`);
      if (++hops > MAX_REDIRECTS) throw new RegistryHttpError(res.statusCode, `${what}: more than ${MAX_REDIRECTS} redirects`);
      const target = new URL(location, res.url);
      this.stats.redirectsFollowed++;
      // session.send adds Authorization only for the registry's own origin, and turns 5xx into a retry.
      res = await this.session.send(ep, { method, path: target, headers, actions: ['pull'], what }, ctx);
    }
    if (hops > 0 && res.statusCode < 300) this.#redirects.set(key, res.url);
    return res;
  }

  #retry<T>(ep: Endpoint, what: string, limits: Limits, fn: (ctx: AttemptContext) => Promise<T>): Promise<T> {
    return withRetries({ op: this.session.op(ep, what, limits), policy: this.session.retry, logger: this.session.logger }, fn);
  }

  /** Size of a blob from HEAD, or undefined if the registry does not have it. */
  async stat(ep: Endpoint, digest: Digest, limits: Limits): Promise<number | undefined> {
    const what = `checking blob ${digest} in ${ep.reference.name}`;
    return this.#retry(ep, what, limits, async (ctx) => {
      const res = await this.open(ep, digest, 'HEAD', {}, ctx, what);
      await discard(res);
      if (res.statusCode === 404) return undefined;
      if (res.statusCode !== 200) throw await unexpectedStatus(res, what);
      const length = Number(header(res.headers, 'content-length'));
      if (!Number.isSafeInteger(length) || length < 0) throw new RegistryHttpError(200, `${what}: the answer has no usable Content-Length`);
      return length;
    });
  }

  /** The whole blob (bounded by `size`), as one request. */
  async readAll(ep: Endpoint, digest: Digest, size: number, limits: Limits): Promise<Buffer> {
    const what = `reading blob ${digest} of ${ep.reference.name}`;
    return this.#retry(ep, what, limits, async (ctx) => {
      const res = await this.open(ep, digest, 'GET', {}, ctx, what);
      if (res.statusCode !== 200) throw await unexpectedStatus(res, what);
      return readExactly(res.body, size, what, () => new RangeResponseError(`${what}: the registry sent more than the ${size} bytes expected`));
    });
  }

  /** Fetch one range (end exclusive) of a blob of `blobSize` bytes. */
  async readRange(ep: Endpoint, digest: Digest, blobSize: number, range: ByteRange, limits: Limits): Promise<Buffer> {
    const what = `reading bytes ${range.start}-${range.end - 1} of blob ${digest} of ${ep.reference.name}`;
    return this.#retry(ep, what, limits, async (ctx) => {
      const res = await this.open(ep, digest, 'GET', { range: `bytes=${range.start}-${range.end - 1}` }, ctx, what);
      const length = range.end - range.start;
      const tooLong = (): Error => new RangeResponseError(`${what}: the registry sent more bytes than asked`);
      if (res.statusCode === 206) {
        const cr = parseContentRange(header(res.headers, 'content-range'));
        if (!cr || cr.start !== range.start || cr.end !== range.end || (cr.size !== undefined && cr.size !== blobSize)) {
          await discard(res);
          throw new RangeResponseError(`${what}: the registry answered Content-Range ${JSON.stringify(header(res.headers, 'content-range'))}`);
        }
        return readExactly(res.body, length, what, tooLong);
      }
      if (res.statusCode === 200) return this.#sliceWholeBody(res, blobSize, [range], what).then((b) => b[0]!);
      throw await unexpectedStatus(res, what);
    });
  }

  /** A 200 answer to a range request: the whole blob. Read it (bounded by the blob size) and cut the ranges. */
  async #sliceWholeBody(res: Response, blobSize: number, ranges: readonly ByteRange[], what: string): Promise<Buffer[]> {
    const declared = header(res.headers, 'content-length');
    if (declared !== undefined && Number(declared) !== blobSize) {
      await discard(res);
      throw new RangeResponseError(`${what}: the registry ignored Range and sent ${declared} bytes, but the blob has ${blobSize}`);
    }
    const last = Math.max(...ranges.map((r) => r.end));
    if (blobSize <= this.opts.fullBodyFallbackBytes) {
      const all = await readExactly(res.body, blobSize, what, () => new RangeResponseError(`${what}: more than ${blobSize} bytes`));
      return ranges.map((r) => all.subarray(r.start, r.end));
    }
    // Big blob and no Range support: read only up to the last byte needed, then drop the connection.
    const prefix = Buffer.allocUnsafe(last);
    let filled = 0;
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      const take = Math.min(chunk.length, last - filled);
      chunk.copy(prefix, filled, 0, take);
      filled += take;
      if (filled === last) break;
    }
    res.body.destroy();
    if (filled < last) throw new TransientError(`${what}: truncated answer, ${filled} of ${last} bytes`);
    this.session.logger.warn({ url: redactUrl(res.url) }, 'registry ignores Range requests; reading blob prefixes');
    return ranges.map((r) => prefix.subarray(r.start, r.end));
  }

  /**
   * Fetch several ranges (sorted, non-overlapping) with one multi-range request where the server allows it.
   * Whatever the answer does not cover is fetched with single-range requests.
   */
  async readRanges(ep: Endpoint, digest: Digest, blobSize: number, ranges: readonly ByteRange[], limits: Limits): Promise<Buffer[]> {
    if (ranges.length === 1) return [await this.readRange(ep, digest, blobSize, ranges[0]!, limits)];
    const results: (Buffer | undefined)[] = new Array(ranges.length).fill(undefined);
    if (this.#multiRangeAllowed(ep.apiHost)) {
      const what = `reading ${ranges.length} ranges of blob ${digest} of ${ep.reference.name}`;
      const got = await this.#retry(ep, what, limits, (ctx) => this.#multiRangeAttempt(ep, digest, blobSize, ranges, ctx, what));
      got.forEach((b, i) => { results[i] = b; });
    }
    const missing = results.flatMap((b, i) => (b === undefined ? [i] : []));
    if (missing.length > 0) this.stats.singleRangeFallbacks += missing.length;
    await Promise.all(missing.map(async (i) => { results[i] = await this.readRange(ep, digest, blobSize, ranges[i]!, limits); }));
    return results as Buffer[];
  }

  /** False while a host's refusal of multi-range requests is recent; afterwards it gets another chance. */
  #multiRangeAllowed(host: string): boolean {
    const until = this.#singleRangeUntil.get(host);
    if (until === undefined) return true;
    if (Date.now() < until) return false;
    this.#singleRangeUntil.delete(host);
    return true;
  }

  #refusedMultiRange(host: string): void {
    if (!this.#singleRangeUntil.has(host)) {
      this.session.logger.warn({ host, retryInMs: this.opts.multiRangeRetryMs }, 'registry refuses multi-range requests; using single ranges for a while');
    }
    this.#singleRangeUntil.set(host, Date.now() + this.opts.multiRangeRetryMs);
  }

  async #multiRangeAttempt(ep: Endpoint, digest: Digest, blobSize: number, ranges: readonly ByteRange[], ctx: AttemptContext,
    what: string): Promise<(Buffer | undefined)[]> {
    const spec = ranges.map((r) => `${r.start}-${r.end - 1}`).join(',');
    this.stats.multiRangeRequests++;
    const res = await this.open(ep, digest, 'GET', { range: `bytes=${spec}` }, ctx, what);
    const none = (): (Buffer | undefined)[] => ranges.map(() => undefined);
    if (res.statusCode === 200) {
      if (blobSize <= this.opts.fullBodyFallbackBytes) return this.#sliceWholeBody(res, blobSize, ranges, what);
      res.body.destroy();
      this.#refusedMultiRange(ep.apiHost);
      return none();
    }
    if (res.statusCode === 400 || res.statusCode === 416) {
      await discard(res);
      this.#refusedMultiRange(ep.apiHost);
      return none();
    }
    if (res.statusCode !== 206) throw await unexpectedStatus(res, what);
    const boundary = multipartBoundary(header(res.headers, 'content-type'));
    const wanted = ranges.reduce((n, r) => n + r.end - r.start, 0);
    if (boundary === undefined) {
      // A single part: the server merged the ranges (allowed) or answered only some; use what it covers.
      const cr = parseContentRange(header(res.headers, 'content-range'));
      if (!cr || (cr.size !== undefined && cr.size !== blobSize)) {
        await discard(res);
        throw new RangeResponseError(`${what}: 206 without multipart body or usable Content-Range`);
      }
      const data = await readExactly(res.body, cr.end - cr.start, what, () => new RangeResponseError(`${what}: more bytes than its Content-Range`));
      return ranges.map((r) => (r.start >= cr.start && r.end <= cr.end ? data.subarray(r.start - cr.start, r.end - cr.start) : undefined));
    }
    const limit = wanted + (ranges.length + 2) * MULTIPART_OVERHEAD_PER_PART;
    const body = await readLimited(res.body, limit, () => new RangeResponseError(`${what}: multipart answer larger than ${limit} bytes`))
      .catch((err: unknown) => { throw err instanceof RangeResponseError ? err : new TransientError(`${what}: transfer broke`, { cause: err }); });
    const parts = parseMultipartByteRanges(body, boundary, what);
    for (const p of parts) {
      if (p.size !== undefined && p.size !== blobSize) throw new RangeResponseError(`${what}: a part says the blob has ${p.size} bytes, not ${blobSize}`);
    }
    return ranges.map((r) => {
      const p = parts.find((q) => q.start <= r.start && q.end >= r.end);
      return p ? p.data.subarray(r.start - p.start, r.end - p.start) : undefined;
    });
  }
}
