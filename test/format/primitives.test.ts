import assert from 'node:assert/strict';
import { posix } from 'node:path';
import fc from 'fast-check';
import { decompress } from 'zstd-napi';
import {
  Chunker, Crc64, FOOTER_FRAME_SIZE, FormatError, cleanAbsPath, compressFrame, crc64, decodeFooter, decodeToc,
  decompressFrames, encodeFooter, encodeToc, formatRfc3339Nano, goClean, parseRfc3339, skippableHeader,
  type ChunkBoundary, type TocEntry,
} from '../../src/format/index.js';
import { goQuote } from '../../src/format/gojson.js';
import { formatErr, pseudoRandom } from './helpers.js';

// ---- CRC-64/GO-ISO ------------------------------------------------------------------------------------------

/** Bit-by-bit CRC-64/GO-ISO with BigInt, straight from the definition: the slow second opinion. */
function crc64Reference(data: Uint8Array): string {
  const poly = 0xd800000000000000n;
  let crc = 0xffffffffffffffffn;
  for (const b of data) {
    crc ^= BigInt(b);
    for (let k = 0; k < 8; k++) crc = crc & 1n ? (crc >> 1n) ^ poly : crc >> 1n;
  }
  return (crc ^ 0xffffffffffffffffn).toString(16).padStart(16, '0');
}

describe('format primitives: CRC-64/GO-ISO', () => {
  it('has the check value b90956c775a41001 and 0 for empty input', () => {
    assert.equal(crc64(Buffer.from('123456789')).toString('hex'), 'b90956c775a41001');
    assert.equal(crc64(Buffer.alloc(0)).toString('hex'), '0000000000000000');
    assert.equal(crc64(Buffer.alloc(0)).toString('base64'), 'AAAAAAAAAAA=');
  });

  it('agrees with a bitwise reference for any data, however it is fed', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 3000 }), fc.array(fc.nat(), { maxLength: 6 }), (data, cuts) => {
      const c = new Crc64();
      let at = 0;
      for (const cut of [...cuts.map((x) => x % (data.length + 1))].sort((a, b) => a - b)) {
        c.update(data.subarray(at, Math.max(at, cut)));
        at = Math.max(at, cut);
      }
      c.update(data.subarray(at));
      assert.equal(c.digest().toString('hex'), crc64Reference(data));
    }), { numRuns: 200 });
  });
});

// ---- Go JSON string escaping --------------------------------------------------------------------------------

describe('format primitives: goQuote (Go encoding/json strings)', () => {
  const cases: Array<[string, string]> = [
    ['plain', '"plain"'],
    ['<a href="x">&</a>', '"\\u003ca href=\\"x\\"\\u003e\\u0026\\u003c/a\\u003e"'],
    ['\u2028\u2029', '"\\u2028\\u2029"'],
    ['\b\f\n\r\t', '"\\b\\f\\n\\r\\t"'],
    ['\u0000\u0001\u001f', '"\\u0000\\u0001\\u001f"'],
    ['\u007f', '"\u007f"'],
    ['back\\slash', '"back\\\\slash"'],
    ['ünïcødé 名前 😀', '"ünïcødé 名前 😀"'],
    ['lone \ud800 surrogate', '"lone \ufffd surrogate"'],
    ['lone low \udc00', '"lone low \ufffd"'],
  ];
  for (const [input, want] of cases) {
    it(`quotes ${JSON.stringify(input)} as Go does`, () => assert.equal(goQuote(input), want));
  }

  it('always produces JSON that parses back to the input (well-formed strings)', () => {
    fc.assert(fc.property(fc.string({ unit: 'grapheme', maxLength: 40 }), (s) => {
      assert.equal(JSON.parse(goQuote(s)), s);
      assert.doesNotMatch(goQuote(s), /[<>&\u2028\u2029\u0000-\u001f]/);
    }), { numRuns: 300 });
  });
});

// ---- RFC 3339 -----------------------------------------------------------------------------------------------

