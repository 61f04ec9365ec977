/**
 * A small tar WRITER for tests: builds layer tars in memory with exactly the header encodings we want to
 * exercise (ustar, PAX `x` records, GNU `L`/`K` long names, base-256 numbers) and, on request, deliberately odd
 * tars (PAX global headers, GNU sparse entries, trailing bytes, missing end blocks, bad checksums).
 *
 * Typical use:
 *
 *   const tar = new TarBuilder()
 *     .dir('etc/')
 *     .file('etc/hosts', '127.0.0.1 localhost\n', { mode: 0o644, mtime: { sec: 1700000000, nsec: 5 } })
 *     .symlink('lib', 'usr/lib')
 *     .hardlink('etc/hosts.bak', 'etc/hosts')
 *     .charDevice('dev/null', 1, 3)
 *     .whiteout('var/removed')          // var/.wh.removed
 *     .opaque('var/cache')              // var/cache/.wh..wh..opq
 *     .build();                         // Buffer: the tar, with two end blocks
 *
 * `builder.entries` lists what was added (resolved name, type, metadata, content) so tests can compare what a
 * reader reports with what was written. Nothing here depends on src/: it is an independent second opinion on
 * the tar format.
 */

export const BLOCK = 512;

/** Seconds and nanoseconds since the Unix epoch. A plain number means whole seconds. */
export interface TarTimeSpec {
  sec: number;
  nsec: number;
}

export type EntryKind = 'file' | 'hardlink' | 'symlink' | 'char' | 'block' | 'dir' | 'fifo';

/** How names and link targets that do not fit the 100-byte ustar fields are stored. */
export type LongNameStyle = 'pax' | 'gnu' | 'ustar-prefix';

/** Per-entry header fields and encodings; everything is optional (defaults: mode 0644, ids 0, mtime 1700000000). */
export interface EntryOptions {
  mode?: number;
  uid?: number;
  gid?: number;
  uname?: string;
  gname?: string;
  /** Modification time; a fraction (nsec > 0) or a value beyond the octal field is written as a PAX record. */
  mtime?: number | TarTimeSpec;
  /** Written as PAX `atime` / `ctime` records. */
  atime?: number | TarTimeSpec;
  ctime?: number | TarTimeSpec;
  /** Extended attributes: written as PAX `SCHILY.xattr.<name>` records (values are raw bytes). */
  xattrs?: Record<string, Uint8Array | string>;
  /** Extra PAX records, written verbatim (after the ones the builder derives). */
  pax?: Record<string, Uint8Array | string>;
  /** Overrides the builder's long-name style for this entry. */
  longNames?: LongNameStyle;
  /** Force a PAX `path` record even when the name fits the header. */
  forcePaxPath?: boolean;
  /** Raw typeflag to put in the header instead of the one the kind implies (e.g. '\0' or '7'). */
  typeflag?: string;
  /** Size field to write instead of the content length (payload bytes still follow the real content). */
  headerSize?: number;
  /** Corrupt the header checksum. */
  badChecksum?: boolean;
}

/** One entry as written: what a correct reader must report for it. */
export interface BuiltEntry {
  kind: EntryKind;
  /** The full name as stored (after PAX/GNU/prefix reassembly). */
  name: string;
  typeflag: string;
  linkName: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: TarTimeSpec;
  atime?: TarTimeSpec;
  ctime?: TarTimeSpec;
  devMajor: number;
  devMinor: number;
  xattrs: Map<string, Buffer>;
  /** File content (empty for everything but regular files). */
  content: Buffer;
}

const DEFAULT_MTIME: TarTimeSpec = { sec: 1700000000, nsec: 0 };

function toTime(t: number | TarTimeSpec | undefined, dflt: TarTimeSpec): TarTimeSpec {
  if (t === undefined) return dflt;
  return typeof t === 'number' ? { sec: t, nsec: 0 } : t;
}

