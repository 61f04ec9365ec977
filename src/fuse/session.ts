// One FUSE connection: open /dev/fuse, mount, serve requests until unmounted.
//
// Two ways to receive requests (`transport`):
//  - 'epoll' (default): the /dev/fuse fd is opened as a libuv stream (Node's pipe_wrap, non-blocking, level-
//    triggered epoll on the main thread). No thread hops: a request costs one wakeup, like libfuse's
//    single-threaded loop. Each read is a fresh 64 KiB buffer, so max_write is negotiated at 60 KiB (READ
//    replies are still up to max_pages = 1 MiB: they travel in the other direction).
//  - 'pool': `readers` reads of the device are outstanding at once, each on a libuv pool thread (fs.read blocks
//    there until the kernel has a request); buffers are max_write (1 MiB) + 4 KiB. A completed read is decoded
//    synchronously — everything the operation needs is copied out — and the buffer goes straight back to the
//    kernel. Used when pipe_wrap is unavailable; costs ~2.5× the latency per request (two extra thread hops).
// Either way the operation then runs (sync or async) and its reply is written as soon as it is ready, in
// whatever order operations finish. Replies go out with fs.writeSync/writevSync: a write to /dev/fuse only
// copies into the waiting request and never blocks, so doing it on the main thread costs less than a pool
// round trip and cannot be starved by reads occupying the pool.
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import { resolve as resolvePath } from 'node:path';
import { backingIoctls } from './backing.js';
import { DirReply, encodeAttrOut, encodeEntry } from './codec.js';
import { Errno } from './errno.js';
import { abortConnection, clearStaleMount, findMounts, run } from './mount.js';
import {
  ATTR_OUT_SIZE, ENTRY_OUT_SIZE, FOPEN_CACHE_DIR, FOPEN_DIRECT_IO, FOPEN_KEEP_CACHE, FOPEN_NOFLUSH, FOPEN_NONSEEKABLE,
  FOPEN_PASSTHROUGH, FOPEN_PASSTHROUGH_MASK, FUSE_KERNEL_VERSION, FUSE_MAX_MINOR, FUSE_MIN_MINOR, GETXATTR_OUT_SIZE,
  INIT_FLAG2_HAS_RESEND, INIT_FLAG2_PASSTHROUGH, INIT_OUT_MAX_STACK_DEPTH_OFFSET, INIT_OUT_SIZE, IN_HEADER_SIZE, InitFlag,
  NOTIFY_RESEND, PASSTHROUGH_STACK_DEPTH, OPCODE_NAMES, OPEN_OUT_SIZE, OUT_HEADER_SIZE, Opcode, STATFS_OUT_SIZE, readU64,
  readUnique, writeU64, writeUnique,
} from './protocol.js';
import type { BackingFiles, Entry, FuseLogger, Negotiated, OpenReply, Operations, RequestContext, StatfsReply } from './types.js';

export interface SessionOptions {
  /** Type is `fuse.<subtype>` in /proc/mounts. Default 'tocfs'. */
  subtype?: string;
  /** Source column of the mount. Default = subtype. */
  fsname?: string;
  /** Let users other than the mounting one in (podman's storage runs as root, containers as anyone). Default true. */
  allowOther?: boolean;
  /**
   * Let the kernel check permissions from mode/uid/gid (default true). Without it — and with allow_other — the
   * kernel checks nothing: any user could open a 0600 file unless the filesystem checks ctx.uid itself; it then
   * sends ACCESS for access(2)/chdir instead.
   */
  defaultPermissions?: boolean;
  /** Mount read-only. Default false. */
  readOnly?: boolean;
  /** Extra `-o` options for mount(8). */
  mountOptions?: string[];
  /** Default TTL (seconds) of entries and attributes an operation returns without its own. Default 1. */
  entryTtl?: number;
  attrTtl?: number;
  /** How requests are read: see the top of session.ts. Default 'epoll' where Node allows it, else 'pool'. */
  transport?: 'epoll' | 'pool';
  /** 'pool' only: concurrent reads of /dev/fuse. Default: half of UV_THREADPOOL_SIZE, 1..8; below the pool size. */
  readers?: number;
  /** Largest request (READ, READDIR...) the kernel may send: max_pages × 4 KiB. Default 1 MiB. */
  maxRequestBytes?: number;
  /** Kernel readahead bound negotiated in INIT (bytes). Default 1 MiB. */
  maxReadahead?: number;
  /** When root: write the mount's bdi read_ahead_kb (the kernel's default of 128 KiB caps buffered READs). */
  readAheadKb?: number | false;
  /** Background (readahead) requests the kernel keeps in flight. Default 64. */
  maxBackground?: number;
  /** 'auto' (READDIRPLUS_AUTO) or 'always'. Only when the operations implement readdirplus. Default 'auto'. */
  readdirplus?: 'auto' | 'always';
  /** Detach a stale mount (ENOTCONN) on the mountpoint before mounting. Default true. */
  clearStale?: boolean;
  /** Unmount on SIGINT/SIGTERM. Default true. */
  handleSignals?: boolean;
  logger?: FuseLogger;
  /**
   * Ask the kernel for FUSE passthrough in INIT (Linux 6.9+, with max_stack_depth 1), when the native addon that
   * registers backing files is available (backing.ts). Default false. See FuseSession.backing.
   */
  passthrough?: boolean;
  /** Owner ids given to the kernel (user_id/group_id). Default: this process's. */
  uid?: number;
  gid?: number;
}

/** How FuseSession.adopt takes over a connection another process mounted (see src/daemon/supervisor.ts). */
export interface AdoptOptions extends SessionOptions {
  /** Minor device number of the connection, if the mounting process knows it. */
  devMinor?: number;
  /** What INIT settled on, when an earlier server of this connection answered it: no INIT comes again. */
  negotiated?: Negotiated;
  /**
   * An earlier server of this connection died: ask the kernel to resend the requests it had read but not
   * answered (FUSE_NOTIFY_RESEND), or their callers wait forever.
   */
  resend?: boolean;
  /** Called as soon as INIT is answered (before adopt resolves). */
  onInit?: (n: Negotiated) => void;
}

export interface SessionStats {
  requests: number;
  errors: number;
  interrupts: number;
  /** Requests a dead server of this connection had read, resent by the kernel (FUSE_NOTIFY_RESEND). */
  resent: number;
  /** Requests per opcode name. */
  byOp: Record<string, number>;
  inFlight: number;
}

const PAGE = 4096;

