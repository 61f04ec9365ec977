// What the cold-start benchmarks do around podman: drop caches, time a phase, and run a container until its
// workload prints a done marker (bench:coldstart, bench:realworld). How to run podman here: test/helpers/podman.ts.
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export async function dropCaches(): Promise<void> {
  await execFileP('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches'], { timeout: 120_000 });
}

export async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; s: number }> {
  const t = performance.now();
  const value = await fn();
  return { value, s: (performance.now() - t) / 1000 };
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
