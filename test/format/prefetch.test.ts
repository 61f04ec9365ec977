import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  ANNOTATION_PREFETCH, formatHintLine, formatPrefetchArtifact, formatPrefetchHint, parseHintLine, parsePrefetchArtifact, parsePrefetchHint,
  parseReadRecord, PREFETCH_LIMITS, RANGE_LIMITS,
} from '../../src/format/index.js';
import { formatErr } from './helpers.js';

const hint = (value: string) => ({ [ANNOTATION_PREFETCH]: value });

describe('format: prefetch hint annotation', () => {
  it('round-trips paths: cleaned, absolute, first occurrence kept, order kept', () => {
    const value = formatPrefetchHint(['usr/bin/app', '/etc//hosts', '/usr/bin/app', '/a/./b/../c', '/']);
    assert.deepEqual(JSON.parse(value), ['/usr/bin/app', '/etc/hosts', '/a/c']);
    assert.deepEqual(parsePrefetchHint(hint(value)), ['/usr/bin/app', '/etc/hosts', '/a/c']);
  });

  it('round-trips the attached-artifact form ({"paths": [...]}) and refuses malformed ones', () => {
    const blob = formatPrefetchArtifact(['/usr/bin/python3', 'lib/x.so', '/usr/bin/python3']);
    assert.deepEqual(JSON.parse(blob.toString()), { paths: ['/usr/bin/python3', '/lib/x.so'] });
    assert.deepEqual(parsePrefetchArtifact(blob), { paths: ['/usr/bin/python3', '/lib/x.so'], ranges: new Map() });
    assert.throws(() => parsePrefetchArtifact(Buffer.from('nope')), formatErr('ANNOTATION_INVALID', /prefetch artifact is not JSON/));
    assert.throws(() => parsePrefetchArtifact(Buffer.from('{"paths": 3}')), formatErr('ANNOTATION_INVALID', /not a JSON array of paths/));
  });

  it('carries the byte ranges read of partly read files: sorted, merged, only for listed paths', () => {
    const blob = formatPrefetchArtifact(['/usr/lib/big.so', '/etc/hosts'], new Map([
      ['usr/lib/big.so', [[4096, 8192], [0, 100], [8000, 9000]]],
      ['/not/listed', [[0, 1]]],
    ]));
    assert.deepEqual(JSON.parse(blob.toString()), { paths: ['/usr/lib/big.so', '/etc/hosts'], ranges: { '/usr/lib/big.so': [[0, 100], [4096, 9000]] } });
    const back = parsePrefetchArtifact(blob);
    assert.deepEqual(back.paths, ['/usr/lib/big.so', '/etc/hosts']);
    assert.deepEqual([...back.ranges], [['/usr/lib/big.so', [[0, 100], [4096, 9000]]]]);
    const bad = (ranges: unknown) => Buffer.from(JSON.stringify({ paths: ['/a'], ranges }));
    assert.throws(() => parsePrefetchArtifact(bad([])), formatErr('ANNOTATION_INVALID', /"ranges" is not an object/));
    assert.throws(() => parsePrefetchArtifact(bad({ '/b': [[0, 1]] })), formatErr('ANNOTATION_INVALID', /ranges for "\/b", which is not among its paths/));
    assert.throws(() => parsePrefetchArtifact(bad({ '/a': [[5, 5]] })), formatErr('ANNOTATION_INVALID', /not a \[start, end\] pair/));
    assert.throws(() => parsePrefetchArtifact(bad({ '/a': [[-1, 5]] })), formatErr('ANNOTATION_INVALID', /not a \[start, end\] pair/));
    assert.throws(() => parsePrefetchArtifact(bad({ '/a': [[0, 2 ** 60]] })), formatErr('ANNOTATION_INVALID', /not a \[start, end\] pair/));
    assert.throws(() => parsePrefetchArtifact(bad({ '/a': 'x' })), formatErr('ANNOTATION_INVALID', /not a list of at most 4096/));
    const many = Array.from({ length: RANGE_LIMITS.perFile + 1 }, (_, i) => [i * 2, i * 2 + 1]);
    assert.throws(() => parsePrefetchArtifact(bad({ '/a': many })), formatErr('ANNOTATION_INVALID', /at most 4096/));
  });

  it('reads a node\'s own record of reads without a hint\'s size bounds, in both its forms', () => {
    const many = Array.from({ length: PREFETCH_LIMITS.paths + 1 }, (_, i) => `/f${i}`);
    const ranges = Array.from({ length: RANGE_LIMITS.perFile + 1 }, (_, i) => [i * 2, i * 2 + 1]);
    const record = { paths: many, ranges: { '/f0': ranges } };
    assert.throws(() => parsePrefetchArtifact(Buffer.from(JSON.stringify(record))), formatErr('ANNOTATION_INVALID', /limit/), 'a hint that big is refused');
    const back = parseReadRecord(record);
    assert.equal(back.paths.length, PREFETCH_LIMITS.paths + 1);
    assert.equal(back.ranges.get('/f0')!.length, RANGE_LIMITS.perFile + 1);
    assert.deepEqual(parseReadRecord(['/a', 3, 'b']), { paths: ['/a', '/b'], ranges: new Map() }, 'the bare list of earlier versions');
    assert.throws(() => parseReadRecord({ paths: ['/a'], ranges: { '/a': [[3, 1]] } }), formatErr('ANNOTATION_INVALID', /not a \[start, end\] pair/), 'still checked');
  });

  it('writes and reads list lines with ranges (`tocfs reads` → `tocfs hint`)', () => {
    assert.equal(formatHintLine('/usr/lib/x.so', [[0, 4096], [65536, 131072]]), '/usr/lib/x.so @0-4096,65536-131072');
    assert.equal(formatHintLine('/etc/hosts'), '/etc/hosts');
    assert.deepEqual(parseHintLine('/usr/lib/x.so @0-4096,65536-131072'), { path: '/usr/lib/x.so', ranges: [[0, 4096], [65536, 131072]] });
    assert.deepEqual(parseHintLine('/a file @ home'), { path: '/a file @ home' });
    assert.throws(() => parseHintLine('/x @9-3'), formatErr('ANNOTATION_INVALID', /not a \[start, end\] pair/));
    fc.assert(fc.property(
      fc.stringMatching(/^\/[a-z@ ]{0,12}$/),
      fc.array(fc.tuple(fc.nat(1 << 20), fc.integer({ min: 1, max: 1 << 16 })), { maxLength: 8 }),
      (path, spans) => {
        const ranges = spans.map(([s, n]) => [s, s + n] as [number, number]);
        const back = parseHintLine(formatHintLine(path, ranges));
        assert.equal(back.path, path);
        // Back as the same byte set: sorted and merged.
        const covered = (rs: [number, number][] | undefined, x: number) => (rs ?? []).some(([s, e]) => s <= x && x < e);
        for (const [s, e] of ranges) for (const x of [s, e - 1, e]) assert.equal(covered(back.ranges, x), covered(ranges, x));
      },
    ));
  });

  it('reads no hint as an empty list, and cleans what a hostile writer put there', () => {
    assert.deepEqual(parsePrefetchHint(undefined), []);
    assert.deepEqual(parsePrefetchHint({ other: 'x' }), []);
    // A path can never climb out of the layer: it is resolved in the tree, from the root.
    assert.deepEqual(parsePrefetchHint(hint('["../../etc/shadow", "a/../../b"]')), ['/etc/shadow', '/b']);
  });

  it('refuses malformed hints with a FormatError naming the annotation', () => {
    assert.throws(() => parsePrefetchHint(hint('not json')), formatErr('ANNOTATION_INVALID', /io\.github\.tocfs\.prefetch is not JSON/));
    assert.throws(() => parsePrefetchHint(hint('{"a":1}')), formatErr('ANNOTATION_INVALID', /not a JSON array of paths/));
    assert.throws(() => parsePrefetchHint(hint('["/a", 3]')), formatErr('ANNOTATION_INVALID', /not a JSON array of paths/));
    assert.throws(() => parsePrefetchHint(hint(' '.repeat(PREFETCH_LIMITS.bytes + 1))), formatErr('ANNOTATION_INVALID', /more than the 1048576-byte limit/));
    const many = JSON.stringify(Array.from({ length: PREFETCH_LIMITS.paths + 1 }, (_, i) => `/${i}`));
    assert.throws(() => parsePrefetchHint(hint(many)), formatErr('ANNOTATION_INVALID', /65537 paths, more than the limit of 65536/));
  });

  it('refuses to write a hint over the limits', () => {
    assert.throws(() => formatPrefetchHint(Array.from({ length: PREFETCH_LIMITS.paths + 1 }, (_, i) => `/f${i}`)), formatErr('ANNOTATION_INVALID', /exceeds the limit of 65536/));
    assert.throws(() => formatPrefetchHint(Array.from({ length: 5000 }, (_, i) => `/${'x'.repeat(300)}${i}`)), formatErr('ANNOTATION_INVALID', /bytes exceeds the limit/));
  });

  it('parses whatever it wrote (property)', () => {
    fc.assert(fc.property(fc.array(fc.string({ maxLength: 40 }), { maxLength: 50 }), (paths) => {
      const parsed = parsePrefetchHint(hint(formatPrefetchHint(paths)));
      assert.ok(parsed.every((p) => p.startsWith('/') && !p.split('/').includes('..')));
      assert.equal(new Set(parsed).size, parsed.length);
    }));
  });
});
