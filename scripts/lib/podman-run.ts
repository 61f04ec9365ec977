// What the cold-start benchmarks do around podman: drop caches, time a phase, and run a container until its
// workload prints a done marker (bench:coldstart, bench:realworld).
import { execFile, spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** The flags `podman run` needs on these machines (environment.md): no cgroups, no network, explicit ulimits. */
export const PODMAN_RUN_FLAGS = ['--rm', '--cgroups=disabled', '--network=none', '--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024'];

export async function dropCaches(): Promise<void> {
  await execFileP('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches'], { timeout: 120_000 });
}

/** c/storage layers (under an overlay graphroot) whose diff is an additional layer store's directory. */
export function alsLayerCount(graphroot: string): number {
  const dir = join(graphroot, 'overlay');
  if (!existsSync(dir)) return 0;
  return readdirSync(dir).filter((d) => existsSync(join(dir, d, 'additionallayer'))).length;
}

export async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; s: number }> {
  const t = performance.now();
  const value = await fn();
  return { value, s: (performance.now() - t) / 1000 };
}

const quote = (a: string): string => `'${a.replace(/'/g, `'\\''`)}'`;

/**
 * The host's podman (4.3.1) run the way this machine needs it: in a private mount namespace with a pure cgroup2
 * /sys/fs/cgroup (test/helpers/podman.ts does the same).
 */
export function hostPodmanRun(ref: string, command: string[]): string[] {
  const quoted = ['podman', 'run', ...PODMAN_RUN_FLAGS, ref, ...command].map(quote).join(' ');
  return ['unshare', '-m', 'sh', '-c', `mount --make-rprivate / && umount -l /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && exec ${quoted}`];
}

export interface MarkedRun {
  /** stdout before the marker. */
  output: string;
  /** Start → the marker on stdout. */
  doneS: number;
  /** Start → the process exited. */
  exitS: number;
}

/**
 * Run `argv` (a `podman run …`), timed to `marker` on its stdout, like peers time "run" to a ready line. Podman
 * 4.3.1 here sometimes waits a fixed 20 s after the container has exited ("Exceeded conmon timeout waiting for
 * container … to exit" in its debug log) before it exits itself; that wait is not the image's cold start, so it is
 * reported separately (exitS), not timed. `onDone` is called when the marker arrives.
 */
export function runUntilMarker(argv: string[], env: NodeJS.ProcessEnv, marker: string, timeoutMs: number, onDone: () => void = () => {}): Promise<MarkedRun> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(argv[0]!, argv.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let doneS: number | undefined;
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (doneS === undefined && stdout.includes(`${marker}\n`)) {
        doneS = (performance.now() - t0) / 1000;
        onDone();
      }
    });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('error', (err) => { clearTimeout(timer); reject(err); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const exitS = (performance.now() - t0) / 1000;
      if (doneS === undefined) {
        reject(new Error(`${argv.slice(-6).join(' ')} ended (code ${code}, signal ${signal}) without printing ${marker}: ${stderr.slice(-2000)}${stdout.slice(-1000)}`));
        return;
      }
      resolve({ output: stdout.slice(0, stdout.indexOf(marker)), doneS, exitS });
    });
  });
}
