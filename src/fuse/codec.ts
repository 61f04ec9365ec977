// Encoders for the reply structs. They write into caller-provided buffers at explicit offsets so the hot paths
// (READDIRPLUS, LOOKUP, GETATTR) allocate nothing per entry.
import {
  ATTR_SIZE, DIRENT_HEADER_SIZE, DIRENTPLUS_HEADER_SIZE, ENTRY_OUT_SIZE, OUT_HEADER_SIZE, align8, splitTtl, writeU64,
} from './protocol.js';
import type { Attr, DirSink, Entry } from './types.js';

function secs(t: number | undefined): number {
  return t === undefined ? 0 : Math.floor(t);
}

function nsecs(t: number | undefined, nsec: number | undefined): number {
  if (nsec !== undefined) return nsec >>> 0;
  if (t === undefined) return 0;
  const n = Math.round((t - Math.floor(t)) * 1e9);
  return n > 999_999_999 ? 999_999_999 : n;
}

/** struct fuse_attr (88 bytes) at `off`. */
export function encodeAttr(buf: Buffer, off: number, a: Attr): void {
  const size = a.size ?? 0;
  writeU64(buf, a.ino, off);
  writeU64(buf, size, off + 8);
  writeU64(buf, a.blocks ?? Math.ceil(size / 512), off + 16);
  writeU64(buf, secs(a.atime), off + 24);
  writeU64(buf, secs(a.mtime), off + 32);
  writeU64(buf, secs(a.ctime), off + 40);
  buf.writeUInt32LE(nsecs(a.atime, a.atimeNsec), off + 48);
  buf.writeUInt32LE(nsecs(a.mtime, a.mtimeNsec), off + 52);
  buf.writeUInt32LE(nsecs(a.ctime, a.ctimeNsec), off + 56);
  buf.writeUInt32LE(a.mode >>> 0, off + 60);
  buf.writeUInt32LE((a.nlink ?? 1) >>> 0, off + 64);
  buf.writeUInt32LE((a.uid ?? 0) >>> 0, off + 68);
  buf.writeUInt32LE((a.gid ?? 0) >>> 0, off + 72);
  buf.writeUInt32LE((a.rdev ?? 0) >>> 0, off + 76);
  buf.writeUInt32LE((a.blksize ?? 4096) >>> 0, off + 80);
  buf.writeUInt32LE(0, off + 84); // flags (FUSE_ATTR_SUBMOUNT/DAX): none
}

/** struct fuse_entry_out (128 bytes) at `off`. */
export function encodeEntry(buf: Buffer, off: number, e: Entry, entryTtl: number, attrTtl: number): void {
  const [es, ens] = splitTtl(e.entryTtl ?? entryTtl);
  const [as, ans] = splitTtl(e.attrTtl ?? attrTtl);
  writeU64(buf, e.attr.ino, off);
  writeU64(buf, e.generation ?? 0, off + 8);
  writeU64(buf, es, off + 16);
  writeU64(buf, as, off + 24);
  buf.writeUInt32LE(ens, off + 32);
  buf.writeUInt32LE(ans, off + 36);
  encodeAttr(buf, off + 40, e.attr);
}

/** struct fuse_attr_out (104 bytes) at `off`. */
export function encodeAttrOut(buf: Buffer, off: number, a: Attr, ttl: number): void {
  const [s, ns] = splitTtl(ttl);
  writeU64(buf, s, off);
  buf.writeUInt32LE(ns, off + 8);
  buf.writeUInt32LE(0, off + 12);
  encodeAttr(buf, off + 16, a);
}

const ZERO_ENTRY_OUT = Buffer.alloc(ENTRY_OUT_SIZE);

/**
 * The reply buffer of one READDIR/READDIRPLUS request: header space, then packed dirents up to the kernel's
 * `size`. One allocation per request, entries encoded in place.
 */
export class DirReply implements DirSink {
  readonly buf: Buffer;
  pos = OUT_HEADER_SIZE;
  count = 0;
  private readonly limit: number;

  constructor(
    readonly plus: boolean,
    size: number,
    private readonly entryTtl: number,
    private readonly attrTtl: number,
  ) {
    this.limit = OUT_HEADER_SIZE + size;
    this.buf = Buffer.allocUnsafe(this.limit);
  }

  add(name: string, nextOffset: number, ino: number, mode: number, entry?: Entry): boolean {
    const buf = this.buf;
    const nameLen = Buffer.byteLength(name, 'utf8');
    if (nameLen === 0 || nameLen > 1024) throw new RangeError(`bad directory entry name ${JSON.stringify(name)}`);
    let off = this.pos;
    const rec = align8((this.plus ? DIRENTPLUS_HEADER_SIZE : DIRENT_HEADER_SIZE) + nameLen);
    if (off + rec > this.limit) return false;
    if (this.plus) {
      if (entry) encodeEntry(buf, off, entry, this.entryTtl, this.attrTtl);
      else ZERO_ENTRY_OUT.copy(buf, off); // nodeid 0: the kernel will LOOKUP it itself
      off += ENTRY_OUT_SIZE;
    }
    writeU64(buf, ino, off);
    writeU64(buf, nextOffset, off + 8);
    buf.writeUInt32LE(nameLen, off + 16);
    buf.writeUInt32LE((mode >>> 12) & 15, off + 20);
    buf.write(name, off + DIRENT_HEADER_SIZE, nameLen, 'utf8');
    const end = this.pos + rec;
    const nameEnd = off + DIRENT_HEADER_SIZE + nameLen;
    if (nameEnd < end) buf.fill(0, nameEnd, end);
    this.pos = end;
    this.count++;
    return true;
  }
}

export { ATTR_SIZE };