describe('format primitives: RFC 3339 times', () => {
  const parsed: Array<[string, number, number]> = [
    ['2023-11-14T22:13:20Z', 1700000000, 0],
    ['2023-11-14T22:13:20.123456789Z', 1700000000, 123456789],
    ['2023-11-14T22:13:20.1Z', 1700000000, 100000000],
    ['2023-11-15T00:13:20+02:00', 1700000000, 0],
    ['2023-11-14T19:43:20.5-02:30', 1700000000, 500000000],
    ['2023-11-14t22:13:20z', 1700000000, 0],
    ['1970-01-01T00:00:00Z', 0, 0],
    ['1969-12-31T23:59:59.5Z', -1, 500000000],
    ['0001-01-01T00:00:00Z', -62135596800, 0],
    ['0050-03-01T00:00:00Z', -60584198400, 0],
    ['0000-01-01T00:00:00Z', -62167219200, 0],
    ['2024-02-29T12:00:00Z', 1709208000, 0],
    ['9999-12-31T23:59:59.999999999Z', 253402300799, 999999999],
  ];
  for (const [s, sec, nsec] of parsed) {
    it(`parses ${s}`, () => assert.deepEqual(parseRfc3339(s), { sec, nsec }));
  }

  const invalid = [
    '', '2023-11-14', '2023-11-14T22:13:20', '2023-11-14 22:13:20Z', '2023-13-01T00:00:00Z', '2023-00-01T00:00:00Z',
    '2023-02-29T00:00:00Z', '2023-04-31T00:00:00Z', '2023-11-14T24:00:00Z', '2023-11-14T23:60:00Z',
    '2023-11-14T23:59:60Z', '2023-11-14T22:13:20.Z', '2023-11-14T22:13:20.1234567890Z', '2023-11-14T22:13:20+0200',
    '23-11-14T22:13:20Z', '+2023-11-14T22:13:20Z', '2023-11-14T22:13:20ZZ', ' 2023-11-14T22:13:20Z',
  ];
  for (const s of invalid) {
    it(`rejects ${JSON.stringify(s)}`, () => assert.equal(parseRfc3339(s), undefined));
  }

  it('formats like Go (UTC, fraction trimmed, years padded)', () => {
    assert.equal(formatRfc3339Nano({ sec: 0, nsec: 0 }), '1970-01-01T00:00:00Z');
    assert.equal(formatRfc3339Nano({ sec: 1700000000, nsec: 120000000 }), '2023-11-14T22:13:20.12Z');
    assert.equal(formatRfc3339Nano({ sec: 1700000000, nsec: 1 }), '2023-11-14T22:13:20.000000001Z');
    assert.equal(formatRfc3339Nano({ sec: -1, nsec: 500000000 }), '1969-12-31T23:59:59.5Z');
    assert.equal(formatRfc3339Nano({ sec: -62135596800, nsec: 0 }), '0001-01-01T00:00:00Z');
    assert.equal(formatRfc3339Nano({ sec: -60584198400, nsec: 0 }), '0050-03-01T00:00:00Z');
    assert.throws(() => formatRfc3339Nano({ sec: 253402300800, nsec: 0 }), RangeError);
  });

  it('parse(format(t)) is t for every instant in years 0-9999', () => {
    fc.assert(fc.property(fc.integer({ min: -62167219200, max: 253402300799 }), fc.integer({ min: 0, max: 999_999_999 }), (sec, nsec) => {
      assert.deepEqual(parseRfc3339(formatRfc3339Nano({ sec, nsec })), { sec, nsec });
    }), { numRuns: 500 });
  });
});

// ---- Chunker ------------------------------------------------------------------------------------------------

/**
 * The chunking rules of §5.2 written as plainly as possible (bup rollsum per byte, holes of ≥ 1024 zeros): the
 * second opinion on the optimised Chunker.
 */