const consoleLogger: FuseLogger = {
  error: (o, m) => console.error(`fuse: ${m}`, o),
  warn: (o, m) => console.error(`fuse: ${m}`, o),
  info: () => {},
};

/** The libuv pool size this process started (or will start) with. */
export function threadPoolSize(): number {
  const n = Number.parseInt(process.env.UV_THREADPOOL_SIZE ?? '', 10);
  return Number.isFinite(n) && n > 0 ? Math.min(n, 1024) : 4;
}

interface PipeHandle {
  open(fd: number): number;
  readStart(): number;
  readStop(): number;
  close(cb?: () => void): void;
  onread: ((ab?: ArrayBuffer) => void) | undefined;
}

interface PipeBinding {
  Pipe: new (type: number) => PipeHandle;
  SOCKET: number;
  state: Int32Array;
  kReadBytesOrError: number;
  kArrayBufferOffset: number;
}

/** Node's internal stream bindings, if this Node still exposes them (process.binding is legacy but present). */
function pipeBinding(): PipeBinding | undefined {
  try {
    const legacy = process as unknown as { binding(name: string): Record<string, unknown> };
    const pw = legacy.binding('pipe_wrap') as { Pipe?: PipeBinding['Pipe']; constants?: { SOCKET?: number } };
    const sw = legacy.binding('stream_wrap') as { streamBaseState?: Int32Array; kReadBytesOrError?: number; kArrayBufferOffset?: number };
    if (typeof pw.Pipe !== 'function' || pw.constants?.SOCKET === undefined || !sw.streamBaseState) return undefined;
    if (sw.kReadBytesOrError === undefined || sw.kArrayBufferOffset === undefined) return undefined;
    return {
      Pipe: pw.Pipe, SOCKET: pw.constants.SOCKET, state: sw.streamBaseState,
      kReadBytesOrError: sw.kReadBytesOrError, kArrayBufferOffset: sw.kArrayBufferOffset,
    };
  } catch {
    return undefined;
  }
}

/** libuv hands every stream read a 64 KiB buffer; the kernel wants room for max_write + 80 bytes of headers. */
const EPOLL_MAX_WRITE = 60 * 1024;

const NOTIFY_INVAL_INODE = 2;
const NOTIFY_INVAL_ENTRY = 3;
const NOTIFY_DELETE = 6;

/** Replies at least this large are written from the thread pool (see writeAsync). */
const ASYNC_WRITE_BYTES = 128 * 1024;

class Request implements RequestContext {
  private ctrl: AbortController | undefined;
  aborted = false;

  constructor(
    readonly unique: number,
    readonly opcode: number,
    readonly uid: number,
    readonly gid: number,
    readonly pid: number,
  ) {}

  /** Created on first use: most requests never look at their signal. */
  get signal(): AbortSignal {
    if (!this.ctrl) {
      this.ctrl = new AbortController();
      if (this.aborted) this.ctrl.abort(new Errno('EINTR', 'interrupted'));
    }
    return this.ctrl.signal;
  }

  abort(reason: Errno): void {
    if (this.aborted) return;
    this.aborted = true;
    this.ctrl?.abort(reason);
  }
}

type Thenable<T> = { then(ok: (v: T) => void, fail: (e: unknown) => void): void };

function isThenable<T>(v: unknown): v is Thenable<T> {
  return v !== null && typeof v === 'object' && typeof (v as { then?: unknown }).then === 'function';
}

function openFlags(o: OpenReply | undefined): number {
  if (!o) return 0;
  const flags = (o.directIo ? FOPEN_DIRECT_IO : 0) | (o.keepCache ? FOPEN_KEEP_CACHE : 0) | (o.cacheDir ? FOPEN_CACHE_DIR : 0)
    | (o.nonSeekable ? FOPEN_NONSEEKABLE : 0) | (o.noFlush ? FOPEN_NOFLUSH : 0);
  // The kernel fails a passthrough open that carries any other flag (KEEP_CACHE...) with EIO.
  return o.backingId === undefined ? flags : (flags | FOPEN_PASSTHROUGH) & FOPEN_PASSTHROUGH_MASK;
}

/**
 * A mounted FUSE filesystem. `FuseSession.mount()` resolves once the kernel's INIT is answered; `close()`
 * unmounts (lazily and aborting the connection if busy) and resolves when the request loop has ended.
 * Events: 'init' (Negotiated), 'close'.
 */
export class FuseSession extends EventEmitter {
  readonly mountPoint: string;
  readonly ops: Operations;
  negotiated: Negotiated | undefined;
  /** Minor device number of the connection (st_dev 0:minor), known once mounted. */
  devMinor: number | undefined;
  private readonly opCounts = new Float64Array(64);
  private readonly counters = { requests: 0, errors: 0, interrupts: 0, resent: 0 };

  /**
   * Backing files for FUSE passthrough (OpenReply.backingId), when INIT granted passthrough and the native addon is
   * loaded; undefined otherwise (serve reads as usual). The ioctls need CAP_SYS_ADMIN: `open` throws EPERM without.
   */
  get backing(): BackingFiles | undefined {
    const io = backingIoctls();
    if (!this.negotiated?.passthrough || !io.ok || this.fd < 0) return undefined;
    this.backingFiles ??= {
      open: (fd) => io.addon.backingOpen(this.fd, fd),
      close: (id) => io.addon.backingClose(this.fd, id),
    };
    return this.backingFiles;
  }

  /** Why passthrough is off on this session (for the log and status), or undefined when it is on. */
  get passthroughOff(): string | undefined {
    if (this.backing) return undefined;
    if (!this.options.passthrough) return 'not asked for (passthrough = false)';
    const io = backingIoctls();
    if (!io.ok) return io.why;
    if (!this.negotiated) return 'INIT not answered yet';
    return `the kernel did not grant FUSE_PASSTHROUGH (it needs Linux 6.9 with CONFIG_FUSE_PASSTHROUGH; this kernel speaks FUSE 7.${this.negotiated.kernelMinor})`;
  }

  private backingFiles: BackingFiles | undefined;

  /** Request counters (a snapshot). */
  get stats(): SessionStats {
    const byOp: Record<string, number> = {};
    this.opCounts.forEach((n, op) => {
      if (n) byOp[OPCODE_NAMES[op] ?? `op${op}`] = n;
    });
    return { ...this.counters, byOp, inFlight: this.inflight.size };
  }

