// The FUSE kernel protocol: opcodes, flags and the byte layouts of the structs tocfs reads and writes.
// Every layout here was checked against <linux/fuse.h> (7.38 header, kernel 6.18 speaks 7.45); all fields are
// little-endian on the machines we run on (x86_64, aarch64). Offsets are written out as numbers on purpose:
// this file is the one place to compare with the C header.

export const FUSE_KERNEL_VERSION = 7;
/** Highest minor we speak. Newer minors only add flag-gated features; the kernel's checks are all `minor < N`. */
export const FUSE_MAX_MINOR = 45;
/** Lowest minor we accept: 7.31 (Linux 5.4) has everything we rely on (MAX_PAGES, CACHE_SYMLINKS, NO_OPENDIR). */
export const FUSE_MIN_MINOR = 31;
export const FUSE_ROOT_ID = 1;

export const IN_HEADER_SIZE = 40; // fuse_in_header
export const OUT_HEADER_SIZE = 16; // fuse_out_header
export const ATTR_SIZE = 88; // fuse_attr
export const ENTRY_OUT_SIZE = 40 + ATTR_SIZE; // fuse_entry_out = 128
export const ATTR_OUT_SIZE = 16 + ATTR_SIZE; // fuse_attr_out = 104
export const OPEN_OUT_SIZE = 16; // fuse_open_out: fh u64, open_flags u32, backing_id i32 (7.40; padding before)
export const INIT_OUT_SIZE = 64; // fuse_init_out (minor >= 23); max_stack_depth at 36 since 7.40
export const STATFS_OUT_SIZE = 80; // fuse_kstatfs
export const GETXATTR_OUT_SIZE = 8; // fuse_getxattr_out
export const DIRENT_HEADER_SIZE = 24; // offsetof(fuse_dirent, name)
export const DIRENTPLUS_HEADER_SIZE = ENTRY_OUT_SIZE + DIRENT_HEADER_SIZE; // 152

export const enum Opcode {
  LOOKUP = 1,
  FORGET = 2,
  GETATTR = 3,
  SETATTR = 4,
  READLINK = 5,
  SYMLINK = 6,
  MKNOD = 8,
  MKDIR = 9,
  UNLINK = 10,
  RMDIR = 11,
  RENAME = 12,
  LINK = 13,
  OPEN = 14,
  READ = 15,
  WRITE = 16,
  STATFS = 17,
  RELEASE = 18,
  FSYNC = 20,
  SETXATTR = 21,
  GETXATTR = 22,
  LISTXATTR = 23,
  REMOVEXATTR = 24,
  FLUSH = 25,
  INIT = 26,
  OPENDIR = 27,
  READDIR = 28,
  RELEASEDIR = 29,
  FSYNCDIR = 30,
  GETLK = 31,
  SETLK = 32,
  SETLKW = 33,
  ACCESS = 34,
  CREATE = 35,
  INTERRUPT = 36,
  BMAP = 37,
  DESTROY = 38,
  IOCTL = 39,
  POLL = 40,
  NOTIFY_REPLY = 41,
  BATCH_FORGET = 42,
  FALLOCATE = 43,
  READDIRPLUS = 44,
  RENAME2 = 45,
  LSEEK = 46,
  COPY_FILE_RANGE = 47,
  SETUPMAPPING = 48,
  REMOVEMAPPING = 49,
  SYNCFS = 50,
  TMPFILE = 51,
  STATX = 52,
}

/** Names for logs and stats, indexed by opcode. */
export const OPCODE_NAMES: Readonly<Record<number, string>> = {
  1: 'LOOKUP', 2: 'FORGET', 3: 'GETATTR', 4: 'SETATTR', 5: 'READLINK', 6: 'SYMLINK', 8: 'MKNOD', 9: 'MKDIR',
  10: 'UNLINK', 11: 'RMDIR', 12: 'RENAME', 13: 'LINK', 14: 'OPEN', 15: 'READ', 16: 'WRITE', 17: 'STATFS',
  18: 'RELEASE', 20: 'FSYNC', 21: 'SETXATTR', 22: 'GETXATTR', 23: 'LISTXATTR', 24: 'REMOVEXATTR', 25: 'FLUSH',
  26: 'INIT', 27: 'OPENDIR', 28: 'READDIR', 29: 'RELEASEDIR', 30: 'FSYNCDIR', 31: 'GETLK', 32: 'SETLK',
  33: 'SETLKW', 34: 'ACCESS', 35: 'CREATE', 36: 'INTERRUPT', 37: 'BMAP', 38: 'DESTROY', 39: 'IOCTL', 40: 'POLL',
  41: 'NOTIFY_REPLY', 42: 'BATCH_FORGET', 43: 'FALLOCATE', 44: 'READDIRPLUS', 45: 'RENAME2', 46: 'LSEEK',
  47: 'COPY_FILE_RANGE', 48: 'SETUPMAPPING', 49: 'REMOVEMAPPING', 50: 'SYNCFS', 51: 'TMPFILE', 52: 'STATX',
};

/** INIT flags (fuse_init_in/out.flags; bits 32..63 travel in flags2). */
export const InitFlag = {
  ASYNC_READ: 1 << 0,
  POSIX_LOCKS: 1 << 1,
  ATOMIC_O_TRUNC: 1 << 3,
  EXPORT_SUPPORT: 1 << 4,
  BIG_WRITES: 1 << 5,
  DONT_MASK: 1 << 6,
  FLOCK_LOCKS: 1 << 10,
  AUTO_INVAL_DATA: 1 << 12,
  DO_READDIRPLUS: 1 << 13,
  READDIRPLUS_AUTO: 1 << 14,
  ASYNC_DIO: 1 << 15,
  WRITEBACK_CACHE: 1 << 16,
  NO_OPEN_SUPPORT: 1 << 17,
  PARALLEL_DIROPS: 1 << 18,
  POSIX_ACL: 1 << 20,
  ABORT_ERROR: 1 << 21,
  MAX_PAGES: 1 << 22,
  CACHE_SYMLINKS: 1 << 23,
  NO_OPENDIR_SUPPORT: 1 << 24,
  EXPLICIT_INVAL_DATA: 1 << 25,
  INIT_EXT: 1 << 30,
} as const;

