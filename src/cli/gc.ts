import type { Command } from 'commander';
import { cacheDirOf, loadConfig, parseSize } from '../daemon/index.js';
import { join } from 'node:path';
import { DiskCache, pruneIndexDir } from '../layer/index.js';

export function registerGc(program: Command): void {
  program
    .command('gc')
    .description('trim the disk cache to a size, least recently used chunks and assembled files first, and forget the kept trees of layers '
      + 'not resolved for a while (safe while the daemon runs)')
    .option('--root <dir>', 'state directory (default /var/lib/tocfs)')
    .option('--config <file>', 'config file (default /etc/tocfs/config.toml, if present)')
    .option('--max-size <size>', 'keep at most this much, e.g. 2GiB or 0 (default: the configured cap)')
    .option('--index-days <days>', 'forget kept layer trees (<root>/index) not loaded for this many days', (v) => Number(v), 30)
    .action(async (opts: { root?: string; config?: string; maxSize?: string; indexDays: number }) => {
      if (!(opts.indexDays >= 0)) throw new Error(`--index-days ${opts.indexDays}: use a number of days, 0 or more`);
      const cfg = await loadConfig(opts.config);
      if (opts.root) cfg.root = opts.root;
      const dir = cacheDirOf(cfg);
      const cap = cfg.diskCacheBytes ?? await DiskCache.defaultSize(dir);
      const target = opts.maxSize !== undefined ? parseSize(opts.maxSize, '--max-size', 'command line') : cap;
      const cache = new DiskCache(dir, Number.MAX_SAFE_INTEGER);
      await cache.load();
      const before = cache.usedBytes;
      const freed = await cache.evict(target);
      const files = cache.files;
      process.stdout.write(`${dir}: ${before} bytes; removed ${cache.stats.evictions} chunks and assembled files (${freed} bytes); ${cache.usedBytes} bytes kept in ${cache.entries} chunks and ${files.count} assembled files (${files.bytes} bytes)\n`);
      const indexDir = join(cfg.root, 'index');
      const pruned = await pruneIndexDir(indexDir, opts.indexDays * 86_400_000);
      process.stdout.write(`${indexDir}: removed ${pruned.removed} layer trees not loaded for ${opts.indexDays} days (${pruned.freedBytes} bytes); ${pruned.kept} kept\n`);
    });
}
