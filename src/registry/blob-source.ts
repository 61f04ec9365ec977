// The BlobSource seam (design.md §2): random access to one compressed blob. The registry-backed
// implementation validates ranges, merges overlapping/nearby ones, packs them into multi-range requests
// (bounded in count and bytes), runs the requests concurrently, and falls back from a failing mirror to the
// next endpoint.
import type { Digest } from '../util/index.js';
import type { BlobReader, ByteRange } from './blob-reader.js';
import { InvalidRangeError } from './errors.js';
import type { Limits } from './http.js';
import type { Endpoint } from './registries-conf.js';
import { shouldTryNextEndpoint } from './session.js';

export type { ByteRange } from './blob-reader.js';

export interface BlobSource {
  /** Size of the blob in bytes. */
  readonly size: number;
  /**
   * The bytes of each range (`end` exclusive), in the order asked. The buffers may share memory with each
   * other; callers must not write to them. `signal` aborts the read; `deadline` (Date.now() ms) bounds it end to
   * end, retries included (without one, the client's fetch timeout does).
   */
  readRanges(ranges: readonly ByteRange[], signal?: AbortSignal, deadline?: number): Promise<Buffer[]>;
}

/** One request's worth of merged ranges. */
export interface FetchBatch {
  ranges: ByteRange[];
  bytes: number;
}

export interface FetchPlan {
  /** Merged ranges, sorted. */
  merged: ByteRange[];
  /** For each asked range, the index of the merged range that contains it (-1 for empty ranges). */
  owner: number[];
  batches: FetchBatch[];
}

export function validateRanges(ranges: readonly ByteRange[], size: number, what: string): void {
  for (const [i, r] of ranges.entries()) {
    if (!Number.isSafeInteger(r.start) || !Number.isSafeInteger(r.end) || r.start < 0 || r.end < r.start || r.end > size) {
      throw new InvalidRangeError(`${what}: range #${i} [${r.start}, ${r.end}) is not inside the blob of ${size} bytes`);
    }
  }
}

/** Merge ranges closer than `gap` bytes, then pack the merged ranges into batches. */
export function planFetch(ranges: readonly ByteRange[], gap: number, maxRanges: number, maxBytes: number): FetchPlan {
  const order = ranges.map((_, i) => i).filter((i) => ranges[i]!.end > ranges[i]!.start)
    .sort((a, b) => ranges[a]!.start - ranges[b]!.start);
  const merged: ByteRange[] = [];
  const owner = new Array<number>(ranges.length).fill(-1);
  for (const i of order) {
    const r = ranges[i]!;
    const last = merged[merged.length - 1];
    if (last && r.start <= last.end + gap) {
      last.end = Math.max(last.end, r.end);
    } else {
      merged.push({ start: r.start, end: r.end });
    }
    owner[i] = merged.length - 1;
  }
  const batches: FetchBatch[] = [];
  let current: FetchBatch | undefined;
  for (const m of merged) {
    const len = m.end - m.start;
    if (!current || current.ranges.length >= maxRanges || current.bytes + len > maxBytes) {
      current = { ranges: [], bytes: 0 };
      batches.push(current);
    }
    current.ranges.push(m);
    current.bytes += len;
  }
  return { merged, owner, batches };
}

const EMPTY = Buffer.alloc(0);

/** A blob in a registry, read by ranges. Safe to share between many concurrent readers. */
export class RegistryBlobSource implements BlobSource {
  readonly size: number;
  readonly digest: Digest;
  readonly #reader: BlobReader;
  readonly #endpoints: readonly Endpoint[];
  /** Index of the endpoint that worked last (sticky across reads). */
  #current = 0;

  constructor(reader: BlobReader, endpoints: readonly Endpoint[], digest: Digest, size: number) {
    if (endpoints.length === 0) throw new Error('RegistryBlobSource needs at least one endpoint');
    this.#reader = reader;
    this.#endpoints = endpoints;
    this.digest = digest;
    this.size = size;
  }

  /** The endpoint reads currently go to (a mirror or the primary). */
  get endpoint(): Endpoint {
    return this.#endpoints[this.#current]!;
  }

  async readRanges(ranges: readonly ByteRange[], signal?: AbortSignal, deadline?: number): Promise<Buffer[]> {
    validateRanges(ranges, this.size, `blob ${this.digest}`);
    // One deadline for the whole read: every batch, fallback and mirror shares it.
    const limits: Limits = this.#reader.session.limits({ signal, deadline });
    if (ranges.length === 1 && ranges[0]!.end > ranges[0]!.start) {
      // The common case of one FUSE read: no planning, one request.
      const r = ranges[0]!;
      return [await this.#withFallback((ep) => this.#reader.readRange(ep, this.digest, this.size, r, limits))];
    }
    const o = this.#reader.opts;
    const plan = planFetch(ranges, o.coalesceGapBytes, o.maxRangesPerRequest, o.maxBytesPerRequest);
    const fetched = new Array<Buffer>(plan.merged.length);
    let index = 0;
    await Promise.all(plan.batches.map(async (batch) => {
      const first = index;
      index += batch.ranges.length;
      const buffers = await this.#withFallback((ep) => this.#reader.readRanges(ep, this.digest, this.size, batch.ranges, limits));
      buffers.forEach((b, k) => { fetched[first + k] = b; });
    }));
    return ranges.map((r, i) => {
      const m = plan.owner[i]!;
      if (m < 0) return EMPTY;
      const piece = plan.merged[m]!;
      return fetched[m]!.subarray(r.start - piece.start, r.end - piece.start);
    });
  }

  /** Run `fn` on the current endpoint; on a failure that another endpoint might not have, move on. */
  async #withFallback<T>(fn: (ep: Endpoint) => Promise<T>): Promise<T> {
    let i = this.#current;
    for (;;) {
      try {
        const result = await fn(this.#endpoints[i]!);
        this.#current = i;
        return result;
      } catch (err) {
        if (i + 1 >= this.#endpoints.length || !shouldTryNextEndpoint(err)) throw err;
        this.#reader.session.logger.warn({ blob: this.digest, endpoint: this.#endpoints[i]!.apiHost, error: (err as Error).message },
          'blob read failed on a mirror, trying the next endpoint');
        i++;
      }
    }
  }
}