  private fd = -1;
  private readonly log: FuseLogger;
  private readonly opts: Required<Pick<SessionOptions, 'entryTtl' | 'attrTtl' | 'maxRequestBytes' | 'maxReadahead' | 'maxBackground'>>;
  private readonly options: SessionOptions;
  private readonly readers: number;
  private readonly bufSize: number;
  private readonly maxWrite: number;
  /** 'epoll' transport: the libuv stream over the fd, and its bindings. */
  private pipe: PipeHandle | undefined;
  private readonly binding: PipeBinding | undefined;
  readonly transport: 'epoll' | 'pool';
  private activeReaders = 0;
  private pendingWrites = 0;
  private readonly inflight = new Map<number, Request>();
  private readonly scratch = Buffer.alloc(64 * 1024);
  private stopping = false;
  private finished = false;
  private mounted = false;
  private closing: Promise<void> | undefined;
  private readonly done: Promise<void>;
  private resolveDone!: () => void;
  private initWaiter: { resolve: () => void; reject: (e: Error) => void } | undefined;
  /** adopt() after a dead server, not knowing whether INIT was answered: a request other than INIT says it was. */
  private initMaybeDone = false;
  private readonly onSignal = (sig: NodeJS.Signals): void => {
    this.log.info({ signal: sig, mountPoint: this.mountPoint }, 'signal: unmounting');
    void this.close();
  };

  private constructor(mountPoint: string, ops: Operations, options: SessionOptions) {
    super();
    this.mountPoint = resolvePath(mountPoint);
    this.ops = ops;
    this.options = options;
    this.log = options.logger ?? consoleLogger;
    const maxRequestBytes = Math.max(PAGE, Math.min(options.maxRequestBytes ?? 1 << 20, 256 * PAGE));
    this.opts = {
      entryTtl: options.entryTtl ?? 1,
      attrTtl: options.attrTtl ?? 1,
      maxRequestBytes,
      maxReadahead: options.maxReadahead ?? 1 << 20,
      maxBackground: Math.min(options.maxBackground ?? 64, 0xffff),
    };
    this.binding = (options.transport ?? 'epoll') === 'epoll' ? pipeBinding() : undefined;
    this.transport = this.binding ? 'epoll' : 'pool';
    if (options.transport === 'epoll' && !this.binding) {
      this.log.warn({}, "this Node has no pipe_wrap binding: using the 'pool' transport");
    }
    this.maxWrite = this.transport === 'epoll' ? EPOLL_MAX_WRITE : maxRequestBytes;
    const pool = threadPoolSize();
    const wanted = options.readers ?? Math.max(1, Math.min(8, Math.floor(pool / 2)));
    this.readers = Math.max(1, Math.min(wanted, pool - 1));
    if (this.transport === 'pool' && this.readers < wanted) {
      this.log.warn({ readers: wanted, threadPool: pool }, 'fewer /dev/fuse readers than asked: UV_THREADPOOL_SIZE is too small');
    }
    // The kernel refuses reads smaller than max_write + a header page (EINVAL); max_write = maxRequestBytes.
    this.bufSize = this.maxWrite + PAGE;
    this.done = new Promise((r) => (this.resolveDone = r));
  }

  /** Open /dev/fuse, clear a stale mount, mount, and serve. Resolves after INIT. */
  static async mount(mountPoint: string, ops: Operations, options: SessionOptions = {}): Promise<FuseSession> {
    const s = new FuseSession(mountPoint, ops, options);
    await s.start();
    return s;
  }

  /**
   * Serve a connection that is already mounted (`fd` is its /dev/fuse fd, inherited from the process that
   * mounted it). Resolves once INIT is answered, or at once when `negotiated` says an earlier server answered it.
   * close() unmounts as for a session that mounted itself.
   */
  static async adopt(fd: number, mountPoint: string, ops: Operations, options: AdoptOptions = {}): Promise<FuseSession> {
    const s = new FuseSession(mountPoint, ops, options);
    await s.adoptFd(fd, options);
    return s;
  }

  /** Resolves when the request loop has ended (unmounted, aborted or closed). */
  get closed(): Promise<void> {
    return this.done;
  }

  private async start(): Promise<void> {
    const o = this.options;
    if (o.clearStale ?? true) {
      const n = await clearStaleMount(this.mountPoint);
      if (n) this.log.warn({ mountPoint: this.mountPoint, cleared: n }, 'detached a stale FUSE mount left by a dead daemon');
    }
    this.fd = fs.openSync('/dev/fuse', fs.constants.O_RDWR);
    const init = new Promise<void>((resolve, reject) => (this.initWaiter = { resolve, reject }));
    // Pool reads start now and poll (EPERM) until mount(2) attaches the fd; INIT waits in the kernel's queue
    // meanwhile (mount(2) does not wait for it). The epoll stream is opened once mounted: an unattached fd
    // polls as an error.
    if (this.transport === 'pool') for (let i = 0; i < this.readers; i++) this.startReader();
    try {
      await mountFd(this.mountPoint, this.fd, o);
    } catch (err) {
      this.failStart();
      throw err;
    }
    this.mounted = true;
    if (this.transport === 'epoll' && !this.startEpoll()) {
      // Nobody will ever read this connection: detach the mount and end here.
      await run('umount', ['-i', '-l', this.mountPoint]);
      this.mounted = false;
      this.stopping = true;
      this.finish();
      throw new Error('could not open /dev/fuse as a libuv stream (try transport: "pool")');
    }
    if (o.handleSignals ?? true) {
      process.on('SIGINT', this.onSignal);
      process.on('SIGTERM', this.onSignal);
    }
    this.devMinor = await mountMinor(this.mountPoint, o);
    await this.awaitInit(init);
    await this.raiseReadahead();
  }

  private async adoptFd(fd: number, o: AdoptOptions): Promise<void> {
    this.fd = fd;
    this.mounted = true;
    this.devMinor = o.devMinor ?? await mountMinor(this.mountPoint, o);
    const init = o.negotiated ? undefined : new Promise<void>((resolve, reject) => (this.initWaiter = { resolve, reject }));
    if (o.onInit) this.once('init', o.onInit);
    if (o.negotiated) {
      this.negotiated = { ...o.negotiated, transport: this.transport };
      if (o.negotiated.maxWrite > this.maxWrite) {
        this.log.warn({ negotiated: o.negotiated.maxWrite, ours: this.maxWrite }, 'this server reads smaller requests than INIT promised the kernel');
      }
    }
    if (this.transport === 'pool') for (let i = 0; i < this.readers; i++) this.startReader();
    else if (!this.startEpoll()) {
      this.stopping = true;
      this.finish();
      throw new Error('could not open the inherited /dev/fuse fd as a libuv stream (try transport: "pool")');
    }
    if (o.handleSignals ?? true) {
      process.on('SIGINT', this.onSignal);
      process.on('SIGTERM', this.onSignal);
    }
    this.initMaybeDone = !o.negotiated && o.resend === true;
    // After the reads are running: the resent requests come back to this process's queue at once.
    if (o.resend) this.resend();
    if (init) await this.awaitInit(init);
  }

