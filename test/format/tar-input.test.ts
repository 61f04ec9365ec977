import assert from 'node:assert/strict';
import { decompress } from 'zstd-napi';
import { openChunkedLayer, readFile, verifyChunkedLayer, writeZstdChunked } from '../../src/format/index.js';
import { sha256Digest } from '../../src/util/index.js';
import { collect, convert, formatErr, memBlob, pseudoRandom } from './helpers.js';
import { BLOCK, TarBuilder, headerBlock, padding, paxRecord } from './tar-builder.js';

/** Convert, open, verify: the DiffID and size must be those of the input, the blob must decompress to it. */
async function roundTrip(tar: Buffer, pieces: number | number[] = 65536) {
  const { blob, result } = await convert(tar, pieces);
  assert.equal(result.diffID, sha256Digest(tar));
  assert.equal(result.diffSize, tar.length);
  assert.ok(decompress(blob).equals(tar), 'blob decompresses to the input');
  const layer = await openChunkedLayer(memBlob(blob), result.annotations);
  const v = await verifyChunkedLayer(memBlob(blob), layer);
  assert.equal(v.diffID, result.diffID);
  assert.equal(v.diffSize, tar.length);
  return { blob, result, layer };
}

const base = () => new TarBuilder().dir('a/').file('a/f', 'hello');

