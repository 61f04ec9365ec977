import type { Command } from 'commander';
import { createLogger, loadConfig, serveHandoff, startDaemon, storageConfLine, supervise, type Config, type ServerMessage } from '../daemon/index.js';

interface MountFlags { root?: string; config?: string; logLevel?: string; supervise?: boolean }

async function configFor(mountpoint: string | undefined, opts: MountFlags): Promise<Config> {
  const cfg = await loadConfig(opts.config);
  if (mountpoint) cfg.mountpoint = mountpoint;
  if (opts.root) cfg.root = opts.root;
  if (opts.logLevel) cfg.logLevel = opts.logLevel as typeof cfg.logLevel;
  return cfg;
}

function printReady(cfg: Config): void {
  process.stdout.write(`tocfs: serving ${cfg.mountpoint}\nAdd to [storage.options] in storage.conf:\n  ${storageConfLine(cfg.mountpoint)}\n`);
}

export function registerMount(program: Command): void {
  program
    .command('mount')
    .description('mount the additional layer store and serve podman until stopped (SIGINT/SIGTERM unmount)')
    .argument('[mountpoint]', 'where to mount (default /var/lib/tocfs/store)')
    .option('--root <dir>', 'state directory (default /var/lib/tocfs)')
    .option('--config <file>', 'config file (default /etc/tocfs/config.toml, if present)')
    .option('--log-level <level>', 'trace, debug, info, warn or error')
    .option('--no-supervise', 'serve in this process: a crash then leaves the mount dead (ENOTCONN) until the next tocfs mount')
    .action(async (mountpoint: string | undefined, opts: MountFlags) => {
      const cfg = await configFor(mountpoint, opts);
      if (opts.supervise === false) {
        const daemon = await startDaemon(cfg);
        printReady(cfg);
        await daemon.closed;
        // Prompt exit: whatever background work was under way resumes on the next start.
        await Promise.race([daemon.stopped, new Promise((r) => setTimeout(r, 1500).unref())]);
        process.exit(0);
      }
      // The server is this same CLI, `serve`, with the same settings (the config file is read again there).
      const args = [...process.execArgv, process.argv[1]!, 'serve', cfg.mountpoint, '--root', cfg.root, '--log-level', cfg.logLevel];
      if (opts.config) args.push('--config', opts.config);
      const code = await supervise({
        cfg, logger: createLogger(cfg.logLevel, cfg.logFormat).child({ component: 'supervisor' }),
        server: { file: process.execPath, args }, onReady: () => printReady(cfg),
      });
      process.exit(code);
    });

  program
    .command('serve', { hidden: true })
    .description('internal: serve a mount handed over by `tocfs mount` (its supervisor)')
    .argument('[mountpoint]')
    .option('--root <dir>')
    .option('--config <file>')
    .option('--log-level <level>')
    .action(async (mountpoint: string | undefined, opts: MountFlags) => {
      const handoff = serveHandoff();
      if (!handoff || !process.send) throw new Error('tocfs serve is started by tocfs mount, not by hand');
      const send = (m: ServerMessage): void => {
        process.send?.(m);
      };
      const cfg = await configFor(mountpoint, opts);
      const logger = createLogger(cfg.logLevel, cfg.logFormat);
      // Without its supervisor nobody restarts this server or unmounts: exit at once, leaving a dead mount that the
      // next `tocfs mount` detaches (as after a crash of an unsupervised daemon).
      process.on('disconnect', () => {
        logger.error({}, 'supervisor gone: exiting; the next tocfs mount detaches the dead mount');
        process.exit(1);
      });
      const daemon = await startDaemon(cfg, logger, {
        fd: handoff.fd, devMinor: handoff.devMinor, negotiated: handoff.negotiated, resume: handoff.resume,
        onInit: (negotiated) => send({ type: 'init', negotiated }),
      });
      send({ type: 'ready' });
      await daemon.closed;
      await Promise.race([daemon.stopped, new Promise((r) => setTimeout(r, 1000).unref())]);
      process.exit(0);
    });
}
