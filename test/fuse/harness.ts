// Drives test/fuse/server.js (a FUSE server in a child process) from the mocha process. Every check on the
// mount runs in yet another child (ls, stat, dd...) through async child_process: the test process never makes a
// blocking syscall on a FUSE mountpoint.
import { execFile, fork, spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { spawnError } from '../helpers/tools.js';
import type { ServerConfig } from './server.js';

const execFileP = promisify(execFile);
export const SERVER_JS = join(dirname(fileURLToPath(import.meta.url)), 'server.js');

export interface Msg {
  type: string;
  [k: string]: unknown;
}

let execIds = 0;

export class TestServer {
  readonly messages: Msg[] = [];
  ready!: Msg;
  exited: Promise<number | null>;
  private waiters: Array<{ pred: (m: Msg) => boolean; resolve: (m: Msg) => void }> = [];

  constructor(readonly child: ChildProcess, readonly mountPoint: string) {
    child.on('message', (m: Msg) => {
      this.messages.push(m);
      this.waiters = this.waiters.filter((w) => {
        if (!w.pred(m)) return true;
        w.resolve(m);
        return false;
      });
    });
    this.exited = new Promise((r) => child.on('exit', (code) => r(code)));
  }

  /** Resolve with the first message (already received or future) matching `pred`. */
  waitFor(pred: (m: Msg) => boolean, timeoutMs = 10_000, fromIndex = 0): Promise<Msg> {
    const seen = this.messages.slice(fromIndex).find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timed out waiting for a server message (${pred.toString()})`)), timeoutMs);
      this.waiters.push({ pred, resolve: (m) => (clearTimeout(t), resolve(m)) });
    });
  }

  async stats(): Promise<Msg> {
    const n = this.messages.length;
    this.child.send({ cmd: 'stats' });
    return this.waitFor((m) => m.type === 'stats', 10_000, n);
  }

  /** Run a command inside the server's own namespaces (the server runs it asynchronously). */
  async exec(file: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    const id = ++execIds;
    const n = this.messages.length;
    this.child.send({ cmd: 'exec', id, file, args });
    const m = await this.waitFor((x) => x.type === 'exec-result' && x.id === id, 30_000, n);
    return m as unknown as { code: number; stdout: string; stderr: string };
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    if (this.child.connected) this.child.send({ cmd: 'close' });
    const t = setTimeout(() => this.child.kill('SIGKILL'), 15_000);
    await this.exited;
    clearTimeout(t);
  }
}

/**
 * Start test/fuse/server.js with UV_THREADPOOL_SIZE=16 in its environment (the only reliable way to size the
 * pool of an ES-module program). `wrapper` runs it through another command, e.g. ['unshare', '-Urm'].
 */
export async function startServer(cfg: ServerConfig, env: Record<string, string> = {}, wrapper: string[] = []): Promise<TestServer> {
  const opts = { env: { ...process.env, UV_THREADPOOL_SIZE: '16', ...env }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] as StdioOptions };
  const child = wrapper.length
    ? spawn(wrapper[0]!, [...wrapper.slice(1), process.execPath, SERVER_JS, JSON.stringify(cfg)], opts)
    : fork(SERVER_JS, [JSON.stringify(cfg)], opts);
  const s = new TestServer(child, cfg.mountPoint);
  const first = await Promise.race([
    s.waitFor((m) => m.type === 'ready' || m.type === 'error', 60_000),
    s.exited.then((c) => ({ type: 'error', message: `server exited with ${c}` }) as Msg),
  ]);
  if (first.type !== 'ready') throw new Error(`FUSE test server failed: ${String(first.message)}`);
  s.ready = first;
  return s;
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a command (never through the test process's own syscalls on the mount); never rejects on exit status. */
export async function sh(cmd: string, args: string[], opts: { timeout?: number; cwd?: string } = {}): Promise<ExecResult> {
  try {
    const r = await execFileP(cmd, args, { timeout: opts.timeout ?? 30_000, maxBuffer: 64 << 20, cwd: opts.cwd, encoding: 'utf8' });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number | string; syscall?: string; stdout?: string; stderr?: string };
    const missing = spawnError(cmd, e);
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: missing?.message ?? e.stderr ?? String(err) };
  }
}

export async function ok(cmd: string, args: string[], opts: { timeout?: number; cwd?: string } = {}): Promise<string> {
  const r = await sh(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

/** Mount points under `dir` still listed in /proc/mounts (reading /proc never touches a FUSE mount). */
export function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1] ?? '').filter((p) => p.startsWith(dir));
}

/** Detach everything mounted under `dir` (deepest first) and remove it. For after() hooks. */
export async function cleanupDir(dir: string): Promise<void> {
  for (let i = 0; i < 5; i++) {
    const left = mountsUnder(dir).sort((a, b) => b.length - a.length);
    if (!left.length) break;
    for (const m of left) await sh('umount', ['-l', m]);
  }
  if (mountsUnder(dir).length) throw new Error(`mounts left under ${dir}: ${mountsUnder(dir).join(', ')}`);
  rmSync(dir, { recursive: true, force: true });
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export const hasFuse = (): boolean => process.getuid?.() === 0 && existsSync('/dev/fuse');
