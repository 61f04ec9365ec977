// A small in-memory filesystem implementing the FUSE layer's Operations, for tests and the benchmark.
// Files can carry test behaviours: a read delay, reads that block until interrupted, reads that throw.
import { constants } from 'node:fs';
import { Errno, type Attr, type DirSink, type Entry, type OpenReply, type Operations, type RequestContext } from '../../src/fuse/index.js';

const { S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR, S_IFMT } = constants;

/** File content: bytes, or a pattern repeated to `size` (large files without storing them). */
export type Content = Buffer | { size: number; pattern: Buffer };

export interface FileBehaviour {
  /** Every read waits until this many reads are in flight at once (or 5 s pass). */
  gather?: number;
  /** Every read waits this long (aborted by the request's signal). */
  delayMs?: number;
  /** Reads never complete until the request is interrupted. */
  blockUntilAbort?: boolean;
  /** Reads throw a plain Error (a bug in the filesystem: the layer answers EIO). */
  throwBug?: boolean;
  directIo?: boolean;
  keepCache?: boolean;
}

export interface MemNode {
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  rdev: number;
  nlink: number;
  mtime: number;
  content?: Content;
  target?: string;
  names?: string[];
  children?: Map<string, MemNode>;
  parent?: MemNode;
  xattrs: Map<string, Buffer>;
  behaviour?: FileBehaviour;
  path: string;
}

export interface MemFsEvent {
  type: 'read-start' | 'aborted' | 'create' | 'rmdir' | 'access';
  path: string;
}

export class MemFs implements Operations {
  readonly nodes = new Map<number, MemNode>();
  readonly root: MemNode;
  /** Outstanding kernel lookups per inode (READDIRPLUS and LOOKUP add, FORGET subtracts). */
  readonly lookups = new Map<number, number>();
  readonly stats = { reads: 0, maxReadSize: 0, concurrentReads: 0, maxConcurrentReads: 0, forgets: 0, readdirCalls: 0 };
  onEvent: ((e: MemFsEvent) => void) | undefined;
  entryTtl = 60;
  attrTtl = 60;
  /**
   * What getxattr answers for a name in a namespace (security., system., trusted., user.) that no node carries:
   * ENODATA (like tmpfs) or EOPNOTSUPP — then coreutils' ls stops asking for security.selinux and ACLs on the
   * whole device after the first answer, instead of two GETXATTR round trips per entry of `ls -l`.
   */
  xattrPolicy: 'enodata' | 'eopnotsupp' = 'enodata';
  private readonly namespaces = new Set<string>();
  private nextIno = 2;
  private readonly mtime = 1_700_000_000;

  constructor() {
    this.root = this.newNode(S_IFDIR | 0o755, '/');
    this.root.ino = 1;
    this.nodes.delete(2);
    this.nextIno = 2;
    this.nodes.set(1, this.root);
    this.root.names = [];
    this.root.children = new Map();
    this.root.nlink = 2;
  }

  private newNode(mode: number, path: string): MemNode {
    const n: MemNode = { ino: this.nextIno++, mode, uid: 0, gid: 0, rdev: 0, nlink: 1, mtime: this.mtime, xattrs: new Map(), path };
    this.nodes.set(n.ino, n);
    return n;
  }

  private resolve(path: string): MemNode {
    let n = this.root;
    for (const part of path.split('/').filter(Boolean)) {
      const c = n.children?.get(part);
      if (!c) throw new Error(`memfs: no ${path}`);
      n = c;
    }
    return n;
  }

  private attach(path: string, node: MemNode): MemNode {
    const i = path.lastIndexOf('/');
    const parent = this.resolve(path.slice(0, i));
    const name = path.slice(i + 1);
    if (!parent.children || parent.children.has(name)) throw new Error(`memfs: cannot add ${path}`);
    parent.children.set(name, node);
    parent.names!.push(name);
    if ((node.mode & S_IFMT) === S_IFDIR) {
      node.parent = parent;
      parent.nlink++;
    }
    return node;
  }

  mkdir(path: string, mode = 0o755): MemNode {
    const n = this.newNode(S_IFDIR | mode, path);
    n.names = [];
    n.children = new Map();
    n.nlink = 2;
    return this.attach(path, n);
  }

  writeFile(path: string, content: Content | string, behaviour?: FileBehaviour, mode = 0o644): MemNode {
    const n = this.newNode(S_IFREG | mode, path);
    n.content = typeof content === 'string' ? Buffer.from(content) : content;
    n.behaviour = behaviour;
    return this.attach(path, n);
  }

