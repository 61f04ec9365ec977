import assert from 'node:assert/strict';
import { isDigest, parseDigest, sha256Digest } from '../../src/util/index.js';

describe('util/digest', () => {
  it('hashes like sha256sum', () => {
    assert.equal(sha256Digest(Buffer.from('')), 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  });
  it('accepts only canonical sha256 digests', () => {
    assert.ok(isDigest('sha256:' + 'a'.repeat(64)));
    assert.ok(!isDigest('sha256:' + 'A'.repeat(64)));
    assert.ok(!isDigest('sha512:' + 'a'.repeat(64)));
    assert.throws(() => parseDigest('sha256:xyz', 'TOC entry "a"'), /TOC entry "a"/);
  });
});
