import { mkdir, readdir, rm, stat, statfs, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { layerWork } from './work.js';

export interface DiskCacheStats {
  hits: number;
  misses: number;
  writes: number;
  evictions: number;
  /** Files found corrupt on load (and removed). */
  corrupt: number;
}

export interface DiskCacheLogger {
  warn(obj: object, msg: string): void;
}

const HEX = /^[0-9a-f]{64}$/;
/** Size of an entry list() found and settle() has not stat'ed yet (not counted in usedBytes). */
const UNKNOWN = -1;
/** Subdirectories read at once by list(), and files stat'ed at once by settle(). */
const LIST_PARALLEL = 16;
const STAT_SLICE = 128;
/** The access time list() gives an entry until load() reads the real one. */
const UNLISTED_ATIME = 0;
/** A chunk's access time on disk is refreshed at most this often (recency across restarts). */
const ATIME_REFRESH_MS = 3_600_000;
/** Most bytes of chunks handed to a writer worker at once. */
const WRITE_BATCH_BYTES = 4 << 20;

/** Where the disk cache in `dir` keeps the chunk whose SHA-256 is `hex` (the proof worker reads it there too). */
export function chunkFilePath(dir: string, hex: string): string {
  return join(dir, 'sha256', hex.slice(0, 2), hex);
}

/** Where the disk cache in `dir` keeps the assembled complete file whose SHA-256 is `hex` (see assembled.ts). */
export function assembledFilePath(dir: string, hex: string): string {
  return join(dir, 'files', hex);
}

/** Index keys of assembled files; chunks are keyed by their bare hex digest. */
const FILE_KEY = 'f/';

/**
 * Verified chunks on disk, content-addressed: `<dir>/sha256/<ab>/<hex>`. Shared by every layer and image, reused
 * after a restart, written through a temporary file (no fsync) and verified again when read back: a disk that
 * flips a bit yields a miss, never wrong bytes. Bounded by `maxBytes` with least-recently-used eviction that skips
 * chunks pinned by readers in progress.
 *
 * The same budget and recency order hold the complete files assembled for FUSE passthrough
 * (`<dir>/files/<hex>`, written by the assembler on a worker and added here with addFile).
 */
export class DiskCache {
  readonly stats: DiskCacheStats = { hits: 0, misses: 0, writes: 0, evictions: 0, corrupt: 0 };
  /** hex → size; Map order is recency (oldest first). */
  private readonly index = new Map<string, number>();
  private readonly pins = new Map<string, number>();
  private bytes = 0;
  /** Assembled files among the entries, and their bytes. */
  private fileCount = 0;
  private fileBytes = 0;
  private loading: { listed: Promise<void>; loaded: Promise<void> } | undefined;
  /** Keys used or added while load() settles (they stay the most recent whatever their old access time). */
  private recent: Set<string> | undefined;
  /**
   * Chunks being written now, with their (verified) bytes: reads are served from here meanwhile, and a second put
   * of one waits for the first instead of writing the file again.
   */
  private readonly writing = new Map<string, { data: Buffer; done: Promise<void> }>();
  private writingBytes = 0;
  /** Chunks waiting to be handed to a writer worker (see writeQueued). */
  private queue: { hex: string; data: Buffer; resolve: () => void; reject: (e: unknown) => void }[] = [];
  private queuedBytes = 0;
  /** When this process last set each chunk's atime (recency across restarts; refreshed at most once an hour). */
  private readonly touched = new Map<string, number>();
  /**
   * Awaited before load()'s stats (`first`) and between their slices: the daemon makes them wait for an idle store,
   * long before the first (a restart is when a container starts: its reads go first), ≤ 1 s between slices.
   */
  pacer: ((first: boolean) => Promise<void>) | undefined;

  constructor(readonly dir: string, readonly maxBytes: number, private readonly logger?: DiskCacheLogger) {}

  /** Default cap: a tenth of the filesystem holding `dir`. */
  static async defaultSize(dir: string): Promise<number> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const s = await statfs(dir);
    return Math.floor((s.blocks * s.bsize) / 10);
  }

  /**
   * Everything a previous run left, with sizes and recency (oldest access first), so the cap and the LRU order hold
   * across restarts: list() and then a stat of every file (see settle()).
   */
  load(): Promise<void> {
    return this.start().loaded;
  }

  /**
   * What a previous run left, by name only: enough to serve hits. One readdir per subdirectory; the sizes and access
   * times come later, from load(). A stat per file before serving took 1.9 s for a 1 GiB cache of 48k chunks
   * (~1 s of it on the FUSE thread) and would take minutes for a big one, while podman's requests queued.
   */
  list(): Promise<void> {
    return this.start().listed;
  }

  /** The first use lists the cache and sets its settling going (whoever awaits it or not). */
  private start(): { listed: Promise<void>; loaded: Promise<void> } {
    if (!this.loading) {
      const listed = this.readNames();
      const loaded = listed.then(() => this.settle());
      loaded.catch(() => {}); // reported to whoever awaits load(); a failed settle only leaves sizes unknown
      this.loading = { listed, loaded };
    }
    return this.loading;
  }

  private async readNames(): Promise<void> {
    const root = join(this.dir, 'sha256');
    // Private: the cache holds every image's files, some of them readable only by root inside their image.
    await mkdir(root, { recursive: true, mode: 0o700 });
    const files = join(this.dir, 'files');
    await mkdir(files, { recursive: true, mode: 0o700 });
    for (const name of await readdir(files)) {
      // A temporary file of an assembly that died: remove it (one under way in another process fails its rename
      // and is tried again later).
      if (!HEX.test(name)) await rm(join(files, name), { force: true });
      else this.add(FILE_KEY + name, UNKNOWN, UNLISTED_ATIME);
    }
    const subs = await readdir(root);
    for (let i = 0; i < subs.length; i += LIST_PARALLEL) {
      await Promise.all(subs.slice(i, i + LIST_PARALLEL).map(async (sub) => {
        const d = join(root, sub);
        for (const name of await readdir(d).catch(() => [] as string[])) {
          // Leftover temporary file of a run that died mid-write.
          if (!HEX.test(name)) await rm(join(d, name), { force: true });
          else this.add(name, UNKNOWN, UNLISTED_ATIME);
        }
      }));
    }
    this.recent = new Set();
  }

  /**
   * Stat the files list() found, a slice at a time (the thread pool does the I/O; each slice is a few ms of this
   * thread), then order them by access time and evict down to the cap. Entries used meanwhile stay the most recent.
   */
  private async settle(): Promise<void> {
    const unknown = [...this.index].filter(([, size]) => size === UNKNOWN).map(([key]) => key);
    const atimes = new Map<string, number>();
    if (unknown.length > 0) await this.pacer?.(true);
    for (let i = 0; i < unknown.length; i += STAT_SLICE) {
      await Promise.all(unknown.slice(i, i + STAT_SLICE).map(async (key) => {
        const st = await stat(this.path(key)).catch(() => undefined);
        const size = this.index.get(key);
        if (size === undefined) return; // forgotten meanwhile
        if (!st) {
          if (size === UNKNOWN) this.forget(key); // removed by hand since (one a read has sized is left to the reads)
          return;
        }
        if (size === UNKNOWN) this.setSize(key, st.size); // else sized by a read meanwhile
        atimes.set(key, st.atimeMs);
      }));
      await new Promise((r) => setImmediate(r));
      await this.pacer?.(false);
    }
    const recent = this.recent ?? new Set<string>();
    this.recent = undefined;
    const entries = [...this.index];
    const old = entries.filter(([k]) => !recent.has(k)).sort((a, b) => (atimes.get(a[0]) ?? 0) - (atimes.get(b[0]) ?? 0));
    this.index.clear();
    for (const [k, size] of [...old, ...entries.filter(([k]) => recent.has(k))]) this.index.set(k, size);
    // Entries used since the start whose access time on disk is old get it refreshed now (see touch), in slices.
    const stale: string[] = [];
    for (const [k, t] of atimes) {
      if (this.touched.get(k) !== UNLISTED_ATIME) continue;
      if (recent.has(k) && Date.now() - t >= ATIME_REFRESH_MS) stale.push(k);
      this.touched.set(k, recent.has(k) ? Date.now() : t);
    }
    for (let i = 0; i < stale.length; i += STAT_SLICE) {
      const when = new Date();
      await Promise.all(stale.slice(i, i + STAT_SLICE).map((k) => utimes(this.path(k), when, when).catch(() => {})));
      await this.pacer?.(false);
    }
    await this.evict();
  }

  get usedBytes(): number {
    return this.bytes;
  }

  /** Chunks on disk (assembled files not counted). */
  get entries(): number {
    return this.index.size - this.fileCount;
  }

  /** Assembled complete files on disk, and their bytes (part of usedBytes). */
  get files(): { count: number; bytes: number } {
    return { count: this.fileCount, bytes: this.fileBytes };
  }

  private path(key: string): string {
    return key.startsWith(FILE_KEY) ? assembledFilePath(this.dir, key.slice(FILE_KEY.length)) : chunkFilePath(this.dir, key);
  }

  /** Where an assembled file with content digest `hex` is (whether or not it exists). */
  filePath(hex: string): string {
    return assembledFilePath(this.dir, hex);
  }

  /** An assembled file with content digest `hex` is on disk (as far as this index knows). */
  hasFile(hex: string): boolean {
    return this.index.has(FILE_KEY + hex);
  }

  /**
   * Count an assembled file the assembler has just renamed into place (or found there), and make room for it. Files
   * larger than a quarter of the cap are not assembled at all (they would evict everything else).
   */
  async addFile(hex: string, size: number): Promise<void> {
    await this.list();
    const key = FILE_KEY + hex;
    if (this.index.has(key)) {
      this.touch(key);
      return;
    }
    this.add(key, size, Date.now());
    await this.evict();
  }

  /** Refresh an assembled file's recency (it is being used by passthrough opens). */
  touchFile(hex: string): void {
    if (this.index.has(FILE_KEY + hex)) this.touch(FILE_KEY + hex);
  }

  /** A chunk found corrupt by someone else (the assembler): forget and remove it, it is fetched again when read. */
  async discardChunk(digest: string): Promise<void> {
    const hex = digest.slice(7);
    this.stats.corrupt++;
    this.logger?.warn({ digest, path: this.path(hex) }, `disk cache: ${this.path(hex)} does not match its digest; removed`);
    this.forget(hex);
    await rm(this.path(hex), { force: true });
  }

  private add(key: string, size: number, atime: number): void {
    this.index.set(key, size);
    this.touched.set(key, atime);
    this.recent?.add(key);
    if (key.startsWith(FILE_KEY)) this.fileCount++;
    if (size !== UNKNOWN) this.count(key, size);
  }

  /** Give an entry list() found its size (from a stat or a read). */
  private setSize(key: string, size: number): void {
    if (this.index.get(key) !== UNKNOWN) return;
    this.index.set(key, size);
    this.count(key, size);
  }

  private count(key: string, size: number): void {
    this.bytes += size;
    if (key.startsWith(FILE_KEY)) this.fileBytes += size;
  }

  has(digest: string): boolean {
    const hex = digest.slice(7);
    return this.index.has(hex) || this.writing.has(hex);
  }

  /**
   * The verified chunk, or undefined (missing, or found corrupt and removed). `offThread`: read it on a worker
   * whatever its size (see LayerWork.readChunkFile).
   */
  async get(digest: string, offThread = false, size?: number): Promise<Buffer | undefined> {
    await this.list();
    const hex = digest.slice(7);
    const w = this.writing.get(hex);
    if (w) {
      this.stats.hits++;
      return w.data;
    }
    if (!this.index.has(hex)) {
      this.stats.misses++;
      return undefined;
    }
    const unpin = this.pin(digest);
    let found: { data?: Buffer; corrupt?: boolean };
    try {
      // Small chunks on this thread, bigger ones on a worker (see LayerWork.readChunkFile).
      // Until load() has stat'ed it, the file's size is the caller's word (the TOC's), or unknown: off the thread.
      const known = this.index.get(hex)!;
      found = await layerWork().readChunkFile(this.path(hex), hex, known !== UNKNOWN ? known : size ?? Infinity, offThread);
    } finally {
      unpin();
    }
    const data = found.data;
    if (!data && !found.corrupt) {
      // Evicted by `tocfs gc` or removed by hand: a miss, the chunk is fetched again.
      this.forget(hex);
      this.stats.misses++;
      return undefined;
    }
    if (!data) {
      this.stats.corrupt++;
      this.logger?.warn({ digest, path: this.path(hex) }, `disk cache: ${this.path(hex)} does not match its digest; removed`);
      this.forget(hex);
      await rm(this.path(hex), { force: true });
      this.stats.misses++;
      return undefined;
    }
    this.setSize(hex, data.length);
    this.touch(hex);
    this.stats.hits++;
    return data;
  }

  /** Store a verified chunk (callers verify before putting). Failures only cost a future refetch. */
  put(digest: string, data: Buffer): Promise<void> {
    const hex = digest.slice(7);
    const w = this.writing.get(hex);
    if (w) return w.done;
    const done = this.write(hex, digest, data).finally(() => {
      this.writing.delete(hex);
      this.writingBytes -= data.length;
    });
    this.writing.set(hex, { data, done });
    this.writingBytes += data.length;
    return done;
  }

  /** Every chunk handed to put() so far written (or failed): the daemon waits for this before its workers stop. */
  async drain(): Promise<void> {
    this.flush();
    await Promise.all([...this.writing.values()].map((w) => w.done));
  }

  /** Bytes handed to put() and not on disk yet (background fetchers wait while this is large). */
  get pendingBytes(): number {
    return this.writingBytes;
  }

  /** Never rejects: a chunk that cannot be stored (full or read-only disk…) only costs a refetch later. */
  private async write(hex: string, digest: string, data: Buffer): Promise<void> {
    try {
      await this.list();
      if (this.index.has(hex) || data.length > this.maxBytes) return;
      await this.writeQueued(hex, data);
      this.add(hex, data.length, Date.now());
      this.stats.writes++;
      await this.evict();
    } catch (err) {
      this.logger?.warn({ digest, err: (err as Error).message }, 'disk cache: could not store a chunk');
    }
  }

  /**
   * Temporary file + rename, without fsync: a chunk appears under its name only complete (a crash cannot leave a
   * torn file that counts as local), and every load re-verifies it anyway, so what a power loss may still tear is
   * a miss, never wrong bytes. An fsync per chunk cost ~6 ms each here (bench:coldstart: 600 ms pauses between
   * 2 MiB background batches). Chunks queued in one turn of the event loop go to a worker together
   * (LayerWork.writeChunkFiles), in batches of at most WRITE_BATCH_BYTES.
   */
  private writeQueued(hex: string, data: Buffer): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ hex, data, resolve, reject });
      this.queuedBytes += data.length;
      if (this.queuedBytes >= WRITE_BATCH_BYTES) this.flush();
      else if (this.queue.length === 1) setImmediate(() => this.flush());
    });
  }

  private flush(): void {
    const batch = this.queue.splice(0);
    this.queuedBytes = 0;
    if (batch.length === 0) return;
    layerWork().writeChunkFiles(this.dir, batch).then(
      (errors) => batch.forEach((w, k) => (errors[k] === undefined ? w.resolve() : w.reject(new Error(errors[k])))),
      (err: unknown) => { for (const w of batch) w.reject(err); },
    );
  }

  /** Keep `digest` from eviction while a reader uses it; returns the release function. */
  pin(digest: string): () => void {
    const hex = digest.slice(7);
    this.pins.set(hex, (this.pins.get(hex) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const n = (this.pins.get(hex) ?? 1) - 1;
      if (n <= 0) this.pins.delete(hex);
      else this.pins.set(hex, n);
    };
  }

  /**
   * Evict least-recently-used chunks and assembled files until at most `target` bytes remain (default: the cap). An
   * assembled file a passthrough open still uses stays readable to it (the kernel holds it open) until it closes.
   */
  async evict(target = this.maxBytes): Promise<number> {
    let freed = 0;
    // Until load() has every size and access time, usedBytes is short and the order is the listing's: it evicts then.
    if (this.recent) return 0;
    for (const [key, size] of this.index) {
      if (this.bytes <= target) break;
      if (this.pins.has(key)) continue;
      this.forget(key);
      await rm(this.path(key), { force: true });
      this.stats.evictions++;
      freed += size;
    }
    return freed;
  }

  private touch(key: string): void {
    const size = this.index.get(key)!;
    this.index.delete(key);
    this.index.set(key, size);
    this.recent?.add(key);
    // Recency survives a restart through atime (best effort: noatime mounts lose it); refreshing it at most once an
    // hour (from the atime found at start) keeps that order at the granularity eviction needs, while a warm restart
    // reading a whole layer does not cost a utimes per chunk (5 000 of them took 0.4 s of the FUSE thread).
    const now = Date.now();
    const last = this.touched.get(key) ?? 0;
    // Listed but not stat'ed yet: load() refreshes it once it knows the old access time (a utimes per chunk read
    // on a warm start took 0.4 s of the FUSE thread).
    if (last === UNLISTED_ATIME && this.recent) return;
    if (now - last < ATIME_REFRESH_MS) return;
    this.touched.set(key, now);
    const when = new Date(now);
    void utimes(this.path(key), when, when).catch(() => {});
  }

  private forget(key: string): void {
    this.touched.delete(key);
    const size = this.index.get(key);
    if (size === undefined) return;
    this.index.delete(key);
    if (key.startsWith(FILE_KEY)) this.fileCount--;
    if (size === UNKNOWN) return;
    this.bytes -= size;
    if (key.startsWith(FILE_KEY)) this.fileBytes -= size;
  }
}
