import type { Command } from 'commander';
import { cacheDirOf, loadConfig, parseSize } from '../daemon/index.js';
import { DiskCache } from '../layer/index.js';

export function registerGc(program: Command): void {
  program
    .command('gc')
    .description('trim the disk cache to a size, least recently used chunks first (safe while the daemon runs)')
    .option('--root <dir>', 'state directory (default /var/lib/tocfs)')
    .option('--config <file>', 'config file (default /etc/tocfs/config.toml, if present)')
    .option('--max-size <size>', 'keep at most this much, e.g. 2GiB or 0 (default: the configured cap)')
    .action(async (opts: { root?: string; config?: string; maxSize?: string }) => {
      const cfg = await loadConfig(opts.config);
      if (opts.root) cfg.root = opts.root;
      const dir = cacheDirOf(cfg);
      const cap = cfg.diskCacheBytes ?? await DiskCache.defaultSize(dir);
      const target = opts.maxSize !== undefined ? parseSize(opts.maxSize, '--max-size', 'command line') : cap;
      const cache = new DiskCache(dir, Number.MAX_SAFE_INTEGER);
      await cache.load();
      const before = cache.usedBytes;
      const freed = await cache.evict(target);
      process.stdout.write(`${dir}: ${before} bytes in ${cache.entries + cache.stats.evictions} chunks; removed ${cache.stats.evictions} chunks (${freed} bytes); ${cache.usedBytes} bytes kept\n`);
    });
}
