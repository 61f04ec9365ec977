import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ANNOTATION_PREFETCH, formatPrefetchArtifact, formatPrefetchHint, parsePrefetchArtifact, parsePrefetchHint, PREFETCH_LIMITS } from '../../src/format/index.js';
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
    assert.deepEqual(parsePrefetchArtifact(blob), ['/usr/bin/python3', '/lib/x.so']);
    assert.throws(() => parsePrefetchArtifact(Buffer.from('nope')), formatErr('ANNOTATION_INVALID', /prefetch artifact is not JSON/));
    assert.throws(() => parsePrefetchArtifact(Buffer.from('{"paths": 3}')), formatErr('ANNOTATION_INVALID', /not a JSON array of paths/));
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
