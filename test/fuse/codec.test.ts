// Unit tests of the FUSE layer's byte layouts (checked against <linux/fuse.h>) and its Errno.
import assert from 'node:assert/strict';
import { constants } from 'node:os';
import { DirReply, Errno, makedev } from '../../src/fuse/index.js';
import { encodeAttr, encodeAttrOut, encodeEntry } from '../../src/fuse/codec.js';
import { align8, readU64, readUnique, splitTtl, writeU64, writeUnique } from '../../src/fuse/protocol.js';

describe('fuse/codec', () => {
  it('writes u64 values of every magnitude', () => {
    const b = Buffer.alloc(8);
    for (const v of [0, 1, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 5, Number.MAX_SAFE_INTEGER]) {
      writeU64(b, v, 0);
      assert.equal(b.readBigUInt64LE(0), BigInt(v));
      assert.equal(readU64(b, 0), v);
    }
    writeU64(b, -1, 0);
    assert.equal(b.readBigInt64LE(0), -1n);
  });

  it('keeps the resend bit (63) of a request id through reading and replying', () => {
    const b = Buffer.alloc(8);
    for (const [raw, id] of [[2n, 2], [2n ** 40n + 4n, 2 ** 40 + 4], [(1n << 63n) | 6n, -6], [(1n << 63n) | (2n ** 45n + 8n), -(2 ** 45 + 8)]] as const) {
      b.writeBigUInt64LE(raw, 0);
      assert.equal(readUnique(b, 0), id);
      b.fill(0xff);
      writeUnique(b, id, 0);
      assert.equal(b.readBigUInt64LE(0), raw, `reply id of ${raw}`);
    }
  });

  it('encodes struct fuse_attr at the header offsets', () => {
    const b = Buffer.alloc(88);
    encodeAttr(b, 0, {
      ino: 2 ** 33 + 7, mode: 0o100644, nlink: 3, uid: 1000, gid: 100, rdev: makedev(1, 3), size: 5000,
      atime: 10.5, mtime: 20, mtimeNsec: 7, ctime: 30,
    });
    assert.equal(b.readBigUInt64LE(0), 2n ** 33n + 7n); // ino
    assert.equal(b.readBigUInt64LE(8), 5000n); // size
    assert.equal(b.readBigUInt64LE(16), 10n); // blocks = ceil(5000/512)
    assert.equal(b.readBigUInt64LE(24), 10n); // atime
    assert.equal(b.readBigUInt64LE(32), 20n);
    assert.equal(b.readBigUInt64LE(40), 30n);
    assert.equal(b.readUInt32LE(48), 500_000_000); // atimensec from the fraction
    assert.equal(b.readUInt32LE(52), 7);
    assert.equal(b.readUInt32LE(60), 0o100644);
    assert.equal(b.readUInt32LE(64), 3);
    assert.equal(b.readUInt32LE(68), 1000);
    assert.equal(b.readUInt32LE(72), 100);
    assert.equal(b.readUInt32LE(76), 0x103); // new_encode_dev(1, 3)
    assert.equal(b.readUInt32LE(80), 4096);
  });

  it('encodes fuse_entry_out and fuse_attr_out with TTLs', () => {
    const b = Buffer.alloc(128);
    encodeEntry(b, 0, { attr: { ino: 9, mode: 0o40755 }, generation: 4, entryTtl: 1.25 }, 5, 6);
    assert.equal(b.readBigUInt64LE(0), 9n);
    assert.equal(b.readBigUInt64LE(8), 4n);
    assert.equal(b.readBigUInt64LE(16), 1n);
    assert.equal(b.readBigUInt64LE(24), 6n);
    assert.equal(b.readUInt32LE(32), 250_000_000);
    assert.equal(b.readUInt32LE(36), 0);
    assert.equal(b.readBigUInt64LE(40), 9n); // attr.ino
    const a = Buffer.alloc(104);
    encodeAttrOut(a, 0, { ino: 9, mode: 0o40755 }, 2.5);
    assert.equal(a.readBigUInt64LE(0), 2n);
    assert.equal(a.readUInt32LE(8), 500_000_000);
    assert.equal(a.readBigUInt64LE(16), 9n);
    assert.deepEqual(splitTtl(0), [0, 0]);
    assert.deepEqual(splitTtl(-1), [0, 0]);
  });

  it('packs dirents 8-byte aligned and stops when the reply is full', () => {
    const d = new DirReply(false, 80, 1, 1);
    assert.ok(d.add('abc', 1, 5, 0o100644));
    assert.equal(d.pos, 16 + align8(24 + 3));
    const e = d.buf.subarray(16);
    assert.equal(e.readBigUInt64LE(0), 5n);
    assert.equal(e.readBigUInt64LE(8), 1n); // off = cookie of the next entry
    assert.equal(e.readUInt32LE(16), 3);
    assert.equal(e.readUInt32LE(20), 8); // DT_REG
    assert.equal(e.toString('utf8', 24, 27), 'abc');
    assert.equal(e[27], 0);
    assert.ok(d.add('de', 2, 6, 0o20000)); // DT_CHR
    assert.equal(e.readUInt32LE(32 + 20), 2);
    assert.equal(d.add('x'.repeat(20), 3, 7, 0o40000), false, 'does not fit in 80 bytes');
    assert.equal(d.count, 2);
    assert.throws(() => d.add('', 3, 7, 0));
  });

  it('packs direntplus records: entry_out then dirent', () => {
    const d = new DirReply(true, 4096, 3, 4);
    assert.ok(d.add('ü', 9, 42, 0o120777, { attr: { ino: 42, mode: 0o120777, size: 3 } }));
    assert.ok(d.add('.', 10, 1, 0o40755));
    const e = d.buf.subarray(16);
    assert.equal(e.readBigUInt64LE(0), 42n); // nodeid
    assert.equal(e.readBigUInt64LE(16), 3n); // entry_valid (session default)
    assert.equal(e.readBigUInt64LE(128), 42n); // dirent.ino
    assert.equal(e.readBigUInt64LE(136), 9n);
    assert.equal(e.readUInt32LE(144), 2); // namelen in bytes
    assert.equal(e.readUInt32LE(148), 10); // DT_LNK
    assert.equal(e.toString('utf8', 152, 154), 'ü');
    const second = align8(152 + 2);
    assert.equal(e.readBigUInt64LE(second), 0n, 'no entry: nodeid 0');
    assert.equal(d.pos, 16 + second + align8(152 + 1));
  });
});

describe('fuse/Errno', () => {
  it('carries errno values from os.constants', () => {
    assert.equal(new Errno('ENOENT').errno, constants.errno.ENOENT);
    assert.equal(Errno.ERANGE.errno, constants.errno.ERANGE);
    assert.equal(new Errno(constants.errno.ENODATA).code, 'ENODATA');
    assert.ok(Errno.ENOENT instanceof Error);
    assert.throws(() => new Errno('EWHAT' as 'ENOENT'), TypeError);
  });

  it('converts Node system errors, and anything else to EIO', () => {
    const sys = Object.assign(new Error('x'), { code: 'EACCES' });
    assert.equal(Errno.from(sys).errno, constants.errno.EACCES);
    assert.equal(Errno.from(new Error('boom')).errno, constants.errno.EIO);
    assert.equal(Errno.from(Errno.ENOENT), Errno.ENOENT);
  });
});