function referenceChunks(data: Uint8Array): ChunkBoundary[] {
  const win = new Uint8Array(64);
  let s1 = 64 * 31, s2 = 64 * 63 * 31, wofs = 0;
  const roll = (ch: number): boolean => {
    const drop = win[wofs]!;
    s1 = (s1 + ch - drop) >>> 0;
    s2 = (s2 + s1 - 64 * (drop + 31)) >>> 0;
    win[wofs] = ch;
    wofs = (wofs + 1) & 63;
    return (s2 & 0xffff) === 0xffff;
  };
  const out: ChunkBoundary[] = [];
  let start = 0;
  let i = 0;
  while (i < data.length) {
    if (data[i] === 0) {
      let j = i;
      while (j < data.length && data[j] === 0) j++;
      if (j - i >= 1024) {
        if (i > start) out.push({ end: i, zeros: false });
        for (let k = i; k < j; k++) roll(0);
        out.push({ end: j, zeros: true });
        start = j;
      } else {
        for (let k = i; k < j; k++) if (roll(0)) { out.push({ end: k + 1, zeros: false }); start = k + 1; }
      }
      i = j;
      continue;
    }
    if (roll(data[i]!)) { out.push({ end: i + 1, zeros: false }); start = i + 1; }
    i++;
  }
  if (data.length > start) out.push({ end: data.length, zeros: false });
  return out;
}

function chunkAll(data: Uint8Array, cuts: number[] = []): ChunkBoundary[] {
  const c = new Chunker();
  const out: ChunkBoundary[] = [];
  let at = 0;
  for (const cut of [...cuts].sort((a, b) => a - b)) {
    if (cut <= at || cut >= data.length) continue;
    c.push(data.subarray(at, cut), out);
    at = cut;
  }
  c.push(data.subarray(at), out);
  return c.finish(out);
}

const contentArb = fc.array(fc.oneof(
  fc.record({ kind: fc.constant('data' as const), len: fc.integer({ min: 1, max: 90_000 }), seed: fc.integer() }),
  fc.record({ kind: fc.constant('zeros' as const), len: fc.oneof(fc.constantFrom(1, 63, 64, 65, 1023, 1024, 1025), fc.integer({ min: 1, max: 5000 })), seed: fc.constant(0) }),
), { maxLength: 8 }).map((parts) => Buffer.concat(parts.map((p) => (p.kind === 'zeros' ? Buffer.alloc(p.len) : pseudoRandom(p.len, p.seed)))));

describe('format primitives: Chunker (rollsum and holes)', () => {
  it('matches the plain reference and ignores how the input is split', () => {
    fc.assert(fc.property(contentArb, fc.array(fc.nat(), { maxLength: 12 }), (data, cuts) => {
      const want = referenceChunks(data);
      assert.deepEqual(chunkAll(data), want);
      assert.deepEqual(chunkAll(data, cuts.map((c) => c % (data.length + 1))), want);
    }), { numRuns: 150 });
  });

  it('makes a hole of a run of exactly 1024 zeros, not of 1023', () => {
    const d = pseudoRandom(500, 1);
    const with1023 = chunkAll(Buffer.concat([d, Buffer.alloc(1023), d]));
    const with1024 = chunkAll(Buffer.concat([d, Buffer.alloc(1024), d]));
    assert.ok(with1023.every((c) => !c.zeros));
    assert.deepEqual(with1024, [{ end: 500, zeros: false }, { end: 1524, zeros: true }, { end: 2024, zeros: false }]);
  });

  it('makes one zeros chunk of a file that is all zeros, and a data chunk of fewer than 1024 zeros', () => {
    assert.deepEqual(chunkAll(Buffer.alloc(5_000_000), [1, 4096, 1 << 20]), [{ end: 5_000_000, zeros: true }]);
    assert.deepEqual(chunkAll(Buffer.alloc(1023)), [{ end: 1023, zeros: false }]);
    assert.deepEqual(chunkAll(Buffer.alloc(0)), []);
  });

  it('splits data, hole, data into three chunks at the hole edges', () => {
    const a = pseudoRandom(3000, 2), b = pseudoRandom(2000, 3);
    const got = chunkAll(Buffer.concat([a, Buffer.alloc(4096), b]), [3000, 3001, 7096]);
    assert.deepEqual(got.map((c) => c.zeros), [false, true, false]);
    assert.deepEqual(got.map((c) => c.end), [3000, 7096, 9096]);
  });

  it('reports `decided` short of a trailing zero run until it is decided', () => {
    const c = new Chunker();
    c.push(Buffer.concat([pseudoRandom(100, 4), Buffer.alloc(50)]));
    assert.equal(c.decided, 100);
    c.push(Buffer.from([7]));
    assert.equal(c.decided, 151);
  });
});

