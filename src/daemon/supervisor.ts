// The `tocfs mount` process: mounts the FUSE connection, keeps its /dev/fuse fd, and runs the server (`tocfs serve`,
// the resolver, caches and FUSE loop) as a child that inherits the fd. When the server dies (a crash, SIGKILL, an
// OOM kill), the connection lives on in the fd kept here: requests queue in the kernel instead of failing with
// ENOTCONN, a new server is started on the same fd, asks the kernel to resend what the dead one had read, and
// answers the node ids the kernel still holds (the store's namespace journal). Containers see a pause.
//
// This process stays small on purpose: no registry, no caches, nothing that can grow or crash with the traffic.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import type { Logger } from 'pino';
import { detachMount, findMounts, mountDevice, type Negotiated } from '../fuse/index.js';
import type { Config } from './config.js';

/** What the supervisor tells a server in its environment (TOCFS_FUSE, JSON). */
export interface ServeHandoff {
  /** The server's fd of the connection. */
  fd: number;
  devMinor?: number;
  negotiated?: Negotiated;
  /** A previous server of this connection died. */
  resume: boolean;
}

/** What a server tells the supervisor (IPC). */
export type ServerMessage = { type: 'init'; negotiated: Negotiated } | { type: 'ready' };

export const HANDOFF_ENV = 'TOCFS_FUSE';

export interface SupervisorOptions {
  cfg: Config;
  logger: Logger;
  /** The server's command: node and the CLI entry with `serve` and its arguments. */
  server: { file: string; args: string[] };
  /** Called once, when the first server is serving. */
  onReady?: () => void;
  /** Respawns allowed within `windowMs` before the supervisor gives up and unmounts. Default 5 per minute. */
  maxRespawns?: number;
  windowMs?: number;
}

/** Delay before the n-th respawn within the window: the first is immediate (requests are waiting). */
const BACKOFF_MS = [0, 250, 1000, 2000, 4000];
/** How long a server has to unmount and exit after SIGTERM before it is killed. */
const STOP_GRACE_MS = 1200;

/** Mount, serve through child servers until stopped; resolves to the exit code. */
export async function supervise(opts: SupervisorOptions): Promise<number> {
  const { cfg, logger } = opts;
  await mkdir(cfg.mountpoint, { recursive: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOTCONN') throw err; // a stale mount: mountDevice clears it
  });
  const { fd, devMinor, clearedStale } = await mountDevice(cfg.mountpoint, { subtype: 'tocfs', fsname: 'tocfs', allowOther: true });
  if (clearedStale) logger.warn({ mountpoint: cfg.mountpoint, cleared: clearedStale }, 'detached a stale FUSE mount left by a dead daemon');
  logger.info({ mountpoint: cfg.mountpoint, devMinor }, 'supervisor: mounted; the server serves it and is restarted if it dies');
  return new Supervisor(opts, fd, devMinor).run();
}

class Supervisor {
  private child: ChildProcess | undefined;
  private negotiated: Negotiated | undefined;
  private readonly respawns: number[] = [];
  private stopping = false;
  /** A restart asked for (SIGHUP): the next exit is respawned at once and not counted as a crash. */
  private restarting = false;
  private readyOnce = false;
  private respawnTimer: NodeJS.Timeout | undefined;
  /** When the last server died, for the "resumed after" log line. */
  private diedAt = 0;
  private finish!: (code: number) => void;
  private readonly log: Logger;

  constructor(private readonly opts: SupervisorOptions, private fd: number, private readonly devMinor: number | undefined) {
    this.log = opts.logger;
  }

  run(): Promise<number> {
    const done = new Promise<number>((resolve) => (this.finish = resolve));
    const onSignal = (sig: NodeJS.Signals): void => {
      this.log.info({ signal: sig }, 'supervisor: stopping the server and unmounting');
      void this.stop(0);
    };
    const onRestart = (): void => this.restart();
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    process.on('SIGHUP', onRestart);
    this.start(false);
    return done.finally(() => {
      process.removeListener('SIGTERM', onSignal);
      process.removeListener('SIGINT', onSignal);
      process.removeListener('SIGHUP', onRestart);
    });
  }

  /**
   * SIGHUP: replace the server (new code or configuration) while the mount stays. The server is killed outright: a
   * graceful stop would unmount, and whatever it had read, the next one gets again through FUSE_NOTIFY_RESEND.
   */
  private restart(): void {
    const child = this.child;
    if (this.stopping || this.restarting || !child || child.exitCode !== null) return;
    this.restarting = true;
    this.log.info({ serverPid: child.pid }, 'supervisor: restarting the server (SIGHUP); the mount stays');
    child.kill('SIGKILL');
  }

