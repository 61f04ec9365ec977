import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, run } from './cli.js';

export interface DaemonHandle {
  mountpoint: string;
  root: string;
  /** The `tocfs mount` process (the supervisor). */
  pid: number;
  /** The process serving the mount now (the supervisor's child), from the supervisor's log. */
  serverPid(): number | undefined;
  /** Exit code of `tocfs mount` once it exited (null while it runs). */
  exitCode(): number | null;
  /** Everything the daemon logged (JSON lines). */
  log(): string;
  /** Wait until the log matches (log lines are written asynchronously, after the operation answered). */
  waitForLog(re: RegExp, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

function mounted(mountpoint: string): boolean {
  return readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === mountpoint && l.includes('fuse.tocfs'));
}

/**
 * Run `tocfs mount` as its own process (as a user would), with the test registries marked insecure, and wait
 * until the mount answers. stop() sends SIGTERM and makes sure nothing stays mounted.
 */
export async function startDaemon(work: string, opts: { insecureHosts?: string[]; extraConfig?: string; env?: Record<string, string> } = {}): Promise<DaemonHandle> {
  const mountpoint = join(work, 'store');
  const root = join(work, 'state');
  try {
    mkdirSync(mountpoint, { recursive: true });
  } catch (err) {
    // The dead mount of a killed daemon: tocfs mount detaches it.
    if ((err as NodeJS.ErrnoException).code !== 'ENOTCONN') throw err;
  }
  const regConf = join(work, 'tocfs-registries.conf');
  writeFileSync(regConf, (opts.insecureHosts ?? []).map((h) => `[[registry]]\nlocation = "${h}"\ninsecure = true\n`).join('\n'));
  const cfg = join(work, 'tocfs.toml');
  writeFileSync(cfg, `registries_conf = "${regConf}"\nlog_level = "debug"\n${opts.extraConfig ?? ''}`);
  // As bin/tocfs.cjs does: the thread pool size must be in the environment before the process starts.
  const child: ChildProcess = spawn(process.execPath, [CLI, 'mount', mountpoint, '--root', root, '--config', cfg], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, UV_THREADPOOL_SIZE: '16', ...opts.env },
  });
  let log = '';
  child.stdout!.on('data', (d) => { log += d; });
  child.stderr!.on('data', (d) => { log += d; });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const deadline = Date.now() + 30_000;
  // A stale mount left by a killed daemon has the same /proc/mounts line: also wait for the daemon to say it is up.
  while (!mounted(mountpoint) || !log.includes('"msg":"tocfs store mounted"')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`tocfs mount did not come up:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    mountpoint, root, pid: child.pid!, log: () => log,
    exitCode: () => child.exitCode,
    serverPid() {
      const all = [...log.matchAll(/"serverPid":(\d+)[^\n]*"msg":"server started"/g)];
      return all.length ? Number(all[all.length - 1]![1]) : undefined;
    },
    async waitForLog(re: RegExp, timeoutMs = 10_000) {
      const end = Date.now() + timeoutMs;
      while (!re.test(log)) {
        if (Date.now() > end) throw new Error(`the daemon log never matched ${re}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
        if (child.exitCode === null) child.kill('SIGKILL');
      }
      if (mounted(mountpoint)) await run('umount', ['-l', mountpoint]).catch(() => {});
    },
  };
}

/**
 * Config lines that make each read miss fetch only what it reads (no whole-file or directory prefetch), for tests
 * that need reads in flight at a chosen moment (a server killed mid-read).
 */
export const ONE_FETCH_PER_MISS = 'whole_file = 0\ndir_prefetch = 0\nnearby_prefetch = 0\n';
