import { readFile } from 'node:fs/promises';
import { parse } from 'smol-toml';
import { TocfsError } from '../util/index.js';

export class ConfigError extends TocfsError {}

/** Everything tocfs can be told; every key is optional in the file (docs/configuration.md). */
export interface Config {
  /** Where the store is mounted (podman's additionallayerstores path). */
  mountpoint: string;
  /** State directory: verified blob copies, the control socket, caches. */
  root: string;
  /** Memory for verified chunks shared by all layers. */
  memoryCacheBytes: number;
  /** Uncompressed bytes fetched ahead of a sequential reader. */
  readaheadBytes: number;
  /** On a file's first miss, compressed bytes of its directory's small files fetched in the same request (0: off). */
  dirPrefetchBytes: number;
  /** On every miss, compressed bytes before and after it in the blob whose small files come too (0: off). */
  nearbyPrefetchBytes: number;
  /**
   * The neighbour window grows up to this while the neighbours fetched are read; at or below nearbyPrefetchBytes
   * (the default) it is fixed. On bench:realworld's 100 Mbit/s link, 4 MiB cut python's own fetches from 130 to 104
   * but moved 11 MiB more, and the totals did not change (medians of 4): worth trying only where bandwidth × round
   * trip is larger.
   */
  nearbyPrefetchMaxBytes: number;
  /** Files up to this size are fetched whole from their first miss on (0: off). */
  wholeFileBytes: number;
  logLevel: 'trace' | 'debug' | 'info' | 'warn' | 'error';
  /** Verified chunks on disk, reused after restarts; undefined = a tenth of the filesystem; 0 = off. */
  diskCacheBytes?: number;
  /** Where the disk cache lives (default <root>/cache). */
  cacheDir?: string;
  /** Fetch whole layers in the background after they resolve, so they survive a registry outage. */
  backgroundFetch: boolean;
  /** Background batches in flight at once, over all layers. */
  backgroundConcurrency: number;
  /** Compressed bytes per background request (consecutive chunks of many files). */
  backgroundBatchBytes: number;
  /** Rebuild each layer's tar and compare it with the config DiffID: in the background, before use, or not. */
  diffidProof: 'background' | 'before-use' | 'off';
  /** A read whose data has not arrived within this bound fails with EIO (seconds). */
  fetchTimeoutSeconds: number;
  /** How long a layer that failed to resolve is reported absent before it is tried again (seconds). */
  failureTtlSeconds: number;
  /** host:port to serve Prometheus metrics on; off when unset. */
  metricsListen?: string;
  /** 'auto': readable lines on a terminal, JSON otherwise. */
  logFormat: 'auto' | 'json' | 'human';
  /** registries.conf to use instead of the system's (mirrors, insecure registries). */
  registriesConf?: string;
  /**
   * Serve big files that are complete on local disk by FUSE passthrough (the kernel reads a checked complete copy
   * directly). Takes effect where available: Linux 6.9+, root, the native addon built, a disk cache.
   */
  passthrough: boolean;
}

export const DEFAULT_CONFIG_FILE = '/etc/tocfs/config.toml';

export function defaultConfig(): Config {
  return {
    mountpoint: '/var/lib/tocfs/store',
    root: '/var/lib/tocfs',
    memoryCacheBytes: 512 << 20,
    readaheadBytes: 4 << 20,
    dirPrefetchBytes: 2 << 20,
    nearbyPrefetchBytes: 512 << 10,
    nearbyPrefetchMaxBytes: 512 << 10,
    wholeFileBytes: 64 << 20,
    logLevel: 'info',
    backgroundFetch: true,
    backgroundConcurrency: 2,
    backgroundBatchBytes: 2 << 20,
    diffidProof: 'background',
    fetchTimeoutSeconds: 30,
    failureTtlSeconds: 3,
    logFormat: 'auto',
    passthrough: true,
  };
}

