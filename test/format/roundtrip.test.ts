import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decompress } from 'zstd-napi';
import {
  openChunkedLayer, readFile, verifyChunkedLayer, type LayerFile,
} from '../../src/format/index.js';
import { sha256Digest } from '../../src/util/index.js';
import { collect, convert, memBlob, pseudoRandom } from './helpers.js';
import { TarBuilder, type BuiltEntry, type EntryKind, type LongNameStyle, type TarTimeSpec } from './tar-builder.js';

// ---- generators -------------------------------------------------------------------------------------------

const component = fc.oneof(
  { weight: 4, arbitrary: fc.stringMatching(/^[a-z0-9_-][a-z0-9._-]{0,11}$/) },
  { weight: 2, arbitrary: fc.constantFrom('usr', 'bin', 'ünïcødé', '名前', 'emoji😀', 'sp ace', 'q"<>&\\', 'tab\tnl\n', '.wh.x', '.wh..wh..opq', 'a\u2028b') },
  { weight: 1, arbitrary: fc.integer({ min: 60, max: 200 }).map((n) => 'L'.repeat(n)) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 6 }) },
).filter((c) => c !== '.' && c !== '..' && !c.includes('/') && !c.includes('\0') && Buffer.byteLength(c) <= 255);

const nameArb = fc.record({
  parts: fc.array(component, { minLength: 1, maxLength: 7 }),
  dotSlash: fc.boolean(),
});

const timeArb: fc.Arbitrary<TarTimeSpec> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ sec: fc.integer({ min: 0, max: 2 ** 33 - 1 }), nsec: fc.constant(0) }) },
  { weight: 2, arbitrary: fc.record({ sec: fc.integer({ min: 0, max: 2 ** 34 }), nsec: fc.integer({ min: 1, max: 999_999_999 }) }) },
  { weight: 1, arbitrary: fc.record({ sec: fc.integer({ min: -1e9, max: -1 }), nsec: fc.integer({ min: 0, max: 999_999_999 }) }) },
);

const idArb = fc.oneof(fc.constant(0), fc.constant(1000), fc.integer({ min: 0, max: 0o7777777 }), fc.integer({ min: 0o10000000, max: 0xffffffff }));

const xattrArb = fc.dictionary(
  fc.oneof(fc.stringMatching(/^user\.[a-z0-9._-]{1,12}$/), fc.constantFrom('security.capability', 'trusted.overlay.x', 'user.ünï')),
  fc.uint8Array({ minLength: 1, maxLength: 48 }),
  { maxKeys: 3 },
);

const zeroRunArb = fc.record({
  where: fc.constantFrom('start', 'middle', 'end'),
  len: fc.oneof(fc.constantFrom(1023, 1024, 1025, 4096), fc.integer({ min: 1, max: 3000 })),
});

const sizeArb = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(0, 1, 511, 512, 513, 65536) },
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 6000 }) },
  { weight: 1, arbitrary: fc.integer({ min: 100_000, max: 400_000 }) },
);

const entryArb = fc.record({
  kind: fc.constantFrom<EntryKind>('file', 'file', 'file', 'dir', 'symlink', 'hardlink', 'char', 'block', 'fifo'),
  name: nameArb,
  size: sizeArb,
  seed: fc.integer(),
  zeroRuns: fc.array(zeroRunArb, { maxLength: 3 }),
  oldTypeflag: fc.boolean(),
  mode: fc.integer({ min: 0, max: 0o7777 }),
  uid: idArb,
  gid: idArb,
  mtime: timeArb,
  atime: fc.option(timeArb, { freq: 4 }),
  ctime: fc.option(timeArb, { freq: 4 }),
  xattrs: xattrArb,
  target: fc.oneof(fc.stringMatching(/^[a-z./]{1,40}$/), fc.integer({ min: 101, max: 300 }).map((n) => '../'.repeat(n / 3) + 't')),
  linkPick: fc.nat(),
  major: fc.oneof(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 0xffffffff })),
  minor: fc.oneof(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 0xffffffff })),
});

type EntryGen = typeof entryArb extends fc.Arbitrary<infer T> ? T : never;

