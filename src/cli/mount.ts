import type { Command } from 'commander';
import { loadConfig, startDaemon, storageConfLine } from '../daemon/index.js';

export function registerMount(program: Command): void {
  program
    .command('mount')
    .description('mount the additional layer store and serve podman until stopped (SIGINT/SIGTERM unmount)')
    .argument('[mountpoint]', 'where to mount (default /var/lib/tocfs/store)')
    .option('--root <dir>', 'state directory (default /var/lib/tocfs)')
    .option('--config <file>', 'config file (default /etc/tocfs/config.toml, if present)')
    .option('--log-level <level>', 'trace, debug, info, warn or error')
    .action(async (mountpoint: string | undefined, opts: { root?: string; config?: string; logLevel?: string }) => {
      const cfg = await loadConfig(opts.config);
      if (mountpoint) cfg.mountpoint = mountpoint;
      if (opts.root) cfg.root = opts.root;
      if (opts.logLevel) cfg.logLevel = opts.logLevel as typeof cfg.logLevel;
      const daemon = await startDaemon(cfg);
      process.stdout.write(`tocfs: serving ${cfg.mountpoint}\nAdd to [storage.options] in storage.conf:\n  ${storageConfLine(cfg.mountpoint)}\n`);
      await daemon.closed;
      // Prompt exit: whatever background work was under way resumes on the next start.
      await Promise.race([daemon.stopped, new Promise((r) => setTimeout(r, 1500).unref())]);
      process.exit(0);
    });
}