// ---- footer -------------------------------------------------------------------------------------------------

function legacyFooter(payloadSize: 40 | 56, toc: [number, number, number]): Buffer {
  const p = Buffer.alloc(payloadSize);
  toc.forEach((v, i) => p.writeBigUInt64LE(BigInt(v), i * 8));
  p.writeBigUInt64LE(1n, 24);
  p.write('GnUlInUx', 32, 'latin1');
  return Buffer.concat([skippableHeader(payloadSize), p]);
}

describe('format primitives: footer', () => {
  const toc = { offset: 1597107, compressed: 2433, uncompressed: 8598 };
  const ts = { offset: 1599548, compressed: 2166, uncompressed: 45050 };

  it('encodes 72 bytes that decode to the same sections, ending in GNUlInUx', () => {
    const f = encodeFooter(toc, ts);
    assert.equal(f.length, FOOTER_FRAME_SIZE);
    assert.equal(f.subarray(64).toString('latin1'), 'GNUlInUx');
    assert.deepEqual(decodeFooter(Buffer.concat([Buffer.alloc(100, 7), f])), { kind: 'current', toc, tarSplit: ts });
  });

  it('decodes the legacy 40-byte GnUlInUx footer and the broken 56-byte one', () => {
    assert.deepEqual(decodeFooter(Buffer.concat([Buffer.alloc(30), legacyFooter(40, [10, 20, 30])])), { kind: 'legacy-40', toc: { offset: 10, compressed: 20, uncompressed: 30 } });
    assert.deepEqual(decodeFooter(legacyFooter(56, [11, 21, 31])), { kind: 'legacy-56', toc: { offset: 11, compressed: 21, uncompressed: 31 } });
  });

  it('omits the tar-split of a current footer whose tar-split offset is 0', () => {
    assert.deepEqual(decodeFooter(encodeFooter(toc, { offset: 0, compressed: 0, uncompressed: 0 })), { kind: 'current', toc });
  });

  it('rejects garbage, short tails, a wrong type and numbers beyond 2^53', () => {
    assert.throws(() => decodeFooter(Buffer.alloc(72)), formatErr('FOOTER_INVALID', /no zstd:chunked footer/));
    assert.throws(() => decodeFooter(Buffer.alloc(20)), formatErr('FOOTER_INVALID', /too short/));
    const wrongType = encodeFooter(toc, ts);
    wrongType.writeBigUInt64LE(2n, 8 + 24);
    assert.throws(() => decodeFooter(wrongType), formatErr('FOOTER_INVALID', /type 2/));
    const huge = encodeFooter(toc, ts);
    huge.writeBigUInt64LE(2n ** 60n, 8);
    assert.throws(() => decodeFooter(huge), formatErr('FOOTER_INVALID', /2\^53/));
    const lowerMagic = encodeFooter(toc, ts);
    lowerMagic.write('GnUlInUx', 64, 'latin1');
    assert.throws(() => decodeFooter(lowerMagic), formatErr('FOOTER_INVALID'));
  });
});

// ---- zstd frames --------------------------------------------------------------------------------------------

