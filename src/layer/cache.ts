import { LRUCache } from 'lru-cache';
import type { DiskCache } from './disk-cache.js';

/**
 * Verified, decompressed chunks by digest, shared by every layer and image (identical chunks are fetched once).
 * Bounded by bytes; also tracks fetches in flight so concurrent readers of one chunk share one request.
 */
export class ChunkCache {
  private readonly lru: LRUCache<string, Buffer>;
  private readonly inflight = new Map<string, Promise<Buffer>>();
  hits = 0;
  misses = 0;

  /** The persistent tier behind memory, if any. */
  readonly disk: DiskCache | undefined;

  constructor(readonly maxBytes: number, disk?: DiskCache) {
    this.disk = disk;
    this.lru = new LRUCache<string, Buffer>({
      maxSize: Math.max(1, maxBytes),
      // A chunk bigger than a quarter of the cache would evict everything else for one file: serve it uncached.
      maxEntrySize: Math.max(1, Math.floor(maxBytes / 4)),
      sizeCalculation: (b) => Math.max(1, b.length),
    });
  }

  get(digest: string): Buffer | undefined {
    const b = this.lru.get(digest);
    if (b) this.hits++;
    return b;
  }

  /** In memory or on its way there (readahead skips these). */
  has(digest: string): boolean {
    return this.lru.has(digest) || this.inflight.has(digest);
  }

  /** In memory or on disk, without counting a hit (for status displays). */
  isLocal(digest: string): boolean {
    return this.lru.has(digest) || (this.disk?.has(digest) ?? false);
  }

  /** In memory, on disk or on its way: what a speculative fetch (whole files, siblings, walks) skips. */
  present(digest: string): boolean {
    return this.has(digest) || (this.disk?.has(digest) ?? false);
  }

  set(digest: string, data: Buffer): void {
    if (data.length <= Math.floor(this.maxBytes / 4)) this.lru.set(digest, data);
  }

  pending(digest: string): Promise<Buffer> | undefined {
    return this.inflight.get(digest);
  }

  /** Register a fetch in flight; it is forgotten when it settles (failures are not cached: the next read retries). */
  track(digest: string, p: Promise<Buffer>): Promise<Buffer> {
    this.inflight.set(digest, p);
    const clear = () => { if (this.inflight.get(digest) === p) this.inflight.delete(digest); };
    p.then(clear, clear);
    return p;
  }

  get bytes(): number {
    return this.lru.calculatedSize;
  }
}
