// The contract between the FUSE layer and a filesystem: inode-based operations, their arguments and results.

/** Who asked, and a signal that fires when the kernel interrupts the request or the session closes. */
export interface RequestContext {
  readonly uid: number;
  readonly gid: number;
  readonly pid: number;
  /** Fires on FUSE_INTERRUPT for this request (e.g. the caller got SIGKILL) and when the session closes. */
  readonly signal: AbortSignal;
  /** The kernel's id of this request (for logs). */
  readonly unique: number;
}

/**
 * Attributes of an inode. `mode` includes the file type bits (S_IFREG | 0o644 ...). Times are seconds since the
 * epoch (the fractional part is used when no *Nsec is given). `rdev` is the kernel encoding (see `makedev`).
 */
export interface Attr {
  ino: number;
  mode: number;
  nlink?: number;
  uid?: number;
  gid?: number;
  rdev?: number;
  size?: number;
  /** 512-byte blocks; defaults to ceil(size / 512). */
  blocks?: number;
  blksize?: number;
  atime?: number;
  mtime?: number;
  ctime?: number;
  atimeNsec?: number;
  mtimeNsec?: number;
  ctimeNsec?: number;
}

/**
 * A directory entry found by lookup (and by READDIRPLUS). The node id given to the kernel is `attr.ino`; every
 * Entry returned from `lookup`/`create` (and added to a READDIRPLUS sink, except "." and "..") is one lookup the
 * kernel will later give back with `forget`. TTLs are seconds (fractions allowed); omitted ones use the
 * session defaults.
 */
export interface Entry {
  attr: Attr;
  generation?: number;
  entryTtl?: number;
  attrTtl?: number;
}

export interface AttrReply {
  attr: Attr;
  attrTtl?: number;
}

/** What an open/opendir/create answers: a handle of the filesystem's choosing and cache policy. */
export interface OpenReply {
  fh?: number;
  /** Keep the page cache of this file across opens (immutable content). */
  keepCache?: boolean;
  /** Bypass the page cache: every read() becomes a READ request of the caller's size. */
  directIo?: boolean;
  /** opendir: let the kernel cache the directory listing. */
  cacheDir?: boolean;
  nonSeekable?: boolean;
  noFlush?: boolean;
  /**
   * FUSE passthrough: the kernel serves reads (and mmap) of this open file from the backing file registered under
   * this id (FuseSession.backing), without a READ request. Only when Negotiated.passthrough; keepCache and cacheDir
   * are then dropped (the kernel refuses them beside passthrough). Every open of an inode must agree while one
   * such open lasts: all with the same id, or none.
   */
  backingId?: number;
}

/** Backing files of FUSE passthrough on this connection (see FuseSession.backing). */
export interface BackingFiles {
  /** Register an open regular file (the kernel keeps its own reference: the fd may be closed after). Throws with .code. */
  open(fd: number): number;
  /** Drop a registration; open files that use it keep working. */
  close(id: number): void;
}

export interface StatfsReply {
  blocks?: number;
  bfree?: number;
  bavail?: number;
  files?: number;
  ffree?: number;
  bsize?: number;
  namelen?: number;
  frsize?: number;
}

/**
 * Where readdir/readdirplus put their entries. `add` encodes one entry into the reply and returns false (adding
 * nothing) when it does not fit: stop there, and resume from that entry's offset on the next call.
 * `nextOffset` is the cookie of the entry *after* this one (the kernel passes it back as `offset`); it must be
 * > 0 and strictly increasing through the directory.
 */
export interface DirSink {
  /** True for READDIRPLUS: `entry` is used and each added entry except "." and ".." counts one lookup. */
  readonly plus: boolean;
  /**
   * @param name entry name (no '/', not empty)
   * @param nextOffset cookie of the next entry
   * @param ino inode number shown in d_ino
   * @param mode file type (S_IFMT bits of a mode; permission bits ignored)
   * @param entry READDIRPLUS only: attributes and TTLs, as lookup would answer (omit: the kernel looks it up)
   */
  add(name: string, nextOffset: number, ino: number, mode: number, entry?: Entry): boolean;
}

/**
 * The filesystem. Every method may return a value or a Promise; throw `Errno` to answer an error. Methods left
 * out answer ENOSYS (open/opendir/release/releasedir/statfs/forget have sensible defaults instead).
 * Node ids are safe integers; the root is 1.
 */
export interface Operations {
  lookup(parent: number, name: string, ctx: RequestContext): Entry | Promise<Entry>;
  forget?(ino: number, nlookup: number): void;
  getattr(ino: number, ctx: RequestContext, fh?: number): AttrReply | Promise<AttrReply>;
  readlink?(ino: number, ctx: RequestContext): string | Buffer | Promise<string | Buffer>;
  open?(ino: number, flags: number, ctx: RequestContext): OpenReply | Promise<OpenReply>;
  /** Return at most `size` bytes (fewer only at end of file). Buffers are written to the kernel without copying. */
  read?(ino: number, fh: number, offset: number, size: number, ctx: RequestContext): Buffer | Buffer[] | Promise<Buffer | Buffer[]>;
  release?(ino: number, fh: number, ctx: RequestContext): void | Promise<void>;
  opendir?(ino: number, flags: number, ctx: RequestContext): OpenReply | Promise<OpenReply>;
  /** Plain READDIR (sink.plus is false). When absent, readdirplus serves it with a plain sink. */
  readdir?(ino: number, fh: number, offset: number, sink: DirSink, ctx: RequestContext): void | Promise<void>;
  /** READDIRPLUS. When present the session negotiates DO_READDIRPLUS and READDIRPLUS_AUTO. */
  readdirplus?(ino: number, fh: number, offset: number, sink: DirSink, ctx: RequestContext): void | Promise<void>;
  releasedir?(ino: number, fh: number, ctx: RequestContext): void | Promise<void>;
  /** The whole value; the layer answers size probes and ERANGE itself. Throw ENODATA when absent. */
  getxattr?(ino: number, name: string, ctx: RequestContext): Buffer | string | Promise<Buffer | string>;
  /** All names; the layer encodes them and answers size probes and ERANGE. */
  listxattr?(ino: number, ctx: RequestContext): string[] | Promise<string[]>;
  access?(ino: number, mask: number, ctx: RequestContext): void | Promise<void>;
  create?(parent: number, name: string, mode: number, flags: number, ctx: RequestContext): { entry: Entry; open: OpenReply } | Promise<{ entry: Entry; open: OpenReply }>;
  rmdir?(parent: number, name: string, ctx: RequestContext): void | Promise<void>;
  statfs?(ino: number, ctx: RequestContext): StatfsReply | Promise<StatfsReply>;
  /** The connection is going away (DESTROY, or the session closing). */
  destroy?(): void | Promise<void>;
}

/** pino-compatible subset; the layer never depends on a logging library. */
export interface FuseLogger {
  error(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  debug?(obj: object, msg: string): void;
}

/** What INIT settled on. */
export interface Negotiated {
  major: number;
  minor: number;
  kernelMinor: number;
  flags: number;
  kernelFlags: number;
  maxReadahead: number;
  maxWrite: number;
  maxPages: number;
  transport: 'epoll' | 'pool';
  /** The kernel can resend requests a dead server had read (FUSE_HAS_RESEND, Linux 6.9). */
  resend?: boolean;
  /** FUSE passthrough was granted (FUSE_PASSTHROUGH, Linux 6.9; max_stack_depth 1). */
  passthrough?: boolean;
}