  symlink(path: string, target: string): MemNode {
    const n = this.newNode(S_IFLNK | 0o777, path);
    n.target = target;
    return this.attach(path, n);
  }

  mknod(path: string, mode: number, rdev: number): MemNode {
    const n = this.newNode(mode, path);
    n.rdev = rdev;
    return this.attach(path, n);
  }

  /** A character device 0:0: what overlayfs takes for a whiteout. */
  whiteout(path: string): MemNode {
    return this.mknod(path, S_IFCHR | 0o000, 0);
  }

  link(existing: string, path: string): MemNode {
    const n = this.resolve(existing);
    n.nlink++;
    return this.attach(path, n);
  }

  /** Change a file's bytes in place (same inode). */
  replaceContent(path: string, content: Buffer | string): MemNode {
    const n = this.resolve(path);
    n.content = typeof content === 'string' ? Buffer.from(content) : content;
    return n;
  }

  /** Put a new inode under an existing name (the old inode lives on until forgotten). */
  relink(path: string, content: Buffer | string): MemNode {
    const i = path.lastIndexOf('/');
    const parent = this.resolve(path.slice(0, i));
    const name = path.slice(i + 1);
    const n = this.newNode(S_IFREG | 0o644, path);
    n.content = typeof content === 'string' ? Buffer.from(content) : content;
    parent.children!.set(name, n);
    return n;
  }

  /** The inode at `path` (for notifications). */
  inoOf(path: string): number {
    return this.resolve(path).ino;
  }

  setxattr(path: string, name: string, value: Buffer | string): void {
    this.namespaces.add(name.slice(0, name.indexOf('.') + 1));
    this.resolve(path).xattrs.set(name, typeof value === 'string' ? Buffer.from(value) : value);
  }

  sizeOf(n: MemNode): number {
    if (n.content) return Buffer.isBuffer(n.content) ? n.content.length : n.content.size;
    if (n.target !== undefined) return Buffer.byteLength(n.target);
    if (n.names) return 4096;
    return 0;
  }

  attr(n: MemNode): Attr {
    return {
      ino: n.ino, mode: n.mode, nlink: n.nlink, uid: n.uid, gid: n.gid, rdev: n.rdev, size: this.sizeOf(n),
      atime: n.mtime, mtime: n.mtime, ctime: n.mtime,
    };
  }

  private node(ino: number): MemNode {
    const n = this.nodes.get(ino);
    if (!n) throw Errno.ENOENT;
    return n;
  }

  private entry(n: MemNode): Entry {
    return { attr: this.attr(n), entryTtl: this.entryTtl, attrTtl: this.attrTtl };
  }

  private countLookup(ino: number): void {
    this.lookups.set(ino, (this.lookups.get(ino) ?? 0) + 1);
  }

  /** Sum of outstanding lookups (the kernel's references), root excluded. */
  outstandingLookups(): number {
    let sum = 0;
    for (const [ino, c] of this.lookups) if (ino !== 1) sum += c;
    return sum;
  }

  // ---- Operations ----

  lookup(parent: number, name: string): Entry {
    const c = this.node(parent).children?.get(name);
    if (!c) throw Errno.ENOENT;
    this.countLookup(c.ino);
    return this.entry(c);
  }

  forget(ino: number, nlookup: number): void {
    this.stats.forgets++;
    const left = (this.lookups.get(ino) ?? 0) - nlookup;
    if (left > 0) this.lookups.set(ino, left);
    else this.lookups.delete(ino);
  }

  getattr(ino: number): { attr: Attr; attrTtl: number } {
    return { attr: this.attr(this.node(ino)), attrTtl: this.attrTtl };
  }

  readlink(ino: number): string {
    const n = this.node(ino);
    if (n.target === undefined) throw Errno.EINVAL;
    return n.target;
  }

  open(ino: number): OpenReply {
    const n = this.node(ino);
    return { keepCache: n.behaviour?.keepCache ?? true, directIo: n.behaviour?.directIo ?? false };
  }