describe('format: tar input edge cases for the writer', function () {
  this.timeout(60_000);

  describe('tars zstd:chunked cannot carry are refused with TAR_UNSUPPORTED', () => {
    const cases: Array<[string, () => Buffer, RegExp]> = [
      ['a PAX global header', () => base().globalHeader({ comment: 'x' }).file('a/g', 'x').build(), /global header/],
      ['a GNU sparse file (typeflag S)', () => base().sparse('a/sparse', 'abc').build(), /GNU sparse/],
      ['PAX GNU.sparse records', () => base().file('a/s', 'x', { pax: { 'GNU.sparse.major': '1', 'GNU.sparse.minor': '0' } }).build(), /GNU\.sparse/],
      ['typeflag 7 (contiguous file)', () => base().file('a/c', 'x', { typeflag: '7' }).build(), /tar type "7"/],
      ['a symlink header with a non-zero size', () => base().symlink('a/s', 'f', { headerSize: 100 }).build(), /"a\/s": .* declares 100 bytes/],
      ['a directory header with a non-zero size', () => base().dir('a/d/', { headerSize: 512 }).build(), /declares 512 bytes/],
      ['a name climbing out of the root', () => base().file('../escape', 'x').build(), /"\.\.\/escape": the name climbs out/],
      ['a hardlink to a missing file', () => base().hardlink('a/h', 'a/nope').build(), /not in the layer/],
      ['a uid beyond 32 bits', () => base().file('a/u', 'x', { uid: 2 ** 40 }).build(), /uid 1099511627776 is out of range/],
      ['a path component longer than 255 bytes', () => base().file('a/' + 'n'.repeat(256), 'x').build(), /longer than 255/],
      ['an mtime past the year 9999', () => base().file('a/t', 'x', { mtime: 253402300800 }).build(), /years 0-9999/],
      ['a socket-like unknown typeflag', () => base().file('a/u', '', { typeflag: 'Z' }).build(), /tar type "Z"/],
    ];
    for (const [title, tar, msg] of cases) {
      it(`refuses ${title}`, async () => {
        await assert.rejects(convert(tar()), formatErr('TAR_UNSUPPORTED', msg));
      });
    }
  });

  describe('malformed tars are refused with TAR_INVALID', () => {
    const full = base().file('a/big', pseudoRandom(3000, 1)).build();
    const cases: Array<[string, () => Buffer, RegExp]> = [
      ['duplicate paths', () => base().file('a/f', 'again').build(), /duplicate path/],
      ['duplicate paths after cleaning', () => base().file('./a/f', 'again').build(), /duplicate path/],
      ['a duplicate directory spelled differently', () => base().dir('./a').build(), /duplicate path/],
      ['a tar cut inside a header block', () => full.subarray(0, BLOCK * 3 + 100), /inside a header block/],
      ['a tar cut inside a payload', () => full.subarray(0, full.length - 1024 - 1000), /inside the payload of "a\/big"/],
      ['a tar cut inside a PAX header', () => new TarBuilder().file('p', 'x', { mtime: { sec: 1, nsec: 5 } }).build().subarray(0, BLOCK + 10), /inside an extended header/],
      ['a bad header checksum', () => base().file('a/bad', 'x', { badChecksum: true }).build(), /bad checksum/],
      ['a zero block followed by a header', () => Buffer.concat([Buffer.alloc(BLOCK), base().build()]), /zero block followed by a non-zero block/],
      ['a malformed PAX record', () => base().raw(Buffer.concat([headerBlock({ name: 'pax', typeflag: 'x', size: 7 }), Buffer.from('7 ab\n\n\n'), padding(7)])).file('z', 'z').build(), /PAX/],
      ['a PAX record with a bad length', () => base().raw(Buffer.concat([headerBlock({ name: 'pax', typeflag: 'x', size: 12 }), Buffer.from('99 path=x\n\n'), Buffer.alloc(1), padding(12)])).file('z', 'z').build(), /PAX record length/],
      ['an extended header beyond 1 MiB', () => base().raw(headerBlock({ name: 'pax', typeflag: 'x', size: (1 << 20) + 1 })).build(), /exceeds/],
      ['a size field that is not octal', () => {
        const h = headerBlock({ name: 'n', typeflag: '0', size: 1 });
        h.write('9', 124, 'latin1');
        // Fix the checksum so only the size is wrong.
        h.fill(0x20, 148, 156);
        let sum = 0;
        for (const b of h) sum += b;
        h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
        return Buffer.concat([h, Buffer.alloc(BLOCK * 3)]);
      }, /not an octal number/],
      ['a negative size (base-256)', () => base().raw(headerBlock({ name: 'neg', typeflag: '0', size: -5 })).build(), /negative size/],
    ];
    for (const [title, tar, msg] of cases) {
      it(`refuses ${title}`, async () => {
        await assert.rejects(convert(tar()), formatErr('TAR_INVALID', msg));
      });
    }
  });

  describe('odd but valid tars convert and keep their DiffID', () => {
    it('keeps trailing bytes after the end blocks (short junk)', async () => {
      const { layer } = await roundTrip(base().build({ trailing: Buffer.from('junk after the end') }));
      assert.equal(layer.toc.files.length, 2);
    });

    it('keeps more than 1 MiB of trailing bytes (several tar-split segments), whatever the input pieces', async () => {
      const tar = base().build({ recordSize: 10240, trailing: pseudoRandom((1 << 20) + 3000, 5) });
      const a = await roundTrip(tar, 4093);
      const b = await roundTrip(tar, tar.length);
      assert.ok(a.blob.equals(b.blob));
    });

    it('converts a tar without end blocks', async () => {
      await roundTrip(base().file('a/odd', pseudoRandom(700, 3)).build({ endBlocks: 0 }));
    });

    it('converts a tar with one end block', async () => {
      await roundTrip(base().build({ endBlocks: 1 }));
    });

    it('converts a tar that ends right after a payload, without its padding', async () => {
      const tar = base().file('a/last', pseudoRandom(700, 4)).build({ endBlocks: 0 });
      await roundTrip(tar.subarray(0, tar.length - 324));
    });

    it('converts an empty (0-byte) input', async () => {
      const { layer } = await roundTrip(Buffer.alloc(0));
      assert.equal(layer.toc.files.length, 0);
    });

    it('converts a tar of only end blocks', async () => {
      const { layer } = await roundTrip(Buffer.alloc(BLOCK * 2));
      assert.equal(layer.toc.files.length, 0);
    });

    it('converts names that are not UTF-8 (tar-split name_raw)', async () => {
      const name = Buffer.from([0x63, 0x61, 0x66, 0xe9]); // "café" in Latin-1
      const tar = Buffer.concat([headerBlock({ name, typeflag: '0', size: 3, mtime: 1 }), Buffer.from('abc'), padding(3), Buffer.alloc(BLOCK * 2)]);
      const { layer } = await roundTrip(tar);
      assert.equal(layer.toc.files[0]!.name, 'caf\ufffd');
    });

    it('takes the size from a PAX record over the header field', async () => {
      const tar = new TarBuilder().file('p', 'twelve bytes', { headerSize: 0, pax: { size: '12' } }).build();
      const { blob, layer } = await roundTrip(tar);
      assert.equal((await collect(readFile(memBlob(blob), layer.toc.files[0]!))).toString(), 'twelve bytes');
    });

    it('takes uid, gid and long link targets from PAX, with v7 and GNU headers around', async () => {
      const tar = new TarBuilder('gnu')
        .symlink('g/' + 'l'.repeat(120), 't'.repeat(150))
        .raw(Buffer.concat([headerBlock({ name: 'v7file', typeflag: '0', size: 2, magic: 'v7', mtime: 5 }), Buffer.from('v7'), padding(2)]))
        .file('pax-ids', 'x', { pax: { uid: '70000', gid: '80000' }, longNames: 'pax' })
        .build();
      const { layer } = await roundTrip(tar);
      const [sym, v7, ids] = layer.toc.files;
      assert.equal(sym!.name, 'g/' + 'l'.repeat(120));
      assert.equal(sym!.linkName, 't'.repeat(150));
      assert.equal(v7!.name, 'v7file');
      assert.deepEqual([ids!.uid, ids!.gid], [70000, 80000]);
    });

    it('converts hardlinks, whiteouts, opaque dirs, devices and a multi-chunk file (the builder\'s layer kit)', async () => {
      const tar = new TarBuilder()
        .dir('etc/').file('etc/passwd', 'root:x:0:0\n').hardlink('etc/passwd-', 'etc/passwd')
        .whiteout('etc/removed').opaque('var/cache').blockDevice('dev/loop0', 7, 0).fifo('dev/fifo')
        .file('big', Buffer.concat([pseudoRandom(300_000, 8), Buffer.alloc(70_000)]))
        .build({ recordSize: 10240 });
      const { layer } = await roundTrip(tar);
      const names = layer.toc.files.map((f) => f.name);
      assert.deepEqual(names, ['etc/', 'etc/passwd', 'etc/passwd-', 'etc/.wh.removed', 'var/cache/.wh..wh..opq', 'dev/loop0', 'dev/fifo', 'big']);
      assert.ok(layer.toc.files[7]!.chunks.length > 2);
      assert.ok(layer.toc.files[7]!.chunks.at(-1)!.zeros);
    });
  });

  it('calls onProgress with growing input byte counts ending at the tar size', async () => {
    const tar = base().file('a/x', pseudoRandom(200_000, 9)).build();
    const seen: number[] = [];
    await writeZstdChunked([tar.subarray(0, 70_000), tar.subarray(70_000)], () => {}, { onProgress: (n) => seen.push(n) });
    assert.ok(seen.every((n, i) => i === 0 || n >= seen[i - 1]!));
    assert.equal(seen.at(-1), tar.length);
  });

  it('PAX records are self-describing ("%d key=value\\n" counts its own length)', () => {
    for (const v of ['', 'x', 'y'.repeat(5), 'z'.repeat(93), 'z'.repeat(94), 'z'.repeat(995)]) {
      const r = paxRecord('path', v);
      assert.equal(Number(r.toString().split(' ')[0]), r.length);
    }
  });
});