  /**
   * FUSE_NOTIFY_RESEND: every request the connection's previous server read and never answered goes back to the
   * queue, its unique marked with bit 63 (readUnique). Kernels before 6.9 answer EINVAL: their callers stay blocked
   * until interrupted, as before.
   */
  private resend(): void {
    const b = Buffer.alloc(OUT_HEADER_SIZE);
    b.writeUInt32LE(OUT_HEADER_SIZE, 0);
    b.writeInt32LE(NOTIFY_RESEND, 4);
    try {
      fs.writeSync(this.fd, b);
      this.log.info({ mountPoint: this.mountPoint }, 'asked the kernel to resend the requests the previous server had read');
    } catch (err) {
      this.log.warn({ err, mountPoint: this.mountPoint }, 'the kernel cannot resend requests the previous server had read (FUSE_NOTIFY_RESEND needs Linux 6.9): their callers stay blocked until interrupted');
    }
  }

  private async awaitInit(init: Promise<void>): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        init,
        new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('no FUSE INIT from the kernel within 30 s')), 30_000))),
      ]);
    } catch (err) {
      await this.close();
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  private async raiseReadahead(): Promise<void> {
    const o = this.options;
    const kb = o.readAheadKb ?? 1024;
    if (kb !== false && this.devMinor !== undefined && process.getuid?.() === 0) {
      try {
        await fs.promises.writeFile(`/sys/class/bdi/0:${this.devMinor}/read_ahead_kb`, `${kb}\n`);
      } catch (err) {
        this.log.debug?.({ err }, 'could not raise read_ahead_kb');
      }
    }
  }

  private failStart(): void {
    // Nothing was mounted. Pool readers are polling for the connection (EPERM) and stop at their next try.
    this.stopping = true;
    this.initWaiter = undefined;
    if (this.transport === 'epoll') this.finish();
  }

  /** Unmount and wait for the loop to end. Busy mounts are detached lazily and their connection aborted. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    if (this.finished) return;
    this.stopping = true;
    for (const req of this.inflight.values()) req.abort(new Errno('EINTR', 'session closing'));
    if (this.mounted) {
      const r = await run('umount', ['-i', this.mountPoint]);
      if (r.code !== 0) {
        this.log.warn({ mountPoint: this.mountPoint, stderr: r.stderr.trim() }, 'unmount failed (busy?): detaching lazily and aborting the connection');
        await run('umount', ['-i', '-l', this.mountPoint]);
        if (this.devMinor !== undefined) await abortConnection(this.devMinor);
      }
      this.mounted = false;
    }
    // If the kernel has not ended our reads within a few seconds (should not happen), abort the connection.
    const t = setTimeout(() => {
      if (this.devMinor !== undefined) void abortConnection(this.devMinor);
    }, 5000);
    t.unref();
    await this.done;
    clearTimeout(t);
  }

  // ---- notifications (the filesystem tells the kernel to drop what it cached) ----

  /**
   * Drop the cached data (pages from `offset`, `len` bytes; 0 = to the end) and attributes of an inode:
   * after content or attributes changed under a long TTL or KEEP_CACHE. Resolves false if the kernel had
   * nothing cached for it.
   */
  notifyInvalInode(ino: number, offset = 0, len = 0): Promise<boolean> {
    const b = Buffer.alloc(OUT_HEADER_SIZE + 24);
    writeU64(b, ino, 16);
    writeU64(b, offset, 24);
    writeU64(b, len, 32);
    return this.notify(NOTIFY_INVAL_INODE, b);
  }

  /** Drop a cached name (positive or negative) under `parent`: after the name was added, removed or replaced. */
  notifyInvalEntry(parent: number, name: string): Promise<boolean> {
    const n = Buffer.from(name);
    const b = Buffer.alloc(OUT_HEADER_SIZE + 16 + n.length + 1);
    writeU64(b, parent, 16);
    b.writeUInt32LE(n.length, 24);
    n.copy(b, 32);
    return this.notify(NOTIFY_INVAL_ENTRY, b);
  }

  /** Like notifyInvalEntry, and also tells the kernel that `child` was deleted (open files see it unlinked). */
  notifyDelete(parent: number, child: number, name: string): Promise<boolean> {
    const n = Buffer.from(name);
    const b = Buffer.alloc(OUT_HEADER_SIZE + 24 + n.length + 1);
    writeU64(b, parent, 16);
    writeU64(b, child, 24);
    b.writeUInt32LE(n.length, 32);
    n.copy(b, 40);
    return this.notify(NOTIFY_DELETE, b);
  }

  /**
   * Notifications take inode locks in the kernel that a request waiting for our reply may hold, so they are
   * written from the thread pool, never from the main thread (which must stay free to answer that request).
   */
  private notify(code: number, b: Buffer): Promise<boolean> {
    return new Promise((resolve, reject) => {
      if (this.fd < 0 || this.finished || !this.negotiated) {
        resolve(false);
        return;
      }
      b.writeUInt32LE(b.length, 0);
      b.writeInt32LE(code, 4); // error = notify code, unique = 0
      writeU64(b, 0, 8);
      this.pendingWrites++;
      fs.write(this.fd, b, 0, b.length, null, (err) => {
        this.pendingWrites--;
        if (this.finished && this.pendingWrites === 0) this.closeFd();
        const c = (err as NodeJS.ErrnoException | null)?.code;
        if (!err) resolve(true);
        else if (c === 'ENOENT' || c === 'ENODEV' || c === 'EBADF') resolve(false);
        else reject(err);
      });
    });
  }

  // ---- the request loop ----

  private startReader(): void {
    this.activeReaders++;
    this.readLoop(Buffer.allocUnsafe(this.bufSize));
  }

  private readLoop(buf: Buffer): void {
    fs.read(this.fd, buf, 0, buf.length, null, (err, n) => {
      if (err) {
        const code = err.code;
        if ((code === 'ENOENT' || code === 'EINTR' || code === 'EAGAIN') && !this.finished) {
          this.readLoop(buf); // the request was interrupted before we got it
          return;
        }
        if (code === 'EPERM' && !this.stopping) {
          // The fd is not attached to a connection yet: mount(2) is still running in the child.
          setTimeout(() => this.readLoop(buf), 2);
          return;
        }
        if (code !== 'ENODEV' && code !== 'EBADF' && code !== 'EPERM' && !this.stopping) this.log.error({ err }, 'reading /dev/fuse failed; reader stops');
        this.readerEnded();
        return;
      }
      try {
        this.dispatch(buf, n);
      } catch (e) {
        this.log.error({ err: e }, 'FUSE request dispatch failed');
      }
      this.readLoop(buf);
    });
  }

  private startEpoll(): boolean {
    const b = this.binding!;
    const h = new b.Pipe(b.SOCKET);
    if (h.open(this.fd) !== 0) return false;
    this.pipe = h;
    const state = b.state;
    h.onread = (ab?: ArrayBuffer): void => {
      const n = state[b.kReadBytesOrError]!;
      if (n > 0 && ab) {
        try {
          this.dispatch(Buffer.from(ab, state[b.kArrayBufferOffset]!, n), n);
        } catch (e) {
          this.log.error({ err: e }, 'FUSE request dispatch failed');
        }
        return;
      }
      if (n === 0) return;
      // -19 ENODEV: unmounted or aborted; -103 ECONNABORTED likewise. Anything else ends the stream too (libuv
      // stops reading after an error), so the session ends and the connection is aborted.
      if (n !== -19 && n !== -103 && !this.stopping) {
        this.log.error({ errno: n }, 'reading /dev/fuse failed; the session ends');
        if (this.devMinor !== undefined) void abortConnection(this.devMinor);
      }
      this.finish();
    };
    return h.readStart() === 0;
  }

  private readerEnded(): void {
    if (--this.activeReaders > 0) return;
    this.finish();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.stopping = true;
    for (const req of this.inflight.values()) req.abort(new Errno('EINTR', 'session closed'));
    if (this.pendingWrites === 0) this.closeFd(); // else the last async write closes it
    process.removeListener('SIGINT', this.onSignal);
    process.removeListener('SIGTERM', this.onSignal);
    if (this.initWaiter) this.initWaiter.reject(new Error('FUSE connection ended before INIT'));
    this.initWaiter = undefined;
    void (async () => {
      try {
        await this.ops.destroy?.();
      } catch (err) {
        this.log.error({ err }, 'destroy failed');
      }
      this.resolveDone();
      this.emit('close');
    })();
  }

  // ---- replies ----

  private write(buf: Buffer | Buffer[]): void {
    if (this.fd < 0 || this.finished) return;
    try {
      if (Array.isArray(buf)) fs.writevSync(this.fd, buf);
      else fs.writeSync(this.fd, buf);
    } catch (err) {
      this.writeFailed(err);
    }
  }

  /**
   * Large READ replies: the kernel copies them into the reader's pages inside write(), so a 1 MiB reply costs
   * a few hundred µs of copying. Done on a pool thread, several copies run in parallel and the main thread
   * keeps dispatching. The buffers stay referenced by the closure until the write is done.
   */
  private writeAsync(parts: Buffer[]): void {
    if (this.fd < 0 || this.finished) return;
    this.pendingWrites++;
    fs.writev(this.fd, parts, (err) => {
      this.pendingWrites--;
      if (err) this.writeFailed(err);
      if (this.finished && this.pendingWrites === 0) this.closeFd();
    });
  }

  /** Close the device. Never while an async write may still use the fd number (it could be reused). */
  private closeFd(): void {
    if (this.pipe) {
      this.pipe.readStop();
      this.pipe.close(); // closes the fd
      this.pipe = undefined;
      this.fd = -1;
    } else if (this.fd >= 0) {
      fs.close(this.fd, () => {});
      this.fd = -1;
    }
  }

  private writeFailed(err: unknown): void {
    const code = (err as NodeJS.ErrnoException).code;
    // ENOENT: the request was interrupted and is gone. ENODEV: unmounted meanwhile.
    if (code !== 'ENOENT' && code !== 'ENODEV' && code !== 'EBADF') this.log.error({ err }, 'writing a FUSE reply failed');
  }

  private header(buf: Buffer, len: number, error: number, unique: number): void {
    buf.writeUInt32LE(len, 0);
    buf.writeInt32LE(error, 4);
    writeUnique(buf, unique, 8);
  }

  private replyError(unique: number, errno: number): void {
    const b = this.scratch;
    this.header(b, OUT_HEADER_SIZE, -errno, unique);
    this.write(b.subarray(0, OUT_HEADER_SIZE));
  }

  /** Reply with the first `bodyLen` bytes of scratch after the header (the caller encoded them there). */
  private replyScratch(unique: number, bodyLen: number): void {
    const len = OUT_HEADER_SIZE + bodyLen;
    this.header(this.scratch, len, 0, unique);
    this.write(this.scratch.subarray(0, len));
  }

  private replyBytes(unique: number, body: Buffer | Buffer[], max: number): void {
    const parts: Buffer[] = [Buffer.allocUnsafe(OUT_HEADER_SIZE)];
    let total = 0;
    for (const b of Array.isArray(body) ? body : [body]) {
      if (total >= max) break;
      const part = total + b.length > max ? b.subarray(0, max - total) : b;
      if (part.length) parts.push(part);
      total += part.length;
    }
    this.header(parts[0]!, OUT_HEADER_SIZE + total, 0, unique);
    // A reply must be one write; writev takes at most IOV_MAX (1024) pieces, so very fragmented data is joined.
    const out = parts.length > 512 ? [Buffer.concat(parts)] : parts;
    if (total >= ASYNC_WRITE_BYTES && this.transport === 'epoll') this.writeAsync(out);
    else this.write(out.length === 1 ? out[0]! : out);
  }

  private fail(req: Request, err: unknown): void {
    this.counters.errors++;
    if (err instanceof Errno) {
      this.replyError(req.unique, err.errno);
      return;
    }
    this.log.error({ err, op: OPCODE_NAMES[req.opcode] ?? req.opcode, unique: req.unique }, 'FUSE operation failed with a non-Errno error; answering EIO');
    this.replyError(req.unique, Errno.EIO.errno);
  }

  /** Run an operation; `ok` encodes and writes its result. Sync results skip the in-flight table. */
  private call<T>(req: Request, fn: () => T | Promise<T>, ok: (v: T) => void): void {
    let v: T | Promise<T>;
    try {
      v = fn();
    } catch (err) {
      this.fail(req, err);
      return;
    }
    if (!isThenable<T>(v)) {
      try {
        ok(v);
      } catch (err) {
        this.fail(req, err);
      }
      return;
    }
    this.inflight.set(req.unique, req);
    try {
      this.settle(req, v, ok);
    } catch (err) {
      this.inflight.delete(req.unique);
      this.fail(req, err);
    }
  }

  private settle<T>(req: Request, v: Thenable<T>, ok: (v: T) => void): void {
    v.then(
      (r) => {
        this.inflight.delete(req.unique);
        try {
          ok(r);
        } catch (err) {
          this.fail(req, err);
        }
      },
      (err) => {
        this.inflight.delete(req.unique);
        this.fail(req, err);
      },
    );
  }

  // ---- dispatch ----

  private dispatch(buf: Buffer, n: number): void {
    if (n < IN_HEADER_SIZE) {
      this.log.error({ bytes: n }, 'short FUSE request');
      return;
    }
    const len = buf.readUInt32LE(0);
    const opcode = buf.readUInt32LE(4);
    const unique = readUnique(buf, 8);
    const nodeid = readU64(buf, 16);
    const extlen = buf.readUInt16LE(36) * 8;
    const body = IN_HEADER_SIZE;
    const end = Math.min(len, n) - extlen;
    this.counters.requests++;
    if (unique < 0) this.counters.resent++;
    this.opCounts[opcode < 64 ? opcode : 0]!++;
    const req = new Request(unique, opcode, buf.readUInt32LE(24), buf.readUInt32LE(28), buf.readUInt32LE(32));
    const ops = this.ops;
    const cstr = (off: number): string => {
      const z = buf.indexOf(0, off);
      return buf.toString('utf8', off, z < 0 || z > end ? end : z);
    };

    if (this.initMaybeDone && opcode !== Opcode.INIT) this.assumeInitialised();
    switch (opcode) {
      case Opcode.INIT:
        this.init(req, buf.subarray(body, end));
        return;
      case Opcode.LOOKUP: {
        const nm = cstr(body);
        this.call(req, () => ops.lookup(nodeid, nm, req), (e) => this.replyEntry(req, e));
        return;
      }
      case Opcode.FORGET:
        this.forget(nodeid, readU64(buf, body));
        return;
      case Opcode.BATCH_FORGET: {
        const count = buf.readUInt32LE(body);
        for (let i = 0, off = body + 8; i < count && off + 16 <= end; i++, off += 16) {
          this.forget(readU64(buf, off), readU64(buf, off + 8));
        }
        return;
      }
      case Opcode.GETATTR: {
        const flags = buf.readUInt32LE(body);
        const fh = flags & 1 ? readU64(buf, body + 8) : undefined;
        this.call(req, () => ops.getattr(nodeid, req, fh), (a) => {
          encodeAttrOut(this.scratch, OUT_HEADER_SIZE, a.attr, a.attrTtl ?? this.opts.attrTtl);
          this.replyScratch(unique, ATTR_OUT_SIZE);
        });
        return;
      }
      case Opcode.READLINK:
        if (!ops.readlink) break;
        this.call(req, () => ops.readlink!(nodeid, req), (t) => this.replyBytes(unique, typeof t === 'string' ? Buffer.from(t) : t, PAGE * 256));
        return;
      case Opcode.OPEN:
      case Opcode.OPENDIR: {
        const dir = opcode === Opcode.OPENDIR;
        const fn = dir ? ops.opendir : ops.open;
        if (!fn) {
          // With NO_OPEN(DIR)_SUPPORT negotiated, ENOSYS makes the kernel stop asking; otherwise open "nothing".
          const zeroMsg = dir ? InitFlag.NO_OPENDIR_SUPPORT : InitFlag.NO_OPEN_SUPPORT;
          if ((this.negotiated?.flags ?? 0) & zeroMsg) break;
          this.replyOpen(unique, undefined);
          return;
        }
        const flags = buf.readUInt32LE(body);
        this.call(req, () => fn.call(ops, nodeid, flags, req), (o) => this.replyOpen(unique, o));
        return;
      }
      case Opcode.READ: {
        if (!ops.read) break;
        const fh = readU64(buf, body);
        const offset = readU64(buf, body + 8);
        const size = buf.readUInt32LE(body + 16);
        this.call(req, () => ops.read!(nodeid, fh, offset, size, req), (data) => this.replyBytes(unique, data, size));
        return;
      }
      case Opcode.RELEASE:
      case Opcode.RELEASEDIR: {
        const fh = readU64(buf, body);
        const fn = opcode === Opcode.RELEASE ? ops.release : ops.releasedir;
        this.call(req, () => fn?.call(ops, nodeid, fh, req), () => this.replyScratch(unique, 0));
        return;
      }
      case Opcode.READDIR:
      case Opcode.READDIRPLUS: {
        const plus = opcode === Opcode.READDIRPLUS;
        const fn = plus ? ops.readdirplus : ops.readdir ?? ops.readdirplus;
        if (!fn) break;
        const fh = readU64(buf, body);
        const offset = readU64(buf, body + 8);
        const size = Math.min(buf.readUInt32LE(body + 16), this.opts.maxRequestBytes);
        const sink = new DirReply(plus, size, this.opts.entryTtl, this.opts.attrTtl);
        this.call(req, () => fn.call(ops, nodeid, fh, offset, sink, req), () => {
          this.header(sink.buf, sink.pos, 0, unique);
          this.write(sink.buf.subarray(0, sink.pos));
        });
        return;
      }
      case Opcode.GETXATTR: {
        if (!ops.getxattr) break;
        const size = buf.readUInt32LE(body);
        const nm = cstr(body + 8);
        this.call(req, () => ops.getxattr!(nodeid, nm, req), (v) => this.replyXattr(unique, typeof v === 'string' ? Buffer.from(v) : v, size));
        return;
      }
      case Opcode.LISTXATTR: {
        if (!ops.listxattr) break;
        const size = buf.readUInt32LE(body);
        this.call(req, () => ops.listxattr!(nodeid, req), (names) => {
          const v = Buffer.from(names.length ? names.join('\0') + '\0' : '');
          this.replyXattr(unique, v, size);
        });
        return;
      }
      case Opcode.ACCESS: {
        if (!ops.access) break;
        const mask = buf.readUInt32LE(body);
        this.call(req, () => ops.access!(nodeid, mask, req), () => this.replyScratch(unique, 0));
        return;
      }
      case Opcode.CREATE: {
        if (!ops.create) break;
        const flags = buf.readUInt32LE(body);
        const mode = buf.readUInt32LE(body + 4);
        const nm = cstr(body + 16);
        this.call(req, () => ops.create!(nodeid, nm, mode, flags, req), (r) => {
          encodeEntry(this.scratch, OUT_HEADER_SIZE, r.entry, this.opts.entryTtl, this.opts.attrTtl);
          this.encodeOpen(OUT_HEADER_SIZE + ENTRY_OUT_SIZE, r.open);
          this.replyScratch(unique, ENTRY_OUT_SIZE + OPEN_OUT_SIZE);
        });
        return;
      }
      case Opcode.RMDIR: {
        if (!ops.rmdir) break;
        const nm = cstr(body);
        this.call(req, () => ops.rmdir!(nodeid, nm, req), () => this.replyScratch(unique, 0));
        return;
      }
      case Opcode.STATFS:
        this.call(req, () => (ops.statfs ? ops.statfs(nodeid, req) : {}), (s) => this.replyStatfs(unique, s));
        return;
      case Opcode.INTERRUPT: {
        this.counters.interrupts++;
        const target = readUnique(buf, body);
        const victim = this.inflight.get(target);
        if (victim) victim.abort(new Errno('EINTR', 'interrupted by the kernel'));
        // Not (yet) in flight: its read may still be queued behind this one. EAGAIN makes the kernel resend the
        // interrupt; if the request has already been answered the kernel drops it (our write gets ENOENT).
        else this.replyError(unique, Errno.EAGAIN.errno);
        return;
      }
      case Opcode.DESTROY:
        this.stopping = true;
        this.replyScratch(unique, 0);
        return;
      case Opcode.NOTIFY_REPLY:
        return; // no reply expected
      default:
        break;
    }
    this.replyError(unique, Errno.ENOSYS.errno);
  }

  private forget(ino: number, nlookup: number): void {
    try {
      const r: unknown = this.ops.forget?.(ino, nlookup);
      // An async forget must not become an unhandled rejection (that would end the process).
      if (isThenable<unknown>(r)) r.then(() => {}, (err) => this.log.error({ err, ino }, 'forget failed'));
    } catch (err) {
      this.log.error({ err, ino }, 'forget failed');
    }
  }

  private replyEntry(req: Request, e: Entry): void {
    encodeEntry(this.scratch, OUT_HEADER_SIZE, e, this.opts.entryTtl, this.opts.attrTtl);
    this.replyScratch(req.unique, ENTRY_OUT_SIZE);
  }

  private encodeOpen(off: number, o: OpenReply | undefined): void {
    writeU64(this.scratch, o?.fh ?? 0, off);
    this.scratch.writeUInt32LE(openFlags(o), off + 8);
    this.scratch.writeInt32LE(o?.backingId ?? 0, off + 12); // backing_id (7.40; padding before)
  }

  private replyOpen(unique: number, o: OpenReply | undefined): void {
    this.encodeOpen(OUT_HEADER_SIZE, o);
    this.replyScratch(unique, OPEN_OUT_SIZE);
  }

  private replyXattr(unique: number, value: Buffer, size: number): void {
    if (size === 0) {
      this.scratch.writeUInt32LE(value.length, OUT_HEADER_SIZE);
      this.scratch.writeUInt32LE(0, OUT_HEADER_SIZE + 4);
      this.replyScratch(unique, GETXATTR_OUT_SIZE);
    } else if (value.length > size) {
      this.replyError(unique, Errno.ERANGE.errno);
    } else {
      this.replyBytes(unique, value, size);
    }
  }

  private replyStatfs(unique: number, s: StatfsReply): void {
    const b = this.scratch;
    const o = OUT_HEADER_SIZE;
    b.fill(0, o, o + STATFS_OUT_SIZE);
    writeU64(b, s.blocks ?? 0, o);
    writeU64(b, s.bfree ?? 0, o + 8);
    writeU64(b, s.bavail ?? 0, o + 16);
    writeU64(b, s.files ?? 0, o + 24);
    writeU64(b, s.ffree ?? 0, o + 32);
    b.writeUInt32LE(s.bsize ?? PAGE, o + 40);
    b.writeUInt32LE(s.namelen ?? 255, o + 44);
    b.writeUInt32LE(s.frsize ?? s.bsize ?? PAGE, o + 48);
    this.replyScratch(unique, STATFS_OUT_SIZE);
  }

  /**
   * The previous server answered INIT but died before its supervisor learned the result. The kernel keeps what was
   * settled; what this session needs of it follows from the same options (a server is restarted with the same).
   */
  private assumeInitialised(): void {
    this.initMaybeDone = false;
    if (this.negotiated) return;
    const ops = this.ops;
    const flags = (ops.open ? 0 : InitFlag.NO_OPEN_SUPPORT) | (ops.opendir ? 0 : InitFlag.NO_OPENDIR_SUPPORT);
    this.negotiated = {
      major: FUSE_KERNEL_VERSION, minor: FUSE_MAX_MINOR, kernelMinor: FUSE_MAX_MINOR, flags, kernelFlags: flags,
      maxReadahead: this.opts.maxReadahead, maxWrite: this.maxWrite, maxPages: this.opts.maxRequestBytes / PAGE, transport: this.transport,
      // As this server would have asked; if the kernel did not grant it, registering a backing file fails (EPERM)
      // and the store serves reads itself.
      passthrough: this.wantPassthrough(),
    };
    this.log.warn({ mountPoint: this.mountPoint }, 'INIT was answered by the previous server: assuming what this server would have settled');
    this.emit('init', this.negotiated);
    this.initWaiter?.resolve();
    this.initWaiter = undefined;
  }

  /** Passthrough is asked for only when it could be used: the options want it and the addon is loaded. */
  private wantPassthrough(): boolean {
    return this.options.passthrough === true && backingIoctls().ok;
  }

  private init(req: Request, body: Buffer): void {
    this.initMaybeDone = false;
    const major = body.readUInt32LE(0);
    const minor = body.readUInt32LE(4);
    const kReadahead = body.readUInt32LE(8);
    const kFlags = body.readUInt32LE(12);
    const kFlags2 = kFlags & InitFlag.INIT_EXT && body.length >= 20 ? body.readUInt32LE(16) : 0;
    const b = this.scratch;
    const o = OUT_HEADER_SIZE;
    b.fill(0, o, o + INIT_OUT_SIZE);
    if (major > FUSE_KERNEL_VERSION) {
      // Tell the kernel our major; it sends a new INIT.
      b.writeUInt32LE(FUSE_KERNEL_VERSION, o);
      b.writeUInt32LE(FUSE_MAX_MINOR, o + 4);
      this.replyScratch(req.unique, INIT_OUT_SIZE);
      return;
    }
    if (major < FUSE_KERNEL_VERSION || minor < FUSE_MIN_MINOR) {
      this.log.error({ major, minor }, `kernel FUSE protocol too old (need ${FUSE_KERNEL_VERSION}.${FUSE_MIN_MINOR})`);
      this.replyError(req.unique, 71 /* EPROTO */);
      this.initWaiter?.reject(new Error(`kernel FUSE protocol ${major}.${minor} is too old`));
      this.initWaiter = undefined;
      return;
    }
    const ops = this.ops;
    // INIT_EXT carries flags2, where HAS_RESEND says a restarted server can get back the requests of a dead one.
    let want = InitFlag.ASYNC_READ | InitFlag.PARALLEL_DIROPS | InitFlag.MAX_PAGES | InitFlag.CACHE_SYMLINKS | InitFlag.INIT_EXT;
    if (ops.readdirplus) {
      want |= InitFlag.DO_READDIRPLUS;
      if ((this.options.readdirplus ?? 'auto') === 'auto') want |= InitFlag.READDIRPLUS_AUTO;
    }
    if (!ops.open) want |= InitFlag.NO_OPEN_SUPPORT;
    if (!ops.opendir) want |= InitFlag.NO_OPENDIR_SUPPORT;
    const flags = (want & kFlags) >>> 0;
    const want2 = INIT_FLAG2_HAS_RESEND | (this.wantPassthrough() ? INIT_FLAG2_PASSTHROUGH : 0);
    const flags2 = flags & InitFlag.INIT_EXT ? (kFlags2 & want2) >>> 0 : 0;
    const passthrough = (flags2 & INIT_FLAG2_PASSTHROUGH) !== 0;
    const ourMinor = Math.min(minor, FUSE_MAX_MINOR);
    const maxReadahead = Math.min(kReadahead, this.opts.maxReadahead);
    const maxPages = this.opts.maxRequestBytes / PAGE;
    b.writeUInt32LE(FUSE_KERNEL_VERSION, o);
    b.writeUInt32LE(ourMinor, o + 4);
    b.writeUInt32LE(maxReadahead, o + 8);
    b.writeUInt32LE(flags, o + 12);
    b.writeUInt16LE(this.opts.maxBackground, o + 16);
    b.writeUInt16LE(Math.max(1, Math.floor((this.opts.maxBackground * 3) / 4)), o + 18);
    b.writeUInt32LE(this.maxWrite, o + 20); // max_write
    b.writeUInt32LE(1, o + 24); // time_gran (ns)
    b.writeUInt16LE(maxPages, o + 28);
    b.writeUInt16LE(0, o + 30); // map_alignment
    b.writeUInt32LE(flags2, o + 32);
    // Without passthrough the word stays 0 (it was unused before 7.40); with it, the depth our backing files allow.
    b.writeUInt32LE(passthrough ? PASSTHROUGH_STACK_DEPTH : 0, o + INIT_OUT_MAX_STACK_DEPTH_OFFSET);
    this.replyScratch(req.unique, INIT_OUT_SIZE);
    this.negotiated = {
      major: FUSE_KERNEL_VERSION, minor: ourMinor, kernelMinor: minor, flags, kernelFlags: kFlags,
      maxReadahead, maxWrite: this.maxWrite, maxPages, transport: this.transport, resend: (flags2 & INIT_FLAG2_HAS_RESEND) !== 0,
      passthrough,
    };
    this.log.info({ ...this.negotiated, mountPoint: this.mountPoint }, 'FUSE session initialised');
    this.emit('init', this.negotiated);
    this.initWaiter?.resolve();
    this.initWaiter = undefined;
  }
}

