import assert from 'node:assert/strict';
import fc from 'fast-check';
import { InvalidReferenceError, parseReference, withDigest } from '../../src/registry/index.js';

const D = `sha256:${'a'.repeat(64)}` as const;

describe('registry/reference', () => {
  const normalised: [string, string][] = [
    ['alpine', 'docker.io/library/alpine:latest'],
    ['alpine:3.20', 'docker.io/library/alpine:3.20'],
    ['library/alpine', 'docker.io/library/alpine:latest'],
    ['user/repo', 'docker.io/user/repo:latest'],
    ['docker.io/alpine', 'docker.io/library/alpine:latest'],
    ['index.docker.io/alpine', 'docker.io/library/alpine:latest'],
    ['index.docker.io/user/repo:tag', 'docker.io/user/repo:tag'],
    [`alpine@${D}`, `docker.io/library/alpine@${D}`],
    [`alpine:3.20@${D}`, `docker.io/library/alpine:3.20@${D}`],
    ['quay.io/podman/hello', 'quay.io/podman/hello:latest'],
    ['localhost/x', 'localhost/x:latest'],
    ['localhost:5000/x', 'localhost:5000/x:latest'],
    ['localhost:5000/x:5000', 'localhost:5000/x:5000'],
    ['127.0.0.1:5000/a/b/c:t', '127.0.0.1:5000/a/b/c:t'],
    ['foo:5000', 'docker.io/library/foo:5000'],
    ['localhost', 'docker.io/library/localhost:latest'],
    ['example.com/a.b__c-d---e/f_g:T_a.g-1', 'example.com/a.b__c-d---e/f_g:T_a.g-1'],
    ['[::1]:5000/x', '[::1]:5000/x:latest'],
  ];
  for (const [input, want] of normalised) {
    it(`normalises ${input}`, () => {
      const ref = parseReference(input);
      assert.equal(ref.string, want);
      assert.equal(parseReference(ref.string).string, want, 'normalisation is idempotent');
    });
  }

  it('splits into domain, path, tag and digest', () => {
    const ref = parseReference(`localhost:5000/ns/app:v1@${D}`);
    assert.deepEqual({ domain: ref.domain, path: ref.path, name: ref.name, tag: ref.tag, digest: ref.digest },
      { domain: 'localhost:5000', path: 'ns/app', name: 'localhost:5000/ns/app', tag: 'v1', digest: D });
    assert.equal(withDigest(ref, D).string, `localhost:5000/ns/app@${D}`);
  });

  const invalid: [string, RegExp][] = [
    ['', /empty/],
    ['Alpine', /lowercase/],
    ['docker.io/Library/alpine', /lowercase/],
    ['quay.io/UPPER/x', /lowercase/],
    ['a'.repeat(64).replace(/a/g, 'f'), /image ID/],
    ['alpine:', /tag/],
    ['alpine:-x', /tag/],
    [`alpine:${'t'.repeat(129)}`, /tag/],
    ['alpine@sha256:abc', /not a valid digest/],
    [`alpine@sha512:${'a'.repeat(128)}`, /only sha256/],
    [`alpine@sha256:${'A'.repeat(64)}`, /only sha256/],
    ['quay.io/', /empty/],
    ['quay.io//x', /path component/],
    ['a/b_/c', /path component/],
    ['a/-b', /path component/],
    ['-bad.com/x', /registry host/],
    ['with space', /whitespace/],
    [`example.com/${'a'.repeat(250)}`, /longer than 255/],
  ];
  for (const [input, why] of invalid) {
    it(`rejects ${JSON.stringify(input.length > 40 ? input.slice(0, 40) + '…' : input)}`, () => {
      assert.throws(() => parseReference(input), (err: unknown) => {
        assert.ok(err instanceof InvalidReferenceError);
        assert.equal(err.code, 'REGISTRY_INVALID_REFERENCE');
        assert.equal(err.input, input);
        assert.match(err.message, why);
        return true;
      });
    });
  }

  it('accepts names of exactly 255 characters', () => {
    const path = 'a'.repeat(255 - 'example.com/'.length);
    assert.equal(parseReference(`example.com/${path}`).name.length, 255);
  });

  it('round-trips generated references', () => {
    const comp = fc.stringMatching(/^[a-z0-9]{1,8}([._-][a-z0-9]{1,8}){0,2}$/);
    const tag = fc.stringMatching(/^\w[\w.-]{0,20}$/);
    fc.assert(fc.property(fc.array(comp, { minLength: 1, maxLength: 4 }), tag, fc.boolean(), (parts, t, withHost) => {
      const name = (withHost ? 'reg.example:5000/' : 'quay.io/') + parts.join('/');
      const ref = parseReference(`${name}:${t}`);
      assert.equal(ref.string, `${name}:${t}`);
      assert.equal(ref.tag, t);
    }));
  });
});
