import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { FuseSession } from '../fuse/index.js';
import { BackgroundScheduler, ChunkCache, DiskCache } from '../layer/index.js';
import { RegistryClient } from '../registry/index.js';
import { LayerStore, Resolver } from '../store/index.js';
import { cacheDirOf, type Config } from './config.js';

export interface Daemon {
  session: FuseSession;
  store: LayerStore;
  logger: Logger;
  /** Resolves when the mount is gone (signal, unmount, or close()). */
  closed: Promise<void>;
  close(): Promise<void>;
}

export function createLogger(level: Config['logLevel']): Logger {
  return pino({ level, base: { pid: process.pid } }, pino.destination(2));
}

/** The storage.conf line that makes podman use this store. */
export function storageConfLine(mountpoint: string): string {
  return `additionallayerstores = ["${mountpoint}:ref"]`;
}

/** Wire config → logger → caches → registry → store → FUSE, and mount. */
export async function startDaemon(cfg: Config, logger: Logger = createLogger(cfg.logLevel)): Promise<Daemon> {
  await mkdir(cfg.mountpoint, { recursive: true });
  await mkdir(cfg.root, { recursive: true });
  const client = new RegistryClient({
    logger: logger.child({ component: 'registry' }),
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
  const resolver = new Resolver({
    client, cache, blobDir: join(cfg.root, 'blobs'), readaheadBytes: cfg.readaheadBytes,
    logger: logger.child({ component: 'store' }),
    scheduler: new BackgroundScheduler(cfg.backgroundConcurrency),
    backgroundFetch: cfg.backgroundFetch, proof: cfg.diffidProof, accessDir: join(cfg.root, 'access'),
    fetchTimeoutMs: cfg.fetchTimeoutSeconds * 1000,
  });
  const store = new LayerStore({ resolver, logger: logger.child({ component: 'store' }) });
  const session = await FuseSession.mount(cfg.mountpoint, store, {
    subtype: 'tocfs', fsname: 'tocfs', allowOther: true, logger: logger.child({ component: 'fuse' }),
  });
  const closed = new Promise<void>((resolve) => session.once('close', () => resolve()));
  closed.then(() => client.close()).catch(() => {});
  logger.info({ mountpoint: cfg.mountpoint, root: cfg.root }, 'tocfs store mounted');
  return { session, store, logger, closed, close: () => session.close() };
}
