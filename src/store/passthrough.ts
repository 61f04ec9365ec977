// FUSE passthrough for layer files that are complete on local disk: their opens name a backing file (an assembled
// copy, layer/assembled.ts) and the kernel reads it directly, with no READ request reaching us.
//
// The kernel allows an inode to be open either through passthrough or through the page cache, never both at once:
// an open answered the other way than one still open fails with EIO. So every open and release of a regular file
// is counted here per node: passthrough is granted only while no page-cache open of the node is counted, and while
// one passthrough open lasts every further open of the node gets the same backing id. Our counts are never below
// the kernel's (it drops an open before it sends its RELEASE), so a wrong guess can only be "page cache".
import { closeSync, openSync } from 'node:fs';
import type { BackingFiles, OpenReply } from '../fuse/index.js';
import type { AssembledFiles, LayerTree } from '../layer/index.js';
import type { NamespaceJournal } from './namespace.js';

/** fh of an open served through the page cache (0, as every open of servers before passthrough). */
const FH_CACHED = 0;
/** fh of an open served by passthrough. */
const FH_PASSTHROUGH = 1;

/** Errors of FUSE_DEV_IOC_BACKING_OPEN that will not go away: passthrough is then off for this server. */
const PERMANENT = new Set(['EPERM', 'ELOOP', 'EINVAL', 'ENOTTY', 'EOPNOTSUPP', 'ENOSYS']);

export interface PassthroughLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/** A regular file worth a checked complete copy, served by passthrough once it is ready (and `grant`). */
export interface PassthroughCandidate {
  tree: LayerTree;
  node: number;
  /** It may be served by passthrough now (else its copy is only prepared: a DiffID proof is still pending). */
  grant: boolean;
  /** Names the file in log lines. */
  where: () => string;
}

export interface PassthroughStats {
  /** Opens answered with a backing file since start. */
  opens: number;
  /** Backing files registered with the kernel now (one per node with passthrough opens). */
  active: number;
}

interface NodeOpens {
  cached: number;
  passthrough: number;
  /** The backing id every open of this node gets while it has passthrough opens. */
  id?: number;
  /**
   * Registered by an earlier server of this connection (namespace journal): the kernel may still use it, its opens
   * were never counted here, so it is used for every open of the node and never closed (the mount's end frees it).
   */
  inherited?: boolean;
}

export interface PassthroughDeps {
  /** The connection's backing files while passthrough is on (FuseSession.backing); undefined when off. */
  backing: () => BackingFiles | undefined;
  assembled: AssembledFiles;
  journal?: NamespaceJournal;
  logger?: PassthroughLogger;
}

export class Passthrough {
  readonly stats: PassthroughStats = { opens: 0, active: 0 };
  private readonly nodes = new Map<number, NodeOpens>();
  /** Why registering backing files stopped working (EPERM without CAP_SYS_ADMIN, ELOOP on a stacked filesystem). */
  private broken: string | undefined;

  constructor(private readonly deps: PassthroughDeps, inherited: ReadonlyMap<number, number> = new Map()) {
    for (const [ino, id] of inherited) this.nodes.set(ino, { cached: 0, passthrough: 0, id, inherited: true });
  }

  /** Whether opens of node `ino` are served by passthrough now. */
  registered(ino: number): boolean {
    return this.nodes.get(ino)?.id !== undefined;
  }

  /** Why passthrough is off although the connection has it, if it is. */
  get failure(): string | undefined {
    return this.broken;
  }

  /**
   * Answer an open of node `ino` (a regular file). `file` is set when the file is worth a complete copy (big enough,
   * of a layer this server resolved); `readOnly` for O_RDONLY opens.
   */
  open(ino: number, file: PassthroughCandidate | undefined, readOnly: boolean): OpenReply {
    let o = this.nodes.get(ino);
    if (o?.id !== undefined) {
      o.passthrough++;
      this.stats.opens++;
      return { fh: FH_PASSTHROUGH, backingId: o.id };
    }
    if (file?.grant && readOnly && (o?.cached ?? 0) === 0) {
      const id = this.register(ino, file);
      if (id !== undefined) {
        this.nodes.set(ino, { cached: 0, passthrough: 1, id });
        this.stats.opens++;
        return { fh: FH_PASSTHROUGH, backingId: id };
      }
    }
    if (!o) this.nodes.set(ino, (o = { cached: 0, passthrough: 0 }));
    o.cached++;
    if (file) this.prepare(file);
    // Everything here is immutable: let the page cache keep it across opens.
    return { fh: FH_CACHED, keepCache: true };
  }

  /** A RELEASE of an open answered by `open` (or by an earlier server: then it is not counted here). */
  release(ino: number, fh: number, file: PassthroughCandidate | undefined): void {
    const o = this.nodes.get(ino);
    if (!o) return;
    if (fh === FH_PASSTHROUGH) {
      o.passthrough = Math.max(0, o.passthrough - 1);
      if (o.passthrough === 0 && o.id !== undefined && !o.inherited) this.unregister(ino, o.id);
      if (o.passthrough === 0 && !o.inherited) o.id = undefined;
    } else {
      o.cached = Math.max(0, o.cached - 1);
      // The last page-cache open is gone: the next open may use passthrough, if a copy is ready by then.
      if (o.cached === 0 && file) this.prepare(file);
    }
    if (o.cached === 0 && o.passthrough === 0 && o.id === undefined) this.nodes.delete(ino);
  }

  /** Ask for a checked complete copy of `file`, while passthrough is usable. */
  private prepare(file: PassthroughCandidate): void {
    if (this.broken === undefined && this.deps.backing()) this.deps.assembled.request(file.tree, file.node, file.where);
  }

  /** Register the file's checked copy as a backing file; undefined when there is none or the kernel refuses. */
  private register(ino: number, file: PassthroughCandidate): number | undefined {
    const backing = this.broken === undefined ? this.deps.backing() : undefined;
    if (!backing) return undefined;
    const path = this.deps.assembled.path(file.tree, file.node);
    if (!path) return undefined;
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch {
      return undefined; // evicted meanwhile: served as usual, assembled again later
    }
    try {
      const id = backing.open(fd);
      // Written before the reply hands the id to the kernel: a server taking over after us must keep answering it.
      this.deps.journal?.append({ t: 'backing', ino, id });
      this.stats.active++;
      return id;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (!PERMANENT.has(e.code ?? '')) {
        // Out of fds or memory: this open is served as usual, a later one tries again.
        this.deps.logger?.warn({ path, code: e.code, err: e.message }, `passthrough: registering ${path} as a backing file failed (${e.code ?? e.message}); served as usual`);
        return undefined;
      }
      this.broken = `registering ${path} as a backing file failed with ${e.code ?? e.message}`
        + (e.code === 'EPERM' ? ' (it needs CAP_SYS_ADMIN in the initial user namespace: root, not rootless)'
          : e.code === 'ELOOP' ? ' (the state directory is on a stacked filesystem such as overlayfs: put it on a plain one)' : '');
      this.deps.logger?.warn({ path, code: e.code, err: e.message }, `passthrough off: ${this.broken}; reads are served as usual`);
      return undefined;
    } finally {
      closeSync(fd);
    }
  }

  private unregister(ino: number, id: number): void {
    this.stats.active--;
    try {
      this.deps.backing()?.close(id);
    } catch (err) {
      // ENOENT: already gone (the connection is ending). Nothing else to do: the kernel frees it with the mount.
      this.deps.logger?.warn({ ino, id, err: (err as Error).message }, 'passthrough: closing a backing file failed');
    }
    this.deps.journal?.append({ t: 'unbacking', ino });
  }
}
