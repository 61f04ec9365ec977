import { chmod, mkdir, readdir } from 'node:fs/promises';
import type { Server } from 'node:http';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { FuseSession, type Negotiated } from '../fuse/index.js';
import { AssembledFiles, BackgroundScheduler, ChunkCache, closeLayerWork, DiskCache, layerWork, type LayerTree } from '../layer/index.js';
import { RegistryClient } from '../registry/index.js';
import { LayerStore, NamespaceJournal, Resolver } from '../store/index.js';
import { cacheDirOf, type Config } from './config.js';
import { startControl, type DaemonStatus } from './control.js';
import { createLogger } from './log.js';
import { Metrics } from './metrics.js';
import { SeenRegistries } from './warm-up.js';

export interface Daemon {
  session: FuseSession;
  store: LayerStore;
  status(): DaemonStatus;
  logger: Logger;
  /** Resolves when the mount is gone (signal, unmount, or close()). */
  closed: Promise<void>;
  /** Resolves once background work, workers and connections are stopped after the mount went away. */
  stopped: Promise<void>;
  close(): Promise<void>;
}

export { createLogger } from './log.js';

/** A FUSE connection mounted by the supervisor, served by this process (src/daemon/supervisor.ts). */
export interface InheritedConnection {
  /** This process's /dev/fuse fd of the connection. */
  fd: number;
  devMinor?: number;
  /** Set when an earlier server answered INIT. */
  negotiated?: Negotiated;
  /** An earlier server of this connection died: resend its requests and take back the node ids it handed out. */
  resume: boolean;
  /** Called as soon as INIT is answered. */
  onInit?: (n: Negotiated) => void;
}

/** Where the store records the node ids it hands out (see src/store/namespace.ts). */
export function namespaceJournalPath(cfg: Config): string {
  return join(cfg.root, 'namespace.jsonl');
}

/** The storage.conf line that makes podman use this store. */
export function storageConfLine(mountpoint: string): string {
  return `additionallayerstores = ["${mountpoint}:ref"]`;
}

