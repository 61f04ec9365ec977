// The store's node ids, written down as they are handed out, so that a server started on the same FUSE connection
// (after the previous one died) answers every node id the kernel still holds. Tree node ids need no record: they
// are (slot + 1) · 2^32 + node and a tree's node numbers follow from its TOC; what the journal keeps is which
// slot and which small ids each ref directory and layer directory got.
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import type { RecordedLayer } from './resolver.js';

export type NamespaceRecord =
  /** Written first: the mount's start time (the mtime of the store's own directories). */
  | { t: 'start'; started: number }
  /** A `<base64 ref>` directory (`name` is the directory name). */
  | { t: 'ref'; name: string; ino: number }
  /** A `<key>` directory of ref directory `ref` (its name) and the ids of its children. */
  | {
    t: 'layer'; ref: string; key: string; slot: number; ino: number; info: number; blob: number; toc: number;
    /** How to open the layer again without the registry (Resolver.reopen). */
    layer?: RecordedLayer;
  }
  /**
   * Node `ino`'s opens are served by passthrough from backing file `id` (registered with the kernel): a server taking
   * over must answer every open of that node with the same id while the kernel may still have one open.
   */
  | { t: 'backing'; ino: number; id: number }
  /** Node `ino`'s backing file was unregistered (its last passthrough open was released). */
  | { t: 'unbacking'; ino: number };

/**
 * An append-only file of NamespaceRecords, one JSON line each, written synchronously before the reply that hands
 * the id to the kernel: a server killed right after replying has already recorded it. Only process death is
 * survived (a machine crash ends the mount too), so there is no fsync.
 */
export class NamespaceJournal {
  private fd: number;

  private constructor(readonly path: string, readonly records: NamespaceRecord[], fd: number) {
    this.fd = fd;
  }

  /** A new mount: earlier records describe a connection that is gone. */
  static fresh(path: string, started: number): NamespaceJournal {
    const fd = openSync(path, 'w', 0o600);
    const j = new NamespaceJournal(path, [], fd);
    j.append({ t: 'start', started });
    return j;
  }

  /**
   * The records of the connection this server takes over. A torn last line (the writer died inside write(2)) is
   * dropped: its reply never went out, so the kernel never got that id.
   */
  static resume(path: string): NamespaceJournal {
    let text = '';
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const records: NamespaceRecord[] = [];
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        const r = JSON.parse(line) as NamespaceRecord;
        if (isRecord(r)) records.push(r);
      } catch {
        // torn line
      }
    }
    const fd = openSync(path, 'a', 0o600);
    // A torn line ends without a newline: start the next record on a line of its own.
    if (text && !text.endsWith('\n')) writeSync(fd, '\n');
    return new NamespaceJournal(path, records, fd);
  }

  append(r: NamespaceRecord): void {
    writeSync(this.fd, `${JSON.stringify(r)}\n`);
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}

function isRecord(r: unknown): r is NamespaceRecord {
  if (typeof r !== 'object' || r === null) return false;
  const o = r as Record<string, unknown>;
  const id = (v: unknown) => Number.isSafeInteger(v) && (v as number) > 0;
  switch (o.t) {
    case 'start': return typeof o.started === 'number';
    case 'ref': return typeof o.name === 'string' && id(o.ino);
    case 'layer':
      return typeof o.ref === 'string' && typeof o.key === 'string' && Number.isSafeInteger(o.slot) && (o.slot as number) >= 0
        && id(o.ino) && id(o.info) && id(o.blob) && id(o.toc) && (o.layer === undefined || isRecordedLayer(o.layer));
    case 'backing': return id(o.ino) && id(o.id);
    case 'unbacking': return id(o.ino);
    default: return false;
  }
}

function isRecordedLayer(v: unknown): v is RecordedLayer {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as Record<string, unknown>;
  const d = o.descriptor as Record<string, unknown> | undefined;
  return typeof d === 'object' && d !== null && typeof d.digest === 'string' && typeof d.mediaType === 'string'
    && Number.isSafeInteger(d.size) && typeof o.diffID === 'string' && typeof o.sentinel === 'boolean'
    && (o.generation === 'blob' || o.generation === 'toc');
}