/** A hand-made zstd frame of `blocks` RLE blocks of 128 KiB zeros: a few bytes that expand enormously. */
function zeroBomb(blocks: number): Buffer {
  const header = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38]); // magic, FHD (no size, no checksum), 128 KiB window
  const parts = [header];
  for (let i = 0; i < blocks; i++) {
    const v = ((128 * 1024) << 3) | (1 << 1) | (i === blocks - 1 ? 1 : 0); // size, RLE, last
    parts.push(Buffer.from([v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, 0x00]));
  }
  return Buffer.concat(parts);
}

describe('format primitives: decompressFrames', () => {
  it('decodes the hand-made RLE frame as zstd itself does (the bomb below is real)', () => {
    const small = zeroBomb(3);
    const want = Buffer.alloc(3 * 128 * 1024);
    assert.ok(decompress(small).equals(want));
    assert.ok(decompressFrames(small, want.length, 'rle', 'exact').equals(want));
  });

  it('refuses 100 MiB of zeros from 3 KiB with a 1 MiB limit, fast and without allocating it', () => {
    const bomb = zeroBomb(800);
    assert.ok(bomb.length < 4000);
    const before = process.memoryUsage().arrayBuffers;
    const t0 = process.hrtime.bigint();
    assert.throws(() => decompressFrames(bomb, 1 << 20, 'bomb'), formatErr('ZSTD_INVALID', /bomb: decompresses to more than the declared 1048576 bytes/));
    assert.throws(() => decompressFrames(bomb, 1 << 20, 'bomb', 'prefix'), formatErr('ZSTD_INVALID', /more than/));
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const grown = process.memoryUsage().arrayBuffers - before;
    assert.ok(ms < 2000, `${ms} ms`);
    assert.ok(grown < 32 << 20, `array buffers grew by ${grown} bytes`);
  });

  it('skips skippable frames, concatenates frames, and checks exact sizes', () => {
    const a = compressFrame(Buffer.from('hello '), 3), b = compressFrame(Buffer.from('world'), 3);
    const src = Buffer.concat([skippableHeader(3), Buffer.from('abc'), a, skippableHeader(0), b]);
    assert.equal(decompressFrames(src, 100, 'x').toString(), 'hello world');
    assert.equal(decompressFrames(src, 11, 'x', 'exact').toString(), 'hello world');
    assert.throws(() => decompressFrames(src, 12, 'x', 'exact'), formatErr('ZSTD_INVALID', /11 bytes, expected 12/));
    assert.throws(() => decompressFrames(src, 10, 'x'), formatErr('ZSTD_INVALID', /more than/));
  });

  it('in prefix mode, ignores what follows the wanted frame but insists the frame ends there', () => {
    const a = compressFrame(Buffer.from('chunk'), 3);
    const next = compressFrame(Buffer.from('next header frame'), 3);
    assert.equal(decompressFrames(Buffer.concat([a, next]), 5, 'x', 'prefix').toString(), 'chunk');
    assert.throws(() => decompressFrames(next, 5, 'x', 'prefix'), formatErr('ZSTD_INVALID', /holds more than/));
    assert.throws(() => decompressFrames(a.subarray(0, a.length - 2), 5, 'x', 'prefix'), formatErr('ZSTD_INVALID', /truncated/));
  });

  it('rejects truncated frames, truncated skippable frames and garbage with ZSTD_INVALID', () => {
    const a = compressFrame(pseudoRandom(1000, 1), 3);
    assert.throws(() => decompressFrames(a.subarray(0, a.length - 5), 2000, 'x'), formatErr('ZSTD_INVALID', /truncated/));
    assert.throws(() => decompressFrames(Buffer.concat([skippableHeader(100), Buffer.alloc(10)]), 2000, 'x'), formatErr('ZSTD_INVALID', /skippable/));
    assert.throws(() => decompressFrames(Buffer.from('definitely not zstd'), 2000, 'x'), formatErr('ZSTD_INVALID'));
    const flipped = Buffer.from(a);
    flipped[flipped.length - 1] ^= 1; // the content checksum
    assert.throws(() => decompressFrames(flipped, 2000, 'x'), (e: unknown) => e instanceof FormatError);
  });
});

// ---- paths and TOC encoding ---------------------------------------------------------------------------------