const layerArb = fc.record({
  entries: fc.uniqueArray(entryArb, {
    minLength: 0, maxLength: 14,
    selector: (e) => e.name.parts.join('/'),
  }),
  style: fc.constantFrom<LongNameStyle>('pax', 'gnu', 'ustar-prefix'),
  recordSize: fc.constantFrom(0, 10240),
  trailing: fc.oneof({ weight: 4, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 3000 }) }),
  cuts: fc.array(fc.nat(), { maxLength: 8 }),
});

function content(e: EntryGen): Buffer {
  const b = pseudoRandom(e.size, e.seed);
  for (const z of e.zeroRuns) {
    const len = Math.min(z.len, b.length);
    const at = z.where === 'start' ? 0 : z.where === 'end' ? b.length - len : Math.floor((b.length - len) / 2);
    b.fill(0, at, at + len);
  }
  return b;
}

/** Build the tar a generated layer describes; hardlinks point at an earlier regular file (or become fifos). */
function buildTar(l: typeof layerArb extends fc.Arbitrary<infer T> ? T : never): { tar: Buffer; entries: BuiltEntry[] } {
  const t = new TarBuilder(l.style);
  const files: string[] = [];
  for (const e of l.entries) {
    const name = (e.name.dotSlash ? './' : '') + e.name.parts.join('/');
    const opts = {
      mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime, xattrs: e.xattrs,
      ...(e.atime ? { atime: e.atime } : {}), ...(e.ctime ? { ctime: e.ctime } : {}),
    };
    switch (e.kind) {
      case 'file':
        t.file(name, content(e), { ...opts, ...(e.oldTypeflag ? { typeflag: '\0' } : {}) });
        files.push(name);
        break;
      case 'dir': t.dir(e.oldTypeflag ? name + '/' : name, { ...opts, ...(e.oldTypeflag ? { typeflag: '\0' } : {}) }); break;
      case 'symlink': t.symlink(name, e.target, opts); break;
      case 'hardlink':
        if (files.length === 0) t.fifo(name, opts);
        else t.hardlink(name, files[e.linkPick % files.length]!, opts);
        break;
      case 'char': t.charDevice(name, e.major, e.minor, opts); break;
      case 'block': t.blockDevice(name, e.major, e.minor, opts); break;
      case 'fifo': t.fifo(name, opts); break;
    }
  }
  const tar = t.build({ ...(l.recordSize ? { recordSize: l.recordSize } : {}), ...(l.trailing ? { trailing: l.trailing } : {}) });
  return { tar, entries: t.entries };
}

const TOC_TYPE: Record<EntryKind, string> = {
  file: 'reg', hardlink: 'hardlink', symlink: 'symlink', char: 'char', block: 'block', dir: 'dir', fifo: 'fifo',
};

/** What the TOC must say about an entry, compared field by field. */
function assertMetadata(f: LayerFile, e: BuiltEntry): void {
  const at = `entry ${JSON.stringify(e.name)}`;
  assert.equal(f.type, TOC_TYPE[e.kind], at);
  assert.equal(f.name, e.name, at);
  assert.equal(f.mode, e.mode, `${at} mode`);
  assert.equal(f.uid, e.uid, `${at} uid`);
  assert.equal(f.gid, e.gid, `${at} gid`);
  assert.equal(f.size, e.content.length, `${at} size`);
  assert.deepEqual(f.modtime, { sec: e.mtime.sec, nsec: e.mtime.nsec }, `${at} mtime`);
  const plain = (t: TarTimeSpec | undefined) => (t ? { sec: t.sec, nsec: t.nsec } : undefined);
  assert.deepEqual(f.accesstime, plain(e.atime), `${at} atime`);
  assert.deepEqual(f.changetime, plain(e.ctime), `${at} ctime`);
  assert.equal(f.linkName ?? '', e.linkName, `${at} linkName`);
  assert.equal(f.devMajor, e.devMajor, `${at} devMajor`);
  assert.equal(f.devMinor, e.devMinor, `${at} devMinor`);
  assert.deepEqual(f.xattrs ?? new Map(), e.xattrs, `${at} xattrs`);
  if (e.kind === 'file') assert.equal(f.digest, sha256Digest(e.content), `${at} digest`);
}

