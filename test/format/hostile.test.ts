import assert from 'node:assert/strict';
import {
  ANNOTATION_ESTARGZ_TOC_DIGEST, ANNOTATION_LEGACY_TOC_DIGEST, ANNOTATION_TARSPLIT_POSITION, ANNOTATION_TOC_DIGEST,
  ANNOTATION_TOC_POSITION, FormatError, MAX_TOC_SIZE, encodeFooter, formatChunkedAnnotations, layerKind,
  openChunkedLayer, readFile, skippableHeader, verifyChunkedLayer, compressFrame, encodeTarSplitLine,
  type BlobReader, type ChunkedLayer, type TarSplitEntry,
} from '../../src/format/index.js';
import { sha256Digest } from '../../src/util/index.js';
import { assemble, collect, formatErr, memBlob, openBothWays, seedLayer } from './helpers.js';

type Seed = Awaited<ReturnType<typeof seedLayer>>;
/** A TOC as plain JSON values, so that any field can be given any (wrong) value. */
interface RawToc {
  version?: unknown;
  entries?: unknown;
  tarSplitDigest?: unknown;
  [key: string]: unknown;
}
type RawEntry = Record<string, unknown>;

const OTHER_DIGEST = sha256Digest(Buffer.from('something else'));

describe('format: hostile TOCs, tar-splits and annotations', function () {
  this.timeout(60_000);
  let s: Seed;
  let layer: ChunkedLayer;
  before(async () => {
    s = await seedLayer();
    layer = await openChunkedLayer(memBlob(s.blob), s.result.annotations);
  });

  /** The seed layer's TOC as raw JSON values (fresh copy); without tarSplitDigest unless asked. */
  const rawToc = (keepTarSplit = false): RawToc => {
    const t = JSON.parse(layer.tocJson) as RawToc;
    if (!keepTarSplit) delete t.tarSplitDigest;
    return t;
  };
  const entries = (t: RawToc) => t.entries as RawEntry[];
  /** The (non-chunk) entry of that name. */
  const entry = (t: RawToc, name: string): RawEntry => {
    const e = entries(t).find((x) => x.name === name && x.type !== 'chunk');
    assert.ok(e, name);
    return e;
  };
  const open = (toc: RawToc | string, withTarSplit = false) => {
    const a = assemble(s.data, typeof toc === 'string' ? toc : JSON.stringify(toc), withTarSplit ? { z: s.tarSplitZ, size: s.tarSplitSize } : undefined);
    return openBothWays(memBlob(a.blob), a.annotations);
  };

  it('the hand-assembled seed TOC opens and verifies (the harness itself is sound)', async () => {
    const t = rawToc(true);
    const a = assemble(s.data, JSON.stringify(t), { z: s.tarSplitZ, size: s.tarSplitSize });
    const l = await openChunkedLayer(memBlob(a.blob), a.annotations);
    assert.equal((await verifyChunkedLayer(memBlob(a.blob), l)).diffID, s.result.diffID);
    assert.equal((await open(rawToc())).toc.files.length, layer.toc.files.length);
  });

  it('decompresses a TOC no further than the size its annotation declares, and says so', async () => {
    const a = assemble(s.data, JSON.stringify(rawToc()));
    const [off, len] = a.annotations[ANNOTATION_TOC_POSITION]!.split(':');
    const declared = { ...a.annotations, [ANNOTATION_TOC_POSITION]: `${off}:${len}:256:1` };
    await assert.rejects(openChunkedLayer(memBlob(a.blob), declared), formatErr('ZSTD_INVALID', /TOC: decompresses to more than the declared 256 bytes/));
  });

  it('refuses a zeros chunk beyond the 4 GiB hole limit before hashing anything', async () => {
    const t = rawToc();
    const big = entries(t).filter((e) => e.name === 'd/big');
    const zeros = big.find((e) => e.chunkType === 'zeros')!;
    const delta = 2 ** 40 - (zeros.chunkSize as number);
    zeros.chunkSize = 2 ** 40;
    for (const e of big) {
      if (e.type === 'reg') e.size = (e.size as number) + delta;
      else if ((e.chunkOffset as number) > (zeros.chunkOffset as number)) e.chunkOffset = (e.chunkOffset as number) + delta;
    }
    const t0 = Date.now();
    await assert.rejects(open(t), formatErr('TOC_INVALID', /zeros chunk of 1099511627776 bytes .*exceeds the 4294967296-byte limit for holes/));
    assert.ok(Date.now() - t0 < 1000);
  });

  describe('TOC content rules (TOC_INVALID)', () => {
    const cases: Array<[string, (t: RawToc) => void, RegExp?]> = [
      ['a name climbing out with ../', (t) => { entry(t, 'd/empty').name = '../etc/passwd'; }, /climbs out/],
      ['a name climbing out in the middle', (t) => { entry(t, 'd/empty').name = 'd/../../etc/passwd'; }, /climbs out/],
      ['an absolute name climbing out', (t) => { entry(t, 'd/empty').name = '/../etc/passwd'; }, /climbs out/],
      ['a NUL in a name', (t) => { entry(t, 'd/empty').name = 'd/a\0b'; }, /NUL/],
      ['an empty name', (t) => { entry(t, 'd/empty').name = ''; }, /empty name/],
      ['a path component of 256 bytes', (t) => { entry(t, 'd/empty').name = 'd/' + 'x'.repeat(256); }, /longer than 255/],
      ['a path of more than 4096 bytes', (t) => { entry(t, 'd/empty').name = 'd/'.repeat(2049) + 'x'; }, /longer than 4096/],
      ['an exact duplicate name', (t) => { entries(t).push({ ...entry(t, 'd/empty') }); }, /duplicate path \/d\/empty/],
      ['a duplicate after cleaning (a/b vs ./a/b/)', (t) => { entries(t).push({ type: 'dir', name: './d/empty/' }); }, /duplicate path/],
      ['a duplicate directory after cleaning', (t) => { entries(t).push({ type: 'dir', name: 'd' }); }, /duplicate path \/d/],
      ['an orphan chunk entry at the start', (t) => { entries(t).unshift({ ...entries(t)[2]! }); }, /without a preceding regular file/],
      ['a chunk entry after another file', (t) => { const e = entries(t); e.splice(e.indexOf(entry(t, 'd/small')) + 1, 0, { ...e[6]!, chunkOffset: 355000 }); }, /without a preceding regular file/],
      ['a chunk entry after an empty file of the same name', (t) => {
        entries(t).push({ type: 'reg', name: 'e2' }, { type: 'chunk', name: 'e2', offset: 200, chunkSize: 5, chunkDigest: OTHER_DIGEST });
      }, /without a preceding regular file/],
      ['chunk entries out of order', (t) => { const e = entries(t); [e[3], e[4]] = [e[4]!, e[3]!]; }, /contiguous and in order/],
      ['overlapping chunks (chunkOffset one byte early)', (t) => { (entries(t)[3]!.chunkOffset as number) -= 1; }, /contiguous/],
      ['a gap between chunks', (t) => { (entries(t)[3]!.chunkOffset as number) += 1; }, /contiguous/],
      ['chunk sizes that do not add up to the size (file longer)', (t) => { (entry(t, 'd/big').size as number) += 1; }, /chunks cover/],
      ['chunk sizes that do not add up to the size (last chunk shorter)', (t) => { (entries(t)[6]!.chunkSize as number) -= 1; }, /chunks cover/],
      ['a chunk entry without chunkSize', (t) => { delete entries(t)[4]!.chunkSize; }, /without chunkSize/],
      ['a chunk without chunkDigest', (t) => { delete entries(t)[3]!.chunkDigest; }, /chunkDigest/],
      ['a chunk with a malformed chunkDigest', (t) => { entries(t)[3]!.chunkDigest = 'sha256:1234'; }, /chunkDigest/],
      ['an unknown chunkType', (t) => { entries(t)[3]!.chunkType = 'sparse'; }, /chunkType/],
      ['chunk blob offsets going backwards', (t) => { entries(t)[4]!.offset = entries(t)[3]!.offset; }, /does not follow/],
      ['a huge size (2^53-1) with a tiny range', (t) => { entry(t, 'd/small').size = Number.MAX_SAFE_INTEGER; }, /claims 9007199254740991 bytes/],
      ['a huge chunkSize with a tiny range', (t) => {
        const e = entries(t);
        (e[6]!.chunkSize as number) += 2 ** 40;
        (entry(t, 'd/big').size as number) += 2 ** 40;
      }, /claims/],
      ['payloads out of blob order', (t) => {
        const a = entry(t, 'd/small'), b = entry(t, 'd/attrs');
        [a.offset, b.offset, a.endOffset, b.endOffset] = [b.offset, a.offset, b.endOffset, a.endOffset];
      }, /blob order|runs past/],
      ['two payloads at the same offset', (t) => { entry(t, 'd/small').offset = entry(t, 'd/big').offset; entry(t, 'd/small').endOffset = 5000; }, /blob order|runs past|does not follow/],
      ['a payload range that overlaps the next one', (t) => { entry(t, 'd/small').endOffset = (entry(t, 'd/attrs').offset as number) + 5; }, /runs past/],
      ['a range beyond the end of the data frames', (t) => { entry(t, 'd/attrs').endOffset = s.data.length + 10; }, /runs past/],
      ['a payload that starts beyond the data frames', (t) => { entry(t, 'd/attrs').offset = s.data.length + 5; delete entry(t, 'd/attrs').endOffset; }, /empty or negative/],
      ['a file with content but no offset', (t) => { delete entry(t, 'd/small').offset; }, /no offset/],
      ['a negative offset', (t) => { entry(t, 'd/small').offset = -5; }, /no offset/],
      ['a file with content but no digest', (t) => { delete entry(t, 'd/small').digest; }, /without a valid digest/],
      ['a malformed digest', (t) => { entry(t, 'd/small').digest = 'sha256:xyz'; }, /without a valid digest/],
      ['an upper-case digest', (t) => { entry(t, 'd/small').digest = (entry(t, 'd/small').digest as string).toUpperCase().replace('SHA256', 'sha256'); }, /without a valid digest/],
      ['a digest of another algorithm', (t) => { entry(t, 'd/small').digest = 'md5:' + 'a'.repeat(32); }, /without a valid digest/],
      ['an empty file with a non-empty digest', (t) => { entry(t, 'd/empty').digest = OTHER_DIGEST; }, /empty file with digest/],
      ['a hardlink to a missing target', (t) => { entry(t, 'd/hard').linkName = 'd/nope'; }, /not in the layer/],
      ['a hardlink to a directory', (t) => { entry(t, 'd/hard').linkName = 'd/'; }, /which is a dir/],
      ['a hardlink climbing out', (t) => { entry(t, 'd/hard').linkName = '../../etc/shadow'; }, /climbs out/],
      ['a hardlink without target', (t) => { delete entry(t, 'd/hard').linkName; }, /hardlink without a target/],
      ['a hardlink loop', (t) => { entries(t).push({ type: 'hardlink', name: 'l1', linkName: 'l2' }, { type: 'hardlink', name: 'l2', linkName: 'l1' }); }, /which is a hardlink/],
      ['a symlink without target', (t) => { delete entry(t, 'd/sym').linkName; }, /symlink without a target/],
      ['a symlink with an empty target', (t) => { entry(t, 'd/sym').linkName = ''; }, /symlink without a target/],
      ['an xattr value that is not base64', (t) => { entry(t, 'd/attrs').xattrs = { 'user.a': '!!!!' }; }, /not base64/],
      ['an xattr value with bad base64 length', (t) => { entry(t, 'd/attrs').xattrs = { 'user.a': 'YWJ' }; }, /not base64/],
      ['an xattr with an empty name', (t) => { entry(t, 'd/attrs').xattrs = { '': 'eA==' }; }, /bad xattr name/],
      ['an xattr value that is not a string', (t) => { entry(t, 'd/attrs').xattrs = { 'user.a': 5 }; }, /non-string/],
      ['xattrs that are an array', (t) => { entry(t, 'd/attrs').xattrs = ['eA==']; }, /not an object/],
      ['a negative mode', (t) => { entry(t, 'd/small').mode = -1; }, /mode -1 is out of range/],
      ['a negative uid', (t) => { entry(t, 'd/small').uid = -1; }, /uid -1 is out of range/],
      ['a uid beyond 32 bits', (t) => { entry(t, 'd/small').uid = 2 ** 32; }, /uid .* out of range/],
      ['a negative size', (t) => { entry(t, 'd/empty').size = -1; }, /size -1 is out of range/],
      ['a size beyond 2^53', (t) => { entry(t, 'd/empty').size = 2 ** 60; }, /not an integer/],
      ['a fractional mode', (t) => { entry(t, 'd/small').mode = 420.5; }, /not an integer/],
      ['a size given as a string', (t) => { entry(t, 'd/small').size = '5000'; }, /not an integer/],
      ['a name given as a number', (t) => { entry(t, 'd/small').name = 5; }, /not a string/],
      ['a modtime given as a number', (t) => { entry(t, 'd/small').modtime = 1700000000; }, /RFC 3339/],
      ['a malformed modtime', (t) => { entry(t, 'd/small').modtime = 'yesterday'; }, /RFC 3339/],
      ['an impossible date', (t) => { entry(t, 'd/small').modtime = '2023-02-30T00:00:00Z'; }, /RFC 3339/],
      ['an unknown type', (t) => { entry(t, 'd/null').type = 'socket'; }, /unknown type/],
      ['a missing type', (t) => { delete entry(t, 'd/null').type; }, /unknown type/],
      ['a missing name', (t) => { delete entry(t, 'd/null').name; }, /no name/],
      ['an entry that is not an object', (t) => { (t.entries as unknown[]).push(null); }, /not an object/],
      ['an entry that is an array', (t) => { (t.entries as unknown[]).push([]); }, /not an object/],
      ['entries that are an object', (t) => { t.entries = {}; }, /"entries" is not an array/],
      ['a version given as a string', (t) => { t.version = '1'; }, /version/],
      ['a malformed tarSplitDigest', (t) => { t.tarSplitDigest = 'sha256:zz'; }, /tarSplitDigest/],
      ['a tarSplitDigest that is not a string', (t) => { t.tarSplitDigest = 5; }, /tarSplitDigest/],
    ];
    for (const [title, mutate, msg] of cases) {
      it(`rejects ${title}`, async () => {
        const t = rawToc();
        mutate(t);
        await assert.rejects(open(t), formatErr('TOC_INVALID', msg));
      });
    }

    const rawCases: Array<[string, (json: string) => string]> = [
      ['trailing data after the document', (j) => j + 'x'],
      ['a second document after the first', (j) => j + '{}'],
      ['non-JSON', () => 'not json at all'],
      ['an empty TOC', () => ''],
      ['a top-level array', () => '[]'],
      ['a top-level null', () => 'null'],
      ['a number beyond 2^53 in JSON', (j) => j.replace('"size":5000', '"size":9007199254740993')],
      ['a size of 1e300', (j) => j.replace('"size":5000', '"size":1e300')],
      ['an unterminated document', (j) => j.slice(0, -1)],
    ];
    for (const [title, edit] of rawCases) {
      it(`rejects ${title}`, async () => {
        const json = JSON.stringify(rawToc());
        assert.ok(json.includes('"size":5000'));
        await assert.rejects(open(edit(json)), formatErr('TOC_INVALID'));
      });
    }

    it('survives absurdly deep nesting in an unknown key (error or success, never a crash)', async () => {
      const t = JSON.stringify(rawToc());
      const json = `{"junk":${'['.repeat(200_000)}${']'.repeat(200_000)},${t.slice(1)}`;
      await open(json).then(
        (l) => assert.equal(l.toc.files.length, layer.toc.files.length),
        formatErr('TOC_INVALID'),
      );
    });

    it('counts a TOC\'s objects and arrays before parsing it, and refuses more than two per allowed entry', async () => {
      // 8 M "{}" in 24 MB, and no valid JSON after them: refused for the count, so JSON.parse never ran (it cannot
      // be interrupted; 150 MiB of "{}" kept a TOC worker busy for over ten minutes).
      const json = `{"entries":[${'{},'.repeat(8_000_017)}not json`;
      await assert.rejects(open(json), formatErr('TOC_INVALID', /more than 8000016 JSON objects and arrays .* 4000000 entries/));
    });

    it('rejects a TOC with more entries than allowed before decoding them', async () => {
      const json = `{"entries":[${'0,'.repeat(4_000_000)}0]}`; // not objects: decoding any would fail differently
      await assert.rejects(open(json), formatErr('TOC_INVALID', /4000001 entries exceed the limit of 4000000/));
    });

    it('rejects a TOC that is not zstd (with a valid digest)', async () => {
      const garbage = Buffer.from('this is not a zstd frame at all, but its digest is right');
      const toc = { offset: s.data.length + 8, compressed: garbage.length, uncompressed: 1000 };
      const blob = Buffer.concat([s.data, skippableHeader(garbage.length), garbage, encodeFooter(toc, { offset: 0, compressed: 0, uncompressed: 0 })]);
      const ann = formatChunkedAnnotations({ tocDigest: sha256Digest(garbage), toc });
      await assert.rejects(openChunkedLayer(memBlob(blob), ann), formatErr('ZSTD_INVALID', /TOC/));
    });
  });

  describe('what c/storage accepts is accepted', () => {
    it('keys in any case, with the tar-split check and DiffID intact', async () => {
      const json = JSON.stringify(rawToc(true))
        .replace(/"name":/g, '"Name":').replace(/"type":/g, '"TYPE":').replace(/"offset":/g, '"OffSet":')
        .replace('"entries":', '"Entries":').replace('"version":', '"VERSION":').replace('"tarSplitDigest":', '"TARSPLITDIGEST":');
      const a = assemble(s.data, json, { z: s.tarSplitZ, size: s.tarSplitSize });
      const l = await openChunkedLayer(memBlob(a.blob), a.annotations);
      assert.equal(l.toc.files.length, layer.toc.files.length);
      assert.equal((await verifyChunkedLayer(memBlob(a.blob), l)).diffID, s.result.diffID);
    });

    it('unknown keys at every level', async () => {
      const t = rawToc(true);
      t.future = { nested: [1, 2, { x: null }] };
      for (const e of entries(t)) e.someNewField = 'ignored';
      const l = await open(t, true);
      assert.equal(l.toc.files.length, layer.toc.files.length);
    });

    it('unknown keys named like Object.prototype members (constructor, __proto__, toString)', async () => {
      const json = JSON.stringify(rawToc()).replace(/"name":"d\/empty"/, '"name":"d/empty","constructor":5,"__proto__":{"x":1},"toString":[],"hasOwnProperty":null');
      assert.ok(json.includes('"constructor":5'));
      const l = await open(json);
      assert.equal(l.toc.files.find((f) => f.name === 'd/empty')!.type, 'reg');
    });

    it('null values as absent fields', async () => {
      const t = rawToc();
      entry(t, 'd/empty').mode = null;
      entry(t, 'd/empty').xattrs = null;
      const l = await open(t);
      assert.equal(l.toc.files.find((f) => f.name === 'd/empty')!.mode, 0);
    });

    it('entries: null (no files) and a missing entries key', async () => {
      assert.equal((await open('{"version":1,"entries":null}')).toc.files.length, 0);
      assert.equal((await open('{"version":1}')).toc.files.length, 0);
    });

    it('trailing whitespace after the document', async () => {
      assert.equal((await open(JSON.stringify(rawToc()) + ' \n')).toc.files.length, layer.toc.files.length);
    });

    it('any version number (c/storage does not check it)', async () => {
      const t = rawToc();
      t.version = 2;
      assert.equal((await open(t)).toc.version, 2);
    });

    it('absolute names, mapped inside the layer root like c/storage does', async () => {
      const t = rawToc();
      entry(t, 'd/empty').name = '/d/empty2';
      const f = (await open(t)).toc.files.find((x) => x.name === '/d/empty2')!;
      assert.equal(f.path, '/d/empty2');
    });

    it('files without endOffset: ranges inferred up to the next payload (into its header frame), still verified', async () => {
      const t = rawToc(true);
      for (const e of entries(t)) delete e.endOffset;
      const a = assemble(s.data, JSON.stringify(t), { z: s.tarSplitZ, size: s.tarSplitSize });
      const l = await openChunkedLayer(memBlob(a.blob), a.annotations);
      const small = l.toc.files.find((f) => f.name === 'd/small')!;
      assert.ok(small.chunks[0]!.end > layer.toc.files.find((f) => f.name === 'd/small')!.chunks[0]!.end);
      assert.equal((await verifyChunkedLayer(memBlob(a.blob), l)).diffID, s.result.diffID);
    });
  });

  describe('content the TOC lies about (DIGEST_MISMATCH on read)', () => {
    const readAll = async (t: RawToc, name: string) => {
      const a = assemble(s.data, JSON.stringify(t));
      const l = await openChunkedLayer(memBlob(a.blob), a.annotations);
      return collect(readFile(memBlob(a.blob), l.toc.files.find((f) => f.name === name)!));
    };

    it('a single-chunk file with the wrong digest', async () => {
      const t = rawToc();
      entry(t, 'd/small').digest = OTHER_DIGEST;
      await assert.rejects(readAll(t, 'd/small'), formatErr('DIGEST_MISMATCH', '"d/small"'));
    });

    it('a chunked file whose chunks verify but whose whole digest is wrong', async () => {
      const t = rawToc();
      entry(t, 'd/big').digest = OTHER_DIGEST;
      await assert.rejects(readAll(t, 'd/big'), formatErr('DIGEST_MISMATCH', /"d\/big": its chunks verify, but the whole file/));
    });

    it('a zeros chunk whose digest is not that of zeros', async () => {
      const t = rawToc();
      const z = entries(t).find((e) => e.chunkType === 'zeros')!;
      z.chunkDigest = OTHER_DIGEST;
      await assert.rejects(readAll(t, 'd/big'), formatErr('DIGEST_MISMATCH', /marked zeros/));
    });

    it('a data chunk marked as zeros', async () => {
      const t = rawToc();
      assert.equal(entries(t)[2]!.chunkType, undefined);
      entries(t)[2]!.chunkType = 'zeros';
      await assert.rejects(readAll(t, 'd/big'), formatErr('DIGEST_MISMATCH', /marked zeros/));
    });

    it('a chunk whose size is smaller than its frame holds', async () => {
      const t = rawToc();
      (entries(t)[2]!.chunkSize as number) -= 1;
      (entries(t)[3]!.chunkOffset as number) -= 1;
      (entries(t)[4]!.chunkOffset as number) -= 1;
      (entries(t)[5]!.chunkOffset as number) -= 1;
      (entries(t)[6]!.chunkOffset as number) -= 1;
      (entry(t, 'd/big').size as number) -= 1;
      await assert.rejects(readAll(t, 'd/big'), formatErr('DIGEST_MISMATCH', /holds more than/));
    });

    it('a tarSplitDigest that does not match the tar-split', async () => {
      const t = rawToc(true);
      t.tarSplitDigest = OTHER_DIGEST;
      await assert.rejects(open(t, true), formatErr('DIGEST_MISMATCH', /tar-split digest mismatch/));
    });
  });

  describe('TOC and tar-split disagreeing (TARSPLIT_MISMATCH)', () => {
    const cases: Array<[string, (t: RawToc) => void, RegExp]> = [
      ['mode', (t) => { entry(t, 'd/small').mode = 0o600; }, /"d\/small": mode 384 vs 420/],
      ['uid', (t) => { entry(t, 'd/small').uid = 0; }, /"d\/small": uid/],
      ['gid', (t) => { entry(t, 'd/small').gid = 7; }, /"d\/small": gid/],
      ['mtime (nanoseconds)', (t) => { entry(t, 'd/small').modtime = '2023-11-14T22:13:20.123456788Z'; }, /"d\/small": modtime/],
      ['an xattr value', (t) => { entry(t, 'd/attrs').xattrs = { 'security.capability': 'AQAAAg==', 'user.a': 'eQ==' }; }, /"d\/attrs": xattrs/],
      ['a missing xattr', (t) => { entry(t, 'd/attrs').xattrs = { 'user.a': 'eA==' }; }, /"d\/attrs": xattrs/],
      ['an extra xattr', (t) => { entry(t, 'd/small').xattrs = { 'user.a': 'eA==' }; }, /"d\/small": xattrs/],
      ['a symlink target', (t) => { entry(t, 'd/sym').linkName = '/etc/shadow'; }, /"d\/sym": linkName/],
      ['a device number', (t) => { entry(t, 'd/null').devMinor = 5; }, /"d\/null": devMinor/],
      ['a type', (t) => { entry(t, 'd/null').type = 'block'; }, /"d\/null": type char vs block|type block vs char/],
      ['an extra TOC entry', (t) => { entries(t).push({ type: 'dir', name: 'extra/' }); }, /TOC has 1 entries the tar-split lacks, e\.g\. "extra\/"/],
      ['a missing TOC entry', (t) => { t.entries = entries(t).filter((e) => e.name !== 'd/null'); }, /tar-split has an entry for "d\/null" that the TOC lacks/],
      ['a renamed entry', (t) => { entry(t, 'd/sym').name = 'd/sym2'; }, /"d\/sym" that the TOC lacks/],
      ['a differently spelled name (./d/small)', (t) => { entry(t, 'd/small').name = './d/small'; }, /"d\/small" that the TOC lacks/],
    ];
    for (const [title, mutate, msg] of cases) {
      it(`rejects a different ${title}`, async () => {
        const t = rawToc(true);
        mutate(t);
        await assert.rejects(open(t, true), formatErr('TARSPLIT_MISMATCH', msg));
      });
    }
  });

  describe('annotations', () => {
    const withAnn = (edit: (a: Record<string, string>) => void) => {
      const a = { ...s.result.annotations };
      edit(a);
      return openChunkedLayer(memBlob(s.blob), a);
    };
    const cases: Array<[string, (a: Record<string, string>) => void, string, RegExp]> = [
      ['a missing TOC digest', (a) => { delete a[ANNOTATION_TOC_DIGEST]; }, 'ANNOTATION_INVALID', /not zstd:chunked/],
      ['a malformed TOC digest', (a) => { a[ANNOTATION_TOC_DIGEST] = 'sha256:abc'; }, 'ANNOTATION_INVALID', /not a sha256 digest/],
      ['a missing position', (a) => { delete a[ANNOTATION_TOC_POSITION]; }, 'ANNOTATION_INVALID', /missing/],
      ['manifest type 2', (a) => { a[ANNOTATION_TOC_POSITION] = a[ANNOTATION_TOC_POSITION]!.replace(/:1$/, ':2'); }, 'ANNOTATION_INVALID', /manifest type 2/],
      ['three position fields', (a) => { a[ANNOTATION_TOC_POSITION] = a[ANNOTATION_TOC_POSITION]!.replace(/:1$/, ''); }, 'ANNOTATION_INVALID', /4 decimal fields/],
      ['five position fields', (a) => { a[ANNOTATION_TOC_POSITION] += ':1'; }, 'ANNOTATION_INVALID', /4 decimal fields/],
      ['a hexadecimal offset', (a) => { a[ANNOTATION_TOC_POSITION] = '0x10:' + a[ANNOTATION_TOC_POSITION]!.split(':').slice(1).join(':'); }, 'ANNOTATION_INVALID', /decimal/],
      ['a negative offset', (a) => { a[ANNOTATION_TOC_POSITION] = '-1:' + a[ANNOTATION_TOC_POSITION]!.split(':').slice(1).join(':'); }, 'ANNOTATION_INVALID', /decimal/],
      ['an exponent', (a) => { a[ANNOTATION_TOC_POSITION] = '1e3:' + a[ANNOTATION_TOC_POSITION]!.split(':').slice(1).join(':'); }, 'ANNOTATION_INVALID', /decimal/],
      ['spaces', (a) => { a[ANNOTATION_TOC_POSITION] = ' ' + a[ANNOTATION_TOC_POSITION]!; }, 'ANNOTATION_INVALID', /decimal/],
      ['an empty position', (a) => { a[ANNOTATION_TOC_POSITION] = ''; }, 'ANNOTATION_INVALID', /decimal/],
      ['a number beyond 2^53', (a) => { a[ANNOTATION_TOC_POSITION] = '99999999999999999999:1:1:1'; }, 'ANNOTATION_INVALID', /2\^53/],
      ['a TOC beyond the blob', (a) => { a[ANNOTATION_TOC_POSITION] = `${s.blob.length}:10:10:1`; }, 'ANNOTATION_INVALID', /beyond the blob/],
      ['a tar-split beyond the blob', (a) => { a[ANNOTATION_TARSPLIT_POSITION] = `${s.blob.length - 5}:10:10`; }, 'ANNOTATION_INVALID', /beyond the blob/],
      ['a malformed tar-split position', (a) => { a[ANNOTATION_TARSPLIT_POSITION] = '1:2'; }, 'ANNOTATION_INVALID', /3 decimal fields/],
      ['a TOC declared larger than 150 MiB (compressed)', (a) => { a[ANNOTATION_TOC_POSITION] = `100:${MAX_TOC_SIZE + 1}:100:1`; }, 'TOC_TOO_LARGE', /exceeds/],
      ['a TOC declared larger than 150 MiB (uncompressed)', (a) => {
        const [o, c] = a[ANNOTATION_TOC_POSITION]!.split(':');
        a[ANNOTATION_TOC_POSITION] = `${o}:${c}:${MAX_TOC_SIZE + 1}:1`;
      }, 'TOC_TOO_LARGE', /exceeds/],
      ['both zstd:chunked and eStargz annotations', (a) => { a[ANNOTATION_ESTARGZ_TOC_DIGEST] = OTHER_DIGEST; }, 'ANNOTATION_INVALID', /both/],
      ['a TOC that requires a tar-split without a tar-split position', (a) => { delete a[ANNOTATION_TARSPLIT_POSITION]; }, 'ANNOTATION_INVALID', /requires a tar-split/],
      ['a tar-split position at offset 0 (means absent)', (a) => { a[ANNOTATION_TARSPLIT_POSITION] = '0:0:0'; }, 'ANNOTATION_INVALID', /requires a tar-split/],
      ['a TOC position shifted by one byte', (a) => {
        const [o, c, u] = a[ANNOTATION_TOC_POSITION]!.split(':').map(Number);
        a[ANNOTATION_TOC_POSITION] = `${o! + 1}:${c}:${u}:1`;
      }, 'DIGEST_MISMATCH', /TOC digest mismatch/],
    ];
    for (const [title, edit, code, msg] of cases) {
      it(`rejects ${title}`, async () => {
        await assert.rejects(withAnn(edit), formatErr(code, msg));
      });
    }

    it('accepts leading zeros in positions, as Go\'s %d does', async () => {
      const l = await withAnn((a) => { a[ANNOTATION_TOC_POSITION] = '0' + a[ANNOTATION_TOC_POSITION]!.replace(/:1$/, ':01'); });
      assert.equal(l.toc.files.length, layer.toc.files.length);
    });

    it('reads far-apart TOC and tar-split sections one by one, never the blob in between', async () => {
      const reads: number[] = [];
      const spy: BlobReader = { size: s.blob.length, read: async (a, b) => { reads.push(b - a); return s.blob.subarray(a, b); } };
      const ann = { ...s.result.annotations, [ANNOTATION_TARSPLIT_POSITION]: `1:${s.tarSplitZ.length}:${s.tarSplitSize}` };
      await assert.rejects(openChunkedLayer(spy, ann), formatErr('DIGEST_MISMATCH', /tar-split digest mismatch/));
      assert.ok(Math.max(...reads) <= Math.max(s.tocZ.length, s.tarSplitZ.length), `reads of ${reads.join(', ')} bytes`);
    });

    it('refuses a tar-split declared larger than 1 GiB before reading anything', async () => {
      const never: BlobReader = { size: 2 ** 33, read: async () => assert.fail('read') };
      const ann = { ...s.result.annotations, [ANNOTATION_TARSPLIT_POSITION]: `${2 ** 31}:${2 ** 30 + 1}:10` };
      await assert.rejects(openChunkedLayer(never, ann), formatErr('TOC_TOO_LARGE', /tar-split/));
    });

    it('classifies layers like c/storage', () => {
      assert.equal(layerKind(s.result.annotations), 'zstd:chunked');
      assert.equal(layerKind({ [ANNOTATION_ESTARGZ_TOC_DIGEST]: OTHER_DIGEST }), 'estargz');
      assert.equal(layerKind({ [ANNOTATION_LEGACY_TOC_DIGEST]: OTHER_DIGEST }), 'zstd:chunked-legacy');
      assert.equal(layerKind({}), 'plain');
      assert.equal(layerKind(undefined), 'plain');
    });

    it('ignores the footer and unknown annotations', async () => {
      const bad = Buffer.from(s.blob);
      bad.fill(0, bad.length - 72);
      const l = await openChunkedLayer(memBlob(bad), { ...s.result.annotations, 'org.example.other': 'x' });
      assert.ok(l.tarSplit);
    });

    it('never throws anything but a FormatError for random position strings', async () => {
      const r = Buffer.from('0123456789:-x ');
      for (let i = 0; i < 300; i++) {
        const len = (i * 7) % 23;
        let v = '';
        for (let k = 0; k < len; k++) v += String.fromCharCode(r[(i * 31 + k * 17) % r.length]!);
        await withAnn((a) => { a[ANNOTATION_TOC_POSITION] = v; }).then(
          () => assert.fail(`accepted position ${JSON.stringify(v)}`),
          (e: unknown) => assert.ok(e instanceof FormatError, `${JSON.stringify(v)}: ${String(e)}`),
        );
      }
    });
  });
});