const SIZE_RE = /^(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?$/i;
const UNITS: Record<string, number> = { b: 1, k: 1024, kb: 1024, kib: 1024, m: 1 << 20, mb: 1 << 20, mib: 1 << 20, g: 1 << 30, gb: 1 << 30, gib: 1 << 30 };

/** "512MiB", "4 m", 1048576 → bytes. */
export function parseSize(v: unknown, key: string, file: string): number {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return v;
  const m = typeof v === 'string' ? SIZE_RE.exec(v.trim()) : null;
  if (!m) throw new ConfigError('CONFIG_INVALID', `${file}: ${key} = ${JSON.stringify(v)} is not a size (use bytes or e.g. "512MiB")`);
  return Math.round(Number(m[1]) * UNITS[(m[2] ?? 'b').toLowerCase()]!);
}

export function cacheDirOf(cfg: Config): string {
  return cfg.cacheDir ?? `${cfg.root}/cache`;
}

/** Read a config file (TOML), layered over the defaults. A missing default file is fine; a missing named one is not. */
export async function loadConfig(path: string | undefined): Promise<Config> {
  const cfg = defaultConfig();
  const file = path ?? DEFAULT_CONFIG_FILE;
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (path === undefined && (err as NodeJS.ErrnoException).code === 'ENOENT') return cfg;
    throw new ConfigError('CONFIG_UNREADABLE', `cannot read the config file ${file}: ${(err as Error).message}`);
  }
  let doc: Record<string, unknown>;
  try {
    doc = parse(text) as Record<string, unknown>;
  } catch (err) {
    throw new ConfigError('CONFIG_INVALID', `${file} is not valid TOML: ${(err as Error).message}`);
  }
  for (const [k, v] of Object.entries(doc)) {
    const str = () => {
      if (typeof v !== 'string' || v === '') throw new ConfigError('CONFIG_INVALID', `${file}: ${k} must be a non-empty string`);
      return v;
    };
    switch (k) {
      case 'mountpoint': cfg.mountpoint = str(); break;
      case 'root': cfg.root = str(); break;
      case 'memory_cache': cfg.memoryCacheBytes = parseSize(v, k, file); break;
      case 'readahead': cfg.readaheadBytes = parseSize(v, k, file); break;
      case 'dir_prefetch': cfg.dirPrefetchBytes = parseSize(v, k, file); break;
      case 'nearby_prefetch': cfg.nearbyPrefetchBytes = parseSize(v, k, file); break;
      case 'nearby_prefetch_max': cfg.nearbyPrefetchMaxBytes = parseSize(v, k, file); break;
      case 'whole_file': cfg.wholeFileBytes = parseSize(v, k, file); break;
      case 'registries_conf': cfg.registriesConf = str(); break;
      case 'disk_cache': cfg.diskCacheBytes = parseSize(v, k, file); break;
      case 'passthrough':
        if (typeof v !== 'boolean') throw new ConfigError('CONFIG_INVALID', `${file}: passthrough must be true or false`);
        cfg.passthrough = v;
        break;
      case 'background_fetch':
        if (typeof v !== 'boolean') throw new ConfigError('CONFIG_INVALID', `${file}: background_fetch must be true or false`);
        cfg.backgroundFetch = v;
        break;
      case 'background_concurrency':
        if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 64) throw new ConfigError('CONFIG_INVALID', `${file}: background_concurrency must be a whole number from 1 to 64`);
        cfg.backgroundConcurrency = v;
        break;
      case 'background_batch': cfg.backgroundBatchBytes = Math.max(4096, parseSize(v, k, file)); break;
      case 'diffid_proof': {
        const p = str();
        if (!['background', 'before-use', 'off'].includes(p)) throw new ConfigError('CONFIG_INVALID', `${file}: diffid_proof must be "background", "before-use" or "off"`);
        cfg.diffidProof = p as Config['diffidProof'];
        break;
      }
      case 'metrics_listen': {
        const a = str();
        if (!/^(\[[0-9a-fA-F:]+\]|[^:]+):\d{1,5}$/.test(a)) throw new ConfigError('CONFIG_INVALID', `${file}: metrics_listen must be host:port, e.g. "127.0.0.1:9464"`);
        cfg.metricsListen = a;
        break;
      }
      case 'log_format': {
        const f = str();
        if (!['auto', 'json', 'human'].includes(f)) throw new ConfigError('CONFIG_INVALID', `${file}: log_format must be "auto", "json" or "human"`);
        cfg.logFormat = f as Config['logFormat'];
        break;
      }
      case 'fetch_timeout':
        if (typeof v !== 'number' || !(v > 0) || v > 3600) throw new ConfigError('CONFIG_INVALID', `${file}: fetch_timeout must be a number of seconds between 0 and 3600`);
        cfg.fetchTimeoutSeconds = v;
        break;
      case 'failure_ttl':
        if (typeof v !== 'number' || !(v >= 0) || v > 3600) throw new ConfigError('CONFIG_INVALID', `${file}: failure_ttl must be a number of seconds from 0 to 3600`);
        cfg.failureTtlSeconds = v;
        break;
      case 'cache_dir': cfg.cacheDir = str(); break;
      case 'log_level': {
        const s = str();
        if (!['trace', 'debug', 'info', 'warn', 'error'].includes(s)) throw new ConfigError('CONFIG_INVALID', `${file}: log_level must be one of trace, debug, info, warn, error`);
        cfg.logLevel = s as Config['logLevel'];
        break;
      }
      default:
        throw new ConfigError('CONFIG_INVALID', `${file}: unknown key "${k}" (known: mountpoint, root, memory_cache, disk_cache, cache_dir, readahead, dir_prefetch, nearby_prefetch, nearby_prefetch_max, whole_file, background_fetch, background_concurrency, background_batch, diffid_proof, fetch_timeout, failure_ttl, metrics_listen, registries_conf, passthrough, log_level, log_format)`);
    }
  }
  return cfg;
}