/** FC_SCALE=10 runs ten times as many cases (for a deeper local search; CI keeps the default). */
const SCALE = Number(process.env.FC_SCALE ?? 1);

// ---- properties -------------------------------------------------------------------------------------------

describe('format: round trip of random tars through writer and reader', function () {
  this.timeout(120_000);

  it('keeps DiffID, size, content and metadata, whatever the input pieces', async () => {
    // What the random layers actually exercised: checked at the end so the generators cannot silently go weak.
    const seen = { multiChunk: 0, zerosChunk: 0, hardlink: 0, longName: 0, xattrs: 0, nsec: 0, device: 0, trailing: 0 };
    await fc.assert(fc.asyncProperty(layerArb, async (l) => {
      const { tar, entries } = buildTar(l);
      const { blob, result } = await convert(tar, l.cuts.map((c) => c % (tar.length + 1)));
      const diffID = sha256Digest(tar);
      assert.equal(result.diffID, diffID);
      assert.equal(result.diffSize, tar.length);
      assert.equal(result.blobSize, blob.length);
      assert.equal(result.blobDigest, sha256Digest(blob));
      // Any zstd decoder sees the exact input tar (skippable frames are skipped).
      assert.ok(decompress(blob).equals(tar), 'blob decompresses to the input tar');

      const reader = memBlob(blob);
      const layer = await openChunkedLayer(reader, result.annotations);
      assert.equal(layer.diffSize, tar.length);
      const v = await verifyChunkedLayer(reader, layer);
      assert.equal(v.diffID, diffID);
      assert.equal(v.diffSize, tar.length);

      assert.equal(layer.toc.files.length, entries.length);
      for (const [i, e] of entries.entries()) {
        const f = layer.toc.files[i]!;
        assertMetadata(f, e);
        if (f.chunks.length > 1) seen.multiChunk++;
        if (f.chunks.some((c) => c.zeros)) seen.zerosChunk++;
        if (f.type === 'hardlink') seen.hardlink++;
        if (f.type === 'char' || f.type === 'block') seen.device++;
        if (Buffer.byteLength(f.name) > 100) seen.longName++;
        if (f.xattrs && f.xattrs.size > 0) seen.xattrs++;
        if (f.modtime && f.modtime.nsec > 0) seen.nsec++;
        if (f.type === 'reg') {
          const got = await collect(readFile(reader, f));
          assert.ok(got.equals(e.content), `content of ${JSON.stringify(e.name)}`);
          // Chunks tile the file exactly, in order.
          let at = 0;
          for (const c of f.chunks) { assert.equal(c.fileOffset, at); at += c.size; }
          assert.equal(at, f.size);
        }
      }
      if (l.trailing) seen.trailing++;
    }), { numRuns: 150 * SCALE });
    for (const [what, n] of Object.entries(seen)) assert.ok(n > 0, `no ${what} in ${150 * SCALE} random layers`);
  });

  it('produces byte-identical blobs for any split of the input', async () => {
    await fc.assert(fc.asyncProperty(layerArb, fc.array(fc.nat(), { minLength: 1, maxLength: 30 }), async (l, cuts) => {
      const { tar } = buildTar(l);
      const whole = await convert(tar, tar.length + 1);
      const split = await convert(tar, cuts.map((c) => c % (tar.length + 1)));
      assert.equal(split.result.blobDigest, whole.result.blobDigest);
      assert.ok(split.blob.equals(whole.blob));
    }), { numRuns: 60 * SCALE });
  });

  it('converts tiny piece sizes (1 and 7 bytes) to the same blob', async () => {
    const t = new TarBuilder('gnu')
      .dir('d/')
      .file('d/' + 'n'.repeat(150), Buffer.concat([pseudoRandom(3000, 1), Buffer.alloc(1500), pseudoRandom(700, 2)]))
      .file('d/z', Buffer.alloc(2048))
      .symlink('d/s', 'x'.repeat(120));
    const tar = t.build({ recordSize: 10240, trailing: Buffer.from('junk') });
    const ref = await convert(tar, tar.length);
    for (const piece of [1, 7]) {
      const { blob } = await convert(tar, piece);
      assert.ok(blob.equals(ref.blob), `pieces of ${piece} bytes`);
    }
  });
});