describe('format: hostile tar-splits (authenticated by the TOC, but malformed)', function () {
  this.timeout(60_000);
  let s: Seed;
  let tocBase: RawToc;
  let lines: TarSplitEntry[];
  before(async () => {
    s = await seedLayer();
    const layer = await openChunkedLayer(memBlob(s.blob), s.result.annotations);
    tocBase = JSON.parse(layer.tocJson) as RawToc;
    lines = layer.tarSplit!;
  });

  /** Open the seed layer with this tar-split text, its digest put in the TOC so only the content is on trial. */
  const openWith = async (text: string) => {
    const z = compressFrame(Buffer.from(text), 1);
    const a = assemble(s.data, JSON.stringify({ ...tocBase, tarSplitDigest: sha256Digest(z) }), { z, size: Buffer.byteLength(text) });
    const l = await openBothWays(memBlob(a.blob), a.annotations);
    return verifyChunkedLayer(memBlob(a.blob), l);
  };
  const encode = (es: TarSplitEntry[]) => es.map((e, i) => encodeTarSplitLine(e, i)).join('');
  const fileIndex = (name: string) => lines.findIndex((e) => e.type === 'file' && e.name === name);

  it('re-encoded unchanged, it verifies (the harness itself is sound)', async () => {
    assert.equal((await openWith(encode(lines))).diffID, s.result.diffID);
  });

  const cases: Array<[string, () => string, string, RegExp?]> = [
    ['a line that is not JSON', () => encode(lines) + 'nope\n', 'TARSPLIT_INVALID', /not JSON/],
    ['an unknown line type', () => encode(lines) + '{"type":3,"position":99}\n', 'TARSPLIT_INVALID', /unknown type/],
    ['a payload that is not base64', () => encode(lines) + '{"type":2,"payload":"!!","position":99}\n', 'TARSPLIT_INVALID', /base64/],
    ['a CRC that is not 8 bytes', () => encode(lines) + '{"type":1,"name":"zz","size":1,"payload":"AAAA","position":99}\n', 'TARSPLIT_INVALID', /8 bytes/],
    ['a negative size', () => encode(lines) + '{"type":1,"name":"zz","size":-1,"payload":null,"position":99}\n', 'TARSPLIT_INVALID', /bad size/],
    ['a duplicate path', () => {
      const i = fileIndex('d/empty');
      return encode([...lines.slice(0, i + 1), { type: 'file', name: './d/empty', size: 0, crc: null }, ...lines.slice(i + 1)]);
    }, 'TARSPLIT_INVALID', /duplicate path/],
    ['a wrong CRC-64', () => {
      const es = [...lines];
      const i = fileIndex('d/small');
      es[i] = { ...(es[i] as Extract<TarSplitEntry, { type: 'file' }>), crc: Buffer.alloc(8) };
      return encode(es);
    }, 'CRC_MISMATCH', /"d\/small": CRC-64/],
    ['a file size that differs from the content', () => {
      const es = [...lines];
      const i = fileIndex('d/small');
      es[i] = { ...(es[i] as Extract<TarSplitEntry, { type: 'file' }>), size: 5000 - 512 }; // same padding
      return encode(es);
    }, 'CRC_MISMATCH', /"d\/small"/],
    ['content wanted for a name that is not a regular file', () => {
      const es = [...lines];
      const i = fileIndex('d/sym');
      es[i] = { type: 'file', name: 'd/sym', size: 512, crc: Buffer.alloc(8) };
      return encode(es);
    }, 'TARSPLIT_MISMATCH', /"d\/sym", which is not a regular file/],
    ['a file entry hidden after the end-of-archive blocks', () => encode([...lines, { type: 'file', name: 'ghost', size: 0, crc: null }]), 'TARSPLIT_INVALID', /after the end-of-archive/],
    ['a header segment that is not a tar header', () => {
      const es = [...lines];
      const i = fileIndex('d/small') - 1;
      es[i] = { type: 'segment', payload: Buffer.alloc(2048, 0x41) };
      return encode(es);
    }, 'TARSPLIT_INVALID', /no valid tar header: .*checksum/],
    ['a header segment cut short', () => {
      const es = [...lines];
      const i = fileIndex('d/small') - 1;
      const seg = es[i] as Extract<TarSplitEntry, { type: 'segment' }>;
      es[i] = { type: 'segment', payload: seg.payload.subarray(0, seg.payload.length - 1) };
      return encode(es);
    }, 'TARSPLIT_INVALID', /no valid tar header/],
    ['a header segment shorter than the padding it must start with', () => {
      const es = [...lines];
      const i = fileIndex('d/empty') - 1; // follows d/small (5000 bytes: 120 bytes of padding)
      es[i] = { type: 'segment', payload: Buffer.alloc(10) };
      return encode(es);
    }, 'TARSPLIT_INVALID', /padding/],
  ];
  for (const [title, text, code, msg] of cases) {
    it(`rejects ${title}`, async () => {
      await assert.rejects(openWith(text()), formatErr(code, msg));
    });
  }

  it('counts the lines before parsing any, and refuses more than two per allowed TOC entry', async () => {
    // Not JSON at all: had a line been parsed first, the error would say so.
    await assert.rejects(openWith('x\n'.repeat(8_004_097)), formatErr('TARSPLIT_INVALID', /more than 8004096 lines/));
  });

  it('accepts trailing bytes after the end-of-archive blocks (the writer keeps them for the DiffID)', async () => {
    const v = await openWith(encode([...lines, { type: 'segment', payload: Buffer.from('trailing junk') }]));
    assert.notEqual(v.diffID, s.result.diffID);
    assert.equal(v.diffSize, s.tar.length + 13);
  });
});