/** mount(8) arguments for a connection on fd 3 of the mount process. */
function mountArgs(mountPoint: string, o: SessionOptions): string[] {
  const subtype = o.subtype ?? 'tocfs';
  const mopts = [
    'fd=3', 'rootmode=40000', `user_id=${o.uid ?? process.getuid?.() ?? 0}`, `group_id=${o.gid ?? process.getgid?.() ?? 0}`,
  ];
  if (o.allowOther ?? true) mopts.push('allow_other');
  if (o.defaultPermissions ?? true) mopts.push('default_permissions');
  if (o.readOnly) mopts.push('ro');
  mopts.push(...(o.mountOptions ?? []));
  return ['-i', '-t', `fuse.${subtype}`, '-o', mopts.join(','), o.fsname ?? subtype, mountPoint];
}

async function mountFd(mountPoint: string, fd: number, o: SessionOptions): Promise<void> {
  const r = await run('mount', mountArgs(mountPoint, o), fd);
  if (r.code !== 0) throw new Error(`mount of ${mountPoint} failed: ${r.stderr.trim() || `exit ${r.code}`}`);
}

/** The connection's minor number: our mount is the top one of our type at the mountpoint. */
async function mountMinor(mountPoint: string, o: SessionOptions): Promise<number | undefined> {
  const mine = (await findMounts(mountPoint)).filter((m) => m.fsType === `fuse.${o.subtype ?? 'tocfs'}`).pop();
  return mine?.minor;
}

/**
 * Mount a FUSE connection without serving it: for a supervisor that keeps the /dev/fuse fd and hands it to server
 * processes (FuseSession.adopt), so that a server's death does not end the connection. Clears a stale mount first
 * (unless clearStale is false). The fd is the caller's to close.
 */
export async function mountDevice(mountPoint: string, o: SessionOptions = {}): Promise<{ fd: number; devMinor: number | undefined; clearedStale: number }> {
  const path = resolvePath(mountPoint);
  const clearedStale = (o.clearStale ?? true) ? await clearStaleMount(path) : 0;
  const fd = fs.openSync('/dev/fuse', fs.constants.O_RDWR);
  try {
    await mountFd(path, fd, o);
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
  return { fd, devMinor: await mountMinor(path, o), clearedStale };
}