/** Wire config → logger → caches → registry → store → FUSE, and mount. */
export async function startDaemon(cfg: Config, logger: Logger = createLogger(cfg.logLevel, cfg.logFormat), inherited?: InheritedConnection): Promise<Daemon> {
  // A daemon killed with SIGKILL leaves its mount behind (ENOTCONN): the FUSE session clears it when it mounts.
  // (Not when serving an inherited mount: touching our own mountpoint before serving it would wait for ourselves.)
  if (!inherited) {
    await mkdir(cfg.mountpoint, { recursive: true }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOTCONN') throw err;
    });
  }
  await securePrivateState(cfg, logger);
  const client = new RegistryClient({
    logger: logger.child({ component: 'registry' }),
    // Bounds every registry call that names no deadline of its own (pings, tokens), and is named in timeout errors.
    fetchTimeoutMs: cfg.fetchTimeoutSeconds * 1000,
    // Chunks of neighbouring files are separated only by their tar headers' frames: fetch them as one range
    // (design §3: gaps up to ~64 KiB), instead of one part per file in a multipart answer.
    blobReader: { coalesceGapBytes: 64 << 10 },
    configCacheDir: join(cfg.root, 'configs'),
    // A configured registries.conf replaces the system's, drop-ins included (so tests and sandboxes are hermetic).
    ...(cfg.registriesConf ? { registriesConfPaths: { path: cfg.registriesConf, dropInDir: `${cfg.registriesConf}.d` } } : {}),
  });
  const diskBytes = cfg.diskCacheBytes ?? await DiskCache.defaultSize(cacheDirOf(cfg));
  const disk = diskBytes > 0 ? new DiskCache(cacheDirOf(cfg), diskBytes, logger.child({ component: 'cache' })) : undefined;
  if (disk) {
    // Names only before serving; sizes, recency and eviction follow in the background (DiskCache.list).
    await disk.list();
    logger.info({ dir: disk.dir, chunks: disk.entries, cap: disk.maxBytes }, 'disk cache listed');
  }
  const cache = new ChunkCache(cfg.memoryCacheBytes, disk);
  // Passthrough serves checked complete copies of files, made from (and budgeted with) the disk cache.
  const assembled = cfg.passthrough && disk ? new AssembledFiles(disk, { logger: logger.child({ component: 'passthrough' }) }) : undefined;
  let status: () => DaemonStatus = () => { throw new Error('not started'); };
  const metrics = new Metrics(() => status());
  // The scheduler watches the session's request count (the session exists only after the resolver).
  let session: FuseSession | undefined;
  // Stopping ends fetches in flight and background work at once (it resumes on the next start).
  const stop = new AbortController();
  const scheduler = new BackgroundScheduler(cfg.backgroundConcurrency, {
    batchBytes: cfg.backgroundBatchBytes, busyBatchBytes: Math.min(256 << 10, cfg.backgroundBatchBytes),
    activity: () => session?.stats.requests ?? 0,
  });
  // The disk cache's start-up stats yield to a starting container (they compete for the disk and the thread pool):
  // they begin once the store has been idle for 5 s (or after 2 min), then pause while it is used, ≤ 1 s at a time.
  // Begun at the first idle moment (between podman's pull and its run), warm gcc and node starts took ~0.2–0.3 s
  // longer (bench:realworld, 2 runs each).
  if (disk) {
    disk.pacer = (first) => (first ? scheduler.whenIdleFor(5000, 120_000) : scheduler.whenIdle(1000));
    void disk.load().then(
      () => logger.info({ dir: disk.dir, bytes: disk.usedBytes, chunks: disk.entries, cap: disk.maxBytes }, 'disk cache loaded'),
      (err: unknown) => {
        // Stopping before it is done is no failure: the next start reads them again.
        if (!scheduler.stopping) logger.warn({ dir: disk.dir, err: (err as Error).message }, `disk cache ${disk.dir}: could not read the sizes of its files (${(err as Error).message}); eviction waits for the next start`);
      },
    );
  }
  const seen = new SeenRegistries(join(cfg.root, 'registries.json'));
  const resolver = new Resolver({
    client, cache, blobDir: join(cfg.root, 'blobs'), indexDir: join(cfg.root, 'index'), readaheadBytes: cfg.readaheadBytes, dirPrefetchBytes: cfg.dirPrefetchBytes, nearbyBytes: cfg.nearbyPrefetchBytes, nearbyMaxBytes: cfg.nearbyPrefetchMaxBytes, wholeFileBytes: cfg.wholeFileBytes,
    logger: logger.child({ component: 'store' }), scheduler, stop: stop.signal, failureTtlMs: cfg.failureTtlSeconds * 1000,
    backgroundFetch: cfg.backgroundFetch, proof: cfg.diffidProof, accessDir: join(cfg.root, 'access'), proofDir: join(cfg.root, 'proven'),
    fetchTimeoutMs: cfg.fetchTimeoutSeconds * 1000, onFetch: metrics.onFetch,
    ...(assembled ? { onLayerLocal: (tree: LayerTree) => assembled.layerLocal(tree) } : {}),
    onImage: (ref) => seen.record(ref),
  });
  // A start contacts the registries it used before; a server taking over a session (respawn) does not: it answers
  // what its predecessor handed out from the journal and kept trees, without the registry.
  if (!inherited?.resume) void seen.load().then((refs) => { for (const r of refs) void client.warmUp(r); });
  const journalPath = namespaceJournalPath(cfg);
  const journal = inherited?.resume ? NamespaceJournal.resume(journalPath) : NamespaceJournal.fresh(journalPath, Math.floor(Date.now() / 1000));
  const store = new LayerStore({
    resolver, logger: logger.child({ component: 'store' }), journal,
    ...(assembled ? { passthrough: { backing: () => session?.backing, assembled } } : {}),
  });
  const ops = cfg.metricsListen ? metrics.instrument(store) : store;
  const fuseOpts = {
    subtype: 'tocfs', fsname: 'tocfs', allowOther: true, logger: logger.child({ component: 'fuse' }), passthrough: assembled !== undefined,
  };
  session = inherited
    ? await FuseSession.adopt(inherited.fd, cfg.mountpoint, ops, {
      ...fuseOpts, devMinor: inherited.devMinor, negotiated: inherited.negotiated, resend: inherited.resume, onInit: inherited.onInit,
    })
    : await FuseSession.mount(cfg.mountpoint, ops, fuseOpts);
  const passthroughOff = (): string | undefined => !cfg.passthrough ? 'passthrough = false in the configuration'
    : !disk ? 'there is no disk cache (disk_cache = 0) to make complete copies in'
      : session!.passthroughOff ?? store.passthroughStatus()?.failure;
  const why = passthroughOff();
  logger.info({ passthrough: why === undefined, ...(why ? { why } : {}) }, why ? `FUSE passthrough off: ${why}; every read is served by tocfs` : 'FUSE passthrough on: big files complete on local disk are read by the kernel directly');
  const startedAt = new Date().toISOString();
  status = () => ({
    pid: process.pid, mountpoint: cfg.mountpoint, startedAt, layers: store.status(),
    cache: {
      memory: { bytes: cache.bytes, maxBytes: cache.maxBytes, hits: cache.hits, misses: cache.misses },
      ...(disk ? { disk: { dir: disk.dir, bytes: disk.usedBytes, maxBytes: disk.maxBytes, chunks: disk.entries, ...disk.stats } } : {}),
    },
    registryErrors: resolver.recentFailures,
    fuse: { requests: session.stats.requests, errors: session.stats.errors, inFlight: session.stats.inFlight, resent: session.stats.resent },
    workers: (({ workers, tasks, crashes }) => ({ running: workers, tasks, crashes }))(layerWork().stats),
    passthrough: passthroughStatus(),
  });
  const passthroughStatus = (): NonNullable<DaemonStatus['passthrough']> => {
    const off = passthroughOff();
    const opens = store.passthroughStatus() ?? { opens: 0, active: 0 };
    const a = assembled?.stats ?? { assembled: 0, reused: 0, failed: 0, running: 0 };
    const files = disk?.files ?? { count: 0, bytes: 0 };
    return { on: off === undefined, ...(off ? { why: off } : {}), opens: opens.opens, active: opens.active, files: files.count, bytes: files.bytes, ...a };
  };
  const servers: Server[] = [await startControl(join(cfg.root, 'tocfs.sock'), { status, reads: () => store.reads(), credentials: client.credentials, onCredentials: () => resolver.clearFailures(), logger: logger.child({ component: 'control' }) })];
  if (cfg.metricsListen) {
    servers.push(await metrics.listen(cfg.metricsListen));
    logger.info({ address: cfg.metricsListen }, 'metrics served at /metrics');
  }
  const closed = new Promise<void>((resolve) => session.once('close', () => resolve()));
  void closed.then(() => journal.close());
  const shutdown = closed.then(async () => {
    stop.abort();
    scheduler.stop();
    for (const s of servers) s.close();
    // Verified chunks still on their way to disk are kept (they are written on the workers about to stop); a disk
    // that hangs delays the exit by 5 s at most.
    if (disk) await Promise.race([disk.drain(), new Promise((r) => setTimeout(r, 5000).unref())]);
    await Promise.all([closeLayerWork(), client.close()]);
  }).catch(() => {});
  logger.info({ mountpoint: cfg.mountpoint, root: cfg.root }, 'tocfs store mounted');
  return { session, store, logger, closed, stopped: shutdown, status, close: () => session.close() };
}