  async read(ino: number, _fh: number, offset: number, size: number, ctx: RequestContext): Promise<Buffer | Buffer[]> {
    const n = this.node(ino);
    const st = this.stats;
    st.reads++;
    if (size > st.maxReadSize) st.maxReadSize = size;
    st.concurrentReads++;
    if (st.concurrentReads > st.maxConcurrentReads) st.maxConcurrentReads = st.concurrentReads;
    try {
      const b = n.behaviour;
      if (b?.gather) await this.gather(b.gather);
      if (b?.blockUntilAbort || b?.delayMs) {
        this.onEvent?.({ type: 'read-start', path: n.path });
        await new Promise<void>((resolve, reject) => {
          const onAbort = (): void => {
            clearTimeout(timer);
            this.onEvent?.({ type: 'aborted', path: n.path });
            reject(Errno.EINTR);
          };
          const timer = b.blockUntilAbort ? undefined : setTimeout(() => {
            ctx.signal.removeEventListener('abort', onAbort);
            resolve();
          }, b.delayMs);
          if (ctx.signal.aborted) onAbort();
          else ctx.signal.addEventListener('abort', onAbort, { once: true });
        });
      }
      if (b?.throwBug) throw new Error('memfs: deliberate bug');
      return this.slice(n, offset, size);
    } finally {
      st.concurrentReads--;
    }
  }

  private readonly gathering: (() => void)[] = [];
  private gathered = false;

  /**
   * Hold a read until `n` reads are in flight at once (or 5 s pass): proves the layer dispatches requests
   * concurrently, whatever the machine's load does to how fast the readers start.
   */
  private gather(n: number): Promise<void> {
    if (this.gathered || this.stats.concurrentReads >= n) {
      // Reached once: that is the proof; later readers go straight through.
      this.gathered = true;
      for (const release of this.gathering.splice(0)) release();
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        const i = this.gathering.indexOf(done);
        if (i >= 0) this.gathering.splice(i, 1);
        resolve();
      }, 5000);
      const done = (): void => { clearTimeout(timer); resolve(); };
      this.gathering.push(done);
    });
  }

  /** Bytes [offset, offset+size) of a file, as views into its storage (no copy). */
  slice(n: MemNode, offset: number, size: number): Buffer | Buffer[] {
    const c = n.content;
    if (!c) throw Errno.EISDIR;
    if (Buffer.isBuffer(c)) return c.subarray(offset, offset + size);
    const end = Math.min(c.size, offset + size);
    const out: Buffer[] = [];
    const p = c.pattern;
    for (let pos = offset; pos < end;) {
      const at = pos % p.length;
      const len = Math.min(p.length - at, end - pos);
      out.push(p.subarray(at, at + len));
      pos += len;
    }
    return out;
  }

  opendir(ino: number): OpenReply {
    this.node(ino);
    return { cacheDir: true, keepCache: true };
  }

  readdirplus(ino: number, _fh: number, offset: number, sink: DirSink): void {
    this.stats.readdirCalls++;
    const n = this.node(ino);
    const names = n.names;
    if (!names) throw Errno.ENOTDIR;
    const total = names.length + 2;
    for (let i = offset; i < total; i++) {
      let name: string;
      let c: MemNode;
      if (i === 0) {
        name = '.';
        c = n;
      } else if (i === 1) {
        name = '..';
        c = n.parent ?? n;
      } else {
        name = names[i - 2]!;
        c = n.children!.get(name)!;
      }
      if (!sink.add(name, i + 1, c.ino, c.mode, sink.plus ? this.entry(c) : undefined)) return;
      if (sink.plus && i >= 2) this.countLookup(c.ino);
    }
  }

  getxattr(ino: number, name: string): Buffer {
    const v = this.node(ino).xattrs.get(name);
    if (v) return v;
    if (this.xattrPolicy === 'eopnotsupp' && !this.namespaces.has(name.slice(0, name.indexOf('.') + 1))) throw Errno.EOPNOTSUPP;
    throw Errno.ENODATA;
  }

  listxattr(ino: number): string[] {
    return [...this.node(ino).xattrs.keys()];
  }

  access(ino: number): void {
    this.onEvent?.({ type: 'access', path: this.node(ino).path });
  }

  create(parent: number, name: string): never {
    this.onEvent?.({ type: 'create', path: `${this.node(parent).path}/${name}` });
    throw Errno.ENOENT;
  }

  rmdir(parent: number, name: string): never {
    this.onEvent?.({ type: 'rmdir', path: `${this.node(parent).path}/${name}` });
    throw Errno.ENOENT;
  }

  statfs(): { blocks: number; bfree: number; bavail: number; files: number; ffree: number; bsize: number; namelen: number } {
    return { blocks: 1000, bfree: 0, bavail: 0, files: this.nodes.size, ffree: 0, bsize: 4096, namelen: 255 };
  }
}
