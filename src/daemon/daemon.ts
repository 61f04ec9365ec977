import { mkdir } from 'node:fs/promises';
import type { Server } from 'node:http';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { FuseSession } from '../fuse/index.js';
import { BackgroundScheduler, ChunkCache, DiskCache } from '../layer/index.js';
import { RegistryClient } from '../registry/index.js';
import { LayerStore, Resolver } from '../store/index.js';
import { cacheDirOf, type Config } from './config.js';
import { startControl, type DaemonStatus } from './control.js';
import { createLogger } from './log.js';
import { Metrics } from './metrics.js';

export interface Daemon {
  session: FuseSession;
  store: LayerStore;
  status(): DaemonStatus;
  logger: Logger;
  /** Resolves when the mount is gone (signal, unmount, or close()). */
  closed: Promise<void>;
  close(): Promise<void>;
}

export { createLogger } from './log.js';

/** The storage.conf line that makes podman use this store. */
export function storageConfLine(mountpoint: string): string {
  return `additionallayerstores = ["${mountpoint}:ref"]`;
}

/** Wire config → logger → caches → registry → store → FUSE, and mount. */
export async function startDaemon(cfg: Config, logger: Logger = createLogger(cfg.logLevel, cfg.logFormat)): Promise<Daemon> {
  // A daemon killed with SIGKILL leaves its mount behind (ENOTCONN): the FUSE session clears it when it mounts.
  await mkdir(cfg.mountpoint, { recursive: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOTCONN') throw err;
  });
  await mkdir(cfg.root, { recursive: true });
  const client = new RegistryClient({
    logger: logger.child({ component: 'registry' }),
    // Chunks of neighbouring files are separated only by their tar headers' frames: fetch them as one range
    // (design §3: gaps up to ~64 KiB), instead of one part per file in a multipart answer.
    blobReader: { coalesceGapBytes: 64 << 10 },
    // A configured registries.conf replaces the system's, drop-ins included (so tests and sandboxes are hermetic).
    ...(cfg.registriesConf ? { registriesConfPaths: { path: cfg.registriesConf, dropInDir: `${cfg.registriesConf}.d` } } : {}),
  });
  const diskBytes = cfg.diskCacheBytes ?? await DiskCache.defaultSize(cacheDirOf(cfg));
  const disk = diskBytes > 0 ? new DiskCache(cacheDirOf(cfg), diskBytes, logger.child({ component: 'cache' })) : undefined;
  if (disk) {
    await disk.load();
    logger.info({ dir: disk.dir, bytes: disk.usedBytes, chunks: disk.entries, cap: disk.maxBytes }, 'disk cache loaded');
  }
  const cache = new ChunkCache(cfg.memoryCacheBytes, disk);
  let status: () => DaemonStatus = () => { throw new Error('not started'); };
  const metrics = new Metrics(() => status());
  // The scheduler watches the session's request count (the session exists only after the resolver).
  let session: FuseSession | undefined;
  const resolver = new Resolver({
    client, cache, blobDir: join(cfg.root, 'blobs'), readaheadBytes: cfg.readaheadBytes,
    logger: logger.child({ component: 'store' }),
    scheduler: new BackgroundScheduler(cfg.backgroundConcurrency, {
      batchBytes: cfg.backgroundBatchBytes, busyBatchBytes: Math.min(256 << 10, cfg.backgroundBatchBytes),
      activity: () => session?.stats.requests ?? 0,
    }),
    backgroundFetch: cfg.backgroundFetch, proof: cfg.diffidProof, accessDir: join(cfg.root, 'access'), proofDir: join(cfg.root, 'proven'),
    fetchTimeoutMs: cfg.fetchTimeoutSeconds * 1000, onFetch: metrics.onFetch,
  });
  const store = new LayerStore({ resolver, logger: logger.child({ component: 'store' }) });
  session = await FuseSession.mount(cfg.mountpoint, cfg.metricsListen ? metrics.instrument(store) : store, {
    subtype: 'tocfs', fsname: 'tocfs', allowOther: true, logger: logger.child({ component: 'fuse' }),
  });
  const startedAt = new Date().toISOString();
  status = () => ({
    pid: process.pid, mountpoint: cfg.mountpoint, startedAt, layers: store.status(),
    cache: {
      memory: { bytes: cache.bytes, maxBytes: cache.maxBytes, hits: cache.hits, misses: cache.misses },
      ...(disk ? { disk: { dir: disk.dir, bytes: disk.usedBytes, maxBytes: disk.maxBytes, chunks: disk.entries, ...disk.stats } } : {}),
    },
    registryErrors: resolver.recentFailures,
    fuse: { requests: session.stats.requests, errors: session.stats.errors, inFlight: session.stats.inFlight },
  });
  const servers: Server[] = [await startControl(join(cfg.root, 'tocfs.sock'), { status, reads: () => store.reads(), credentials: client.credentials, onCredentials: () => resolver.clearFailures(), logger: logger.child({ component: 'control' }) })];
  if (cfg.metricsListen) {
    servers.push(await metrics.listen(cfg.metricsListen));
    logger.info({ address: cfg.metricsListen }, 'metrics served at /metrics');
  }
  const closed = new Promise<void>((resolve) => session.once('close', () => resolve()));
  closed.then(() => { for (const s of servers) s.close(); return client.close(); }).catch(() => {});
  logger.info({ mountpoint: cfg.mountpoint, root: cfg.root }, 'tocfs store mounted');
  return { session, store, logger, closed, status, close: () => session.close() };
}