function bytes(v: Uint8Array | string): Buffer {
  return typeof v === 'string' ? Buffer.from(v, 'utf8') : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

/** Zero padding that brings `n` bytes up to a whole number of 512-byte blocks. */
export function padding(n: number): Buffer {
  return Buffer.alloc((BLOCK - (n % BLOCK)) % BLOCK);
}

/** "%d %s=%s\n" with the length counting itself, as POSIX pax requires. */
export function paxRecord(key: string, value: Uint8Array | string): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`, 'utf8'), bytes(value), Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

/** Seconds and fraction as PAX writes a time ("1700000000.123456789", negative times as "-1.5"). */
export function paxTime(t: TarTimeSpec): string {
  if (t.nsec === 0) return String(t.sec);
  if (t.sec < 0) {
    // {sec:-2, nsec:5e8} is -1.5 s.
    const total = -(t.sec + 1);
    return `-${total}.${String(1e9 - t.nsec).padStart(9, '0')}`;
  }
  return `${t.sec}.${String(t.nsec).padStart(9, '0')}`;
}

/** Fields of one raw 512-byte header block. Strings longer than their field are truncated. */
export interface HeaderFields {
  name: Uint8Array | string;
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number;
  mtime?: number;
  typeflag: string;
  linkname?: Uint8Array | string;
  /** 'ustar' = POSIX "ustar\000"; 'gnu' = "ustar  \0"; 'v7' = no magic. */
  magic?: 'ustar' | 'gnu' | 'v7';
  uname?: string;
  gname?: string;
  devmajor?: number;
  devminor?: number;
  prefix?: Uint8Array | string;
  badChecksum?: boolean;
}

function putString(blk: Buffer, at: number, len: number, v: Uint8Array | string | undefined): void {
  if (v === undefined) return;
  bytes(v).subarray(0, len).copy(blk, at);
}

/** Octal with a NUL terminator when it fits; otherwise GNU base-256 (high bit set), which Go reads too. */
function putNumber(blk: Buffer, at: number, len: number, v: number): void {
  const oct = v.toString(8);
  if (v >= 0 && oct.length <= len - 1) {
    blk.write(oct.padStart(len - 1, '0') + '\0', at, 'latin1');
    return;
  }
  let x = BigInt(v);
  for (let i = len - 1; i >= 0; i--) {
    blk[at + i] = Number(x & 0xffn);
    x >>= 8n;
  }
  blk[at] = blk[at]! | 0x80;
}

/** One 512-byte tar header block with a correct (or deliberately wrong) checksum. */
export function headerBlock(f: HeaderFields): Buffer {
  const blk = Buffer.alloc(BLOCK);
  putString(blk, 0, 100, f.name);
  putNumber(blk, 100, 8, f.mode ?? 0o644);
  putNumber(blk, 108, 8, f.uid ?? 0);
  putNumber(blk, 116, 8, f.gid ?? 0);
  putNumber(blk, 124, 12, f.size ?? 0);
  putNumber(blk, 136, 12, f.mtime ?? 0);
  blk.write(f.typeflag.slice(0, 1), 156, 'latin1');
  putString(blk, 157, 100, f.linkname);
  const magic = f.magic ?? 'ustar';
  if (magic === 'ustar') blk.write('ustar\u000000', 257, 'latin1');
  if (magic === 'gnu') blk.write('ustar  \u0000', 257, 'latin1');
  if (magic !== 'v7') {
    putString(blk, 265, 32, f.uname);
    putString(blk, 297, 32, f.gname);
    putNumber(blk, 329, 8, f.devmajor ?? 0);
    putNumber(blk, 337, 8, f.devminor ?? 0);
    if (magic === 'ustar') putString(blk, 345, 155, f.prefix);
  }
  blk.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of blk) sum += b;
  if (f.badChecksum) sum += 1;
  blk.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return blk;
}

/** A header block followed by its data and padding (PAX `x`/`g`, GNU `L`/`K` and the like). */
function specialEntry(typeflag: string, name: string, data: Buffer, magic: 'ustar' | 'gnu'): Buffer {
  return Buffer.concat([headerBlock({ name, typeflag, size: data.length, magic, mode: 0o644 }), data, padding(data.length)]);
}

const KIND_FLAG: Record<EntryKind, string> = {
  file: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6',
};

const MAX_OCTAL_12 = 0o77777777777;

/** Split a long name into ustar prefix (≤ 155 bytes) and name (≤ 100 bytes) at a '/', if possible. */
function splitUstar(name: Buffer): { prefix: Buffer; name: Buffer } | undefined {
  for (let i = Math.min(name.length - 1, 155); i > 0; i--) {
    if (name[i] === 0x2f && name.length - i - 1 <= 100 && name.length - i - 1 > 0) {
      return { prefix: name.subarray(0, i), name: name.subarray(i + 1) };
    }
  }
  return undefined;
}

export interface BuildOptions {
  /** How many of the two zero end-of-archive blocks to write (default 2). */
  endBlocks?: 0 | 1 | 2;
  /** Pad the archive with zeros to a multiple of this many bytes after the end blocks (tar's 10240 records). */
  recordSize?: number;
  /** Arbitrary bytes appended after everything else. */
  trailing?: Uint8Array;
}

/** Builds a tar archive entry by entry; see the module comment. */
export class TarBuilder {
  readonly entries: BuiltEntry[] = [];
  private readonly parts: Buffer[] = [];
  private seq = 0;

  /** `longNames`: how names/targets beyond 100 bytes are stored unless an entry says otherwise. */
  constructor(private readonly longNames: LongNameStyle = 'pax') {}

  file(name: string, content: Uint8Array | string = '', opts: EntryOptions = {}): this {
    return this.add('file', name, { content: bytes(content) }, opts);
  }

  dir(name: string, opts: EntryOptions = {}): this {
    return this.add('dir', name, {}, { mode: 0o755, ...opts });
  }

  symlink(name: string, target: string, opts: EntryOptions = {}): this {
    return this.add('symlink', name, { linkName: target }, { mode: 0o777, ...opts });
  }

  hardlink(name: string, target: string, opts: EntryOptions = {}): this {
    return this.add('hardlink', name, { linkName: target }, opts);
  }

  charDevice(name: string, major: number, minor: number, opts: EntryOptions = {}): this {
    return this.add('char', name, { devMajor: major, devMinor: minor }, opts);
  }

  blockDevice(name: string, major: number, minor: number, opts: EntryOptions = {}): this {
    return this.add('block', name, { devMajor: major, devMinor: minor }, opts);
  }

  fifo(name: string, opts: EntryOptions = {}): this {
    return this.add('fifo', name, {}, opts);
  }

  /** An overlay whiteout: an empty regular file `<dir>/.wh.<base>` marking `path` as deleted. */
  whiteout(path: string, opts: EntryOptions = {}): this {
    const i = path.lastIndexOf('/');
    const name = i < 0 ? `.wh.${path}` : `${path.slice(0, i + 1)}.wh.${path.slice(i + 1)}`;
    return this.file(name, '', opts);
  }

  /** An opaque-directory marker: the empty file `<dir>/.wh..wh..opq`. */
  opaque(dir: string, opts: EntryOptions = {}): this {
    return this.file(`${dir.replace(/\/+$/, '')}/.wh..wh..opq`, '', opts);
  }

  /** A PAX global header (typeflag 'g'): valid tar, but zstd:chunked cannot carry it. */
  globalHeader(records: Record<string, string>): this {
    const data = Buffer.concat(Object.entries(records).map(([k, v]) => paxRecord(k, v)));
    this.parts.push(specialEntry('g', 'pax_global_header', data, 'ustar'));
    return this;
  }

  /** An old-GNU sparse entry (typeflag 'S') with `data` as its stored payload. */
  sparse(name: string, data: Uint8Array | string = 'x'): this {
    const d = bytes(data);
    this.parts.push(headerBlock({ name, typeflag: 'S', size: d.length, magic: 'gnu', mtime: DEFAULT_MTIME.sec }), d, padding(d.length));
    return this;
  }

  /** Append raw bytes to the archive as they are (for malformed tars). */
  raw(data: Uint8Array): this {
    this.parts.push(bytes(data));
    return this;
  }

  /** The archive: entries, end blocks, record padding, trailing bytes. */
  build(opts: BuildOptions = {}): Buffer {
    const parts = [...this.parts, Buffer.alloc(BLOCK * (opts.endBlocks ?? 2))];
    let len = parts.reduce((n, p) => n + p.length, 0);
    if (opts.recordSize && len % opts.recordSize !== 0) {
      parts.push(Buffer.alloc(opts.recordSize - (len % opts.recordSize)));
      len += parts[parts.length - 1]!.length;
    }
    if (opts.trailing) parts.push(bytes(opts.trailing));
    return Buffer.concat(parts);
  }

  private add(
    kind: EntryKind, name: string,
    extra: { content?: Buffer; linkName?: string; devMajor?: number; devMinor?: number },
    opts: EntryOptions,
  ): this {
    const style = opts.longNames ?? this.longNames;
    const magic = style === 'gnu' ? 'gnu' : 'ustar';
    const content = extra.content ?? Buffer.alloc(0);
    const linkName = extra.linkName ?? '';
    const mtime = toTime(opts.mtime, DEFAULT_MTIME);
    const atime = opts.atime === undefined ? undefined : toTime(opts.atime, DEFAULT_MTIME);
    const ctime = opts.ctime === undefined ? undefined : toTime(opts.ctime, DEFAULT_MTIME);
    const pax: Buffer[] = [];
    const nameBytes = Buffer.from(name, 'utf8');
    const linkBytes = Buffer.from(linkName, 'utf8');
    let headerName: Buffer = nameBytes;
    let prefix: Buffer | undefined;
    let headerLink: Buffer = linkBytes;

    if (nameBytes.length > 100 || opts.forcePaxPath) {
      const split = style === 'ustar-prefix' && !opts.forcePaxPath ? splitUstar(nameBytes) : undefined;
      if (split) {
        ({ prefix, name: headerName } = split);
      } else if (style === 'gnu' && !opts.forcePaxPath) {
        this.parts.push(specialEntry('L', '././@LongLink', Buffer.concat([nameBytes, Buffer.alloc(1)]), 'gnu'));
        headerName = nameBytes.subarray(0, 100);
      } else {
        pax.push(paxRecord('path', nameBytes));
        headerName = nameBytes.subarray(0, 100);
      }
    }
    if (linkBytes.length > 100) {
      if (style === 'gnu') {
        this.parts.push(specialEntry('K', '././@LongLink', Buffer.concat([linkBytes, Buffer.alloc(1)]), 'gnu'));
      } else {
        pax.push(paxRecord('linkpath', linkBytes));
      }
      headerLink = linkBytes.subarray(0, 100);
    }
    let headerMtime = mtime.sec;
    if (mtime.nsec !== 0 || mtime.sec < 0 || mtime.sec > MAX_OCTAL_12) {
      pax.push(paxRecord('mtime', paxTime(mtime)));
      headerMtime = Math.min(Math.max(mtime.sec, 0), MAX_OCTAL_12);
    }
    if (atime) pax.push(paxRecord('atime', paxTime(atime)));
    if (ctime) pax.push(paxRecord('ctime', paxTime(ctime)));
    const xattrs = new Map<string, Buffer>();
    for (const [k, v] of Object.entries(opts.xattrs ?? {})) {
      xattrs.set(k, bytes(v));
      pax.push(paxRecord(`SCHILY.xattr.${k}`, v));
    }
    for (const [k, v] of Object.entries(opts.pax ?? {})) pax.push(paxRecord(k, v));
    if (pax.length > 0) {
      const paxName = `PaxHeaders.${this.seq++}/${name.split('/').filter(Boolean).pop() ?? 'x'}`.slice(0, 99);
      this.parts.push(specialEntry('x', paxName, Buffer.concat(pax), 'ustar'));
    }

    const typeflag = opts.typeflag ?? KIND_FLAG[kind];
    const mode = opts.mode ?? 0o644;
    const uid = opts.uid ?? 0;
    const gid = opts.gid ?? 0;
    const devMajor = extra.devMajor ?? 0;
    const devMinor = extra.devMinor ?? 0;
    this.parts.push(headerBlock({
      name: headerName, typeflag, mode, uid, gid, size: opts.headerSize ?? content.length, mtime: headerMtime,
      linkname: headerLink, magic, uname: opts.uname ?? '', gname: opts.gname ?? '', devmajor: devMajor,
      devminor: devMinor, ...(prefix ? { prefix } : {}), badChecksum: opts.badChecksum ?? false,
    }));
    if (content.length > 0) this.parts.push(content, padding(content.length));
    this.entries.push({
      kind, name, typeflag, linkName, mode, uid, gid, mtime, ...(atime ? { atime } : {}), ...(ctime ? { ctime } : {}),
      devMajor, devMinor, xattrs, content,
    });
    return this;
  }
}