  private start(resume: boolean): void {
    const handoff: ServeHandoff = { fd: 3, devMinor: this.devMinor, negotiated: this.negotiated, resume };
    const child = spawn(this.opts.server.file, this.opts.server.args, {
      // fd 3: the connection; fd 4: the IPC channel (the server's 'init' and 'ready', and its parent's death).
      stdio: ['ignore', 'inherit', 'inherit', this.fd, 'ipc'],
      env: { ...process.env, [HANDOFF_ENV]: JSON.stringify(handoff) },
    });
    this.child = child;
    this.log.info({ serverPid: child.pid, resume }, 'server started');
    child.on('message', (m: ServerMessage) => this.onMessage(m, resume));
    child.on('error', (err) => this.log.error({ err }, 'server could not be started'));
    child.once('exit', (code, signal) => void this.onExit(child, code, signal));
  }

  private onMessage(m: ServerMessage, resume: boolean): void {
    if (m.type === 'init') this.negotiated = m.negotiated;
    if (m.type !== 'ready') return;
    if (resume) this.log.info({ serverPid: this.child?.pid, afterMs: Date.now() - this.diedAt }, 'server resumed the mount');
    if (!this.readyOnce) {
      this.readyOnce = true;
      this.opts.onReady?.();
    }
  }

  private async onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): Promise<void> {
    if (this.child === child) this.child = undefined;
    if (this.stopping) return; // stop() waits for this exit itself
    if (this.restarting) {
      this.restarting = false;
      this.diedAt = Date.now();
      this.start(true);
      return;
    }
    if (code === 0) {
      // The server ended its session: the mount was unmounted (or SIGTERM went to the server directly).
      this.log.info({ serverPid: child.pid }, 'server exited; supervisor exits');
      await this.stop(0);
      return;
    }
    this.diedAt = Date.now();
    const how = signal ? `signal ${signal}` : `exit code ${code}`;
    if (!(await this.stillMounted())) {
      this.log.error({ serverPid: child.pid, code, signal }, `server died (${how}) and the mount is gone: exiting`);
      await this.stop(1);
      return;
    }
    const now = Date.now();
    while (this.respawns.length && now - this.respawns[0]! > (this.opts.windowMs ?? 60_000)) this.respawns.shift();
    const max = this.opts.maxRespawns ?? BACKOFF_MS.length;
    if (this.respawns.length >= max) {
      this.log.error({ serverPid: child.pid, code, signal, respawns: this.respawns.length },
        `server died (${how}) ${max + 1} times within ${Math.round((this.opts.windowMs ?? 60_000) / 1000)} s: giving up, unmounting ${this.opts.cfg.mountpoint}; see the log above for why it dies, then run tocfs mount again`);
      await this.stop(1);
      return;
    }
    const delay = BACKOFF_MS[Math.min(this.respawns.length, BACKOFF_MS.length - 1)]!;
    this.respawns.push(now);
    this.log.warn({ serverPid: child.pid, code, signal, delayMs: delay }, `server died (${how}), respawning; requests wait in the kernel meanwhile`);
    this.respawnTimer = setTimeout(() => {
      this.respawnTimer = undefined;
      if (!this.stopping) this.start(true);
    }, delay);
  }

  private async stillMounted(): Promise<boolean> {
    const mounts = await findMounts(this.opts.cfg.mountpoint).catch(() => []);
    return mounts.some((m) => m.fsType === 'fuse.tocfs' && (this.devMinor === undefined || m.minor === this.devMinor));
  }

  /** Stop the server (SIGTERM, then SIGKILL after a grace period), make sure the mount is gone, and finish. */
  private async stop(code: number): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    clearTimeout(this.respawnTimer);
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
      await exited;
      clearTimeout(timer);
    }
    if (await this.stillMounted()) {
      await detachMount(this.opts.cfg.mountpoint, this.devMinor).catch((err: Error) => this.log.error({ err: err.message }, 'unmount failed'));
    }
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
    this.finish(code);
  }
}

/** In a server: the connection handed over by the supervisor, if this process was started by one. */
export function serveHandoff(): ServeHandoff | undefined {
  const raw = process.env[HANDOFF_ENV];
  if (!raw) return undefined;
  delete process.env[HANDOFF_ENV]; // not for the processes this one starts
  const h = JSON.parse(raw) as ServeHandoff;
  if (!Number.isInteger(h.fd) || h.fd < 0) throw new Error(`${HANDOFF_ENV} names no fd`);
  return h;
}