describe('format primitives: paths', () => {
  const clean: Array<[string, string]> = [
    ['', '.'], ['.', '.'], ['./', '.'], ['a//b', 'a/b'], ['a/./b/', 'a/b'], ['/../a', '/a'], ['../a', '../a'],
    ['a/../..', '..'], ['/', '/'], ['//a', '/a'], ['a/b/../c', 'a/c'], ['./d/empty/', 'd/empty'],
  ];
  for (const [p, want] of clean) it(`goClean(${JSON.stringify(p)}) = ${JSON.stringify(want)}`, () => assert.equal(goClean(p), want));

  it('goClean agrees with path.posix.normalize (less its trailing slash) for any spelling', () => {
    // An independent reference: Node's lexical normalisation, which differs from path.Clean only in keeping a trailing "/".
    const reference = (p: string): string => {
      const n = posix.normalize(p);
      return n.length > 1 && n.endsWith('/') ? n.slice(0, -1) : n;
    };
    fc.assert(fc.property(fc.array(fc.constantFrom('a', 'b.', '.', '..', '/', '...', '.a'), { maxLength: 12 }), (parts) => {
      const p = parts.join('');
      assert.equal(goClean(p), reference(p), JSON.stringify(p));
    }), { numRuns: 5000 });
  });

  it('cleanAbsPath keeps every name inside the root', () => {
    assert.equal(cleanAbsPath('../../etc/passwd'), '/etc/passwd');
    assert.equal(cleanAbsPath('./'), '/');
    fc.assert(fc.property(fc.array(fc.constantFrom('a', '..', '.', '', 'b'), { maxLength: 10 }), (parts) => {
      const p = cleanAbsPath(parts.join('/'));
      assert.ok(p.startsWith('/') && !p.split('/').includes('..') && !p.split('/').includes('.'));
    }), { numRuns: 300 });
  });
});

describe('format primitives: TOC JSON', () => {
  const pos = fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER });
  const time = fc.record({ sec: fc.integer({ min: -62135596799, max: 253402300799 }), nsec: fc.integer({ min: 0, max: 999_999_999 }) })
    .map((t) => ({ sec: t.sec, nsec: t.nsec }));
  const entryArb = fc.record({
    type: fc.constantFrom<TocEntry['type']>('reg', 'hardlink', 'symlink', 'char', 'block', 'dir', 'fifo', 'chunk'),
    name: fc.string({ unit: 'grapheme', maxLength: 20 }),
    linkName: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 20 }),
    mode: pos, size: pos, uid: pos, gid: pos, modtime: time, accesstime: time, changetime: time, devMajor: pos, devMinor: pos,
    xattrs: fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }), fc.uint8Array({ minLength: 1, maxLength: 10 }).map((b) => Buffer.from(b).toString('base64')), { minKeys: 1, maxKeys: 3 }),
    digest: fc.constant('sha256:' + 'a'.repeat(64)), offset: pos, endOffset: pos, chunkSize: pos, chunkOffset: pos,
    chunkDigest: fc.constant('sha256:' + 'b'.repeat(64)), chunkType: fc.constant('zeros'),
  }, { requiredKeys: ['type', 'name'] });

  it('decodeToc(encodeToc(doc)) is doc, and the encoding is stable', () => {
    fc.assert(fc.property(fc.array(entryArb, { maxLength: 5 }), (raw) => {
      const entries = raw.map((e) => JSON.parse(JSON.stringify(e), (k, v) => v) as TocEntry);
      for (const [i, e] of entries.entries()) for (const k of ['modtime', 'accesstime', 'changetime'] as const) if (raw[i]![k]) e[k] = { ...raw[i]![k]! };
      const doc = { version: 1, entries, tarSplitDigest: 'sha256:' + 'c'.repeat(64) };
      const json = encodeToc(doc);
      const back = decodeToc(json);
      assert.deepEqual(back, doc);
      assert.equal(encodeToc(back), json);
    }), { numRuns: 200 });
  });
});