/** fuse_open_out.open_flags */
export const FOPEN_DIRECT_IO = 1 << 0;
export const FOPEN_KEEP_CACHE = 1 << 1;
export const FOPEN_NONSEEKABLE = 1 << 2;
export const FOPEN_CACHE_DIR = 1 << 3;
export const FOPEN_STREAM = 1 << 4;
export const FOPEN_NOFLUSH = 1 << 5;
/** 7.40: serve this open file from the backing file named by fuse_open_out.backing_id (FUSE passthrough). */
export const FOPEN_PASSTHROUGH = 1 << 7;
/**
 * The only open flags the kernel accepts beside FOPEN_PASSTHROUGH (FOPEN_PASSTHROUGH_MASK: DIRECT_IO,
 * PARALLEL_DIRECT_WRITES, NOFLUSH); any other (KEEP_CACHE...) makes the open fail with EIO.
 */
export const FOPEN_PASSTHROUGH_MASK = FOPEN_PASSTHROUGH | FOPEN_DIRECT_IO | (1 << 6) | FOPEN_NOFLUSH;

/** Set in fuse_in_header.unique of an INTERRUPT's own id. */
export const FUSE_INT_REQ_BIT = 1;

/**
 * fuse_notify_code FUSE_NOTIFY_RESEND (7.40, Linux 6.9): the kernel requeues every request a server read but did not
 * answer. 7, not 9: 8 is INC_EPOCH and 9 PRUNE (which answers a body-less notification with EINVAL).
 */
export const NOTIFY_RESEND = 7;
/** INIT flags2 bit 39 − 32: the kernel can resend (FUSE_HAS_RESEND); resent requests carry bit 63 in `unique`. */
export const INIT_FLAG2_HAS_RESEND = 1 << 7;
/**
 * INIT flags2 bit 37 − 32: FUSE_PASSTHROUGH (7.40, Linux 6.9). Granted only with fuse_init_out.max_stack_depth in
 * 1..FILESYSTEM_MAX_STACK_DEPTH (2) and without WRITEBACK_CACHE.
 */
export const INIT_FLAG2_PASSTHROUGH = 1 << 5;
/**
 * fuse_init_out.max_stack_depth (offset 36: the first of the old `unused[7]` words, after flags2 at 32). It becomes
 * our superblock's s_stack_depth: 1 = backing files live on a plain filesystem (depth 0), and overlayfs (depth 2)
 * can still stack on top of us, as podman does.
 */
export const INIT_OUT_MAX_STACK_DEPTH_OFFSET = 36;
export const PASSTHROUGH_STACK_DEPTH = 1;
/** FUSE_UNIQUE_RESEND (bit 63 of unique) as a bit of the high 32-bit word. */
const UNIQUE_RESEND_HI = 0x80000000;

const TWO32 = 4294967296;

/** Write a non-negative safe integer (or a negative one, two's complement) as u64/i64 little-endian. */
export function writeU64(buf: Buffer, value: number, off: number): void {
  if (value >= 0 && value < TWO32) {
    buf.writeUInt32LE(value, off);
    buf.writeUInt32LE(0, off + 4);
  } else if (value >= 0) {
    buf.writeUInt32LE(value % TWO32, off);
    buf.writeUInt32LE(Math.floor(value / TWO32), off + 4);
  } else {
    buf.writeBigInt64LE(BigInt(Math.trunc(value)), off);
  }
}

/** Read a u64 as a number (exact up to 2^53, which every id we hand out stays below). */
export function readU64(buf: Buffer, off: number): number {
  return buf.readUInt32LE(off) + buf.readUInt32LE(off + 4) * TWO32;
}

/**
 * A request's `unique` as a number. Ids are small even counters, but a resent request has bit 63 set, which a
 * double cannot carry next to the counter: it is returned negated instead, and writeUnique puts the bit back (the
 * kernel matches a reply to its request by the whole 64-bit value).
 */
export function readUnique(buf: Buffer, off: number): number {
  const hi = buf.readUInt32LE(off + 4);
  const v = buf.readUInt32LE(off) + (hi & ~UNIQUE_RESEND_HI) * TWO32;
  return hi & UNIQUE_RESEND_HI ? -v : v;
}

export function writeUnique(buf: Buffer, unique: number, off: number): void {
  const v = Math.abs(unique);
  buf.writeUInt32LE(v % TWO32, off);
  buf.writeUInt32LE((Math.floor(v / TWO32) | (unique < 0 ? UNIQUE_RESEND_HI : 0)) >>> 0, off + 4);
}

/** Linux new_encode_dev(): the dev_t encoding fuse_attr.rdev carries. */
export function makedev(major: number, minor: number): number {
  return ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

/** Round up to the 8-byte alignment of dirent records (FUSE_DIRENT_ALIGN). */
export function align8(n: number): number {
  return (n + 7) & ~7;
}

/** Split a TTL in seconds into (seconds, nanoseconds) as the kernel wants them. */
export function splitTtl(ttl: number): [number, number] {
  if (!(ttl > 0)) return [0, 0];
  if (ttl > 0xffffffff) return [0xffffffff, 0];
  const sec = Math.floor(ttl);
  const nsec = Math.min(999_999_999, Math.round((ttl - sec) * 1e9));
  return [sec, nsec];
}