/** State directories under the root: each holds data of every image (file contents, blobs, access patterns). */
const STATE_DIRS = ['cache', 'blobs', 'access', 'proven', 'index'];

/**
 * The state root is root's alone (0700, files 0600): the cache and blobs hold files that images keep private, and
 * any local user could read them from a 0755 tree. A root made by an earlier version is repaired here: its
 * directories are closed (which is what protects the files), and the files of the small directories made private.
 */
async function securePrivateState(cfg: Config, logger: Logger): Promise<void> {
  await mkdir(cfg.root, { recursive: true, mode: 0o700 });
  const dirs = [cfg.root, ...STATE_DIRS.map((d) => join(cfg.root, d)), cacheDirOf(cfg)];
  for (const d of new Set(dirs)) {
    await chmod(d, 0o700).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') logger.warn({ dir: d, err: err.message }, `cannot make ${d} private (chmod 700): ${err.message}`);
    });
  }
  for (const d of ['blobs', 'access', 'proven']) {
    const dir = join(cfg.root, d);
    for (const name of await readdir(dir).catch(() => [] as string[])) await chmod(join(dir, name), 0o600).catch(() => {});
  }
  const sub = join(cacheDirOf(cfg), 'sha256');
  for (const name of await readdir(sub).catch(() => [] as string[])) await chmod(join(sub, name), 0o700).catch(() => {});
}
