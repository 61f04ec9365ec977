import assert from 'node:assert/strict';
import { parseWwwAuthenticate } from '../../src/registry/auth.js';
import { backoffDelay, redactUrl } from '../../src/registry/http.js';

describe('registry/auth and http helpers', () => {
  it('parses WWW-Authenticate challenges like distribution and Docker Hub send them', () => {
    assert.deepEqual(parseWwwAuthenticate('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"'), [
      { scheme: 'bearer', params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/alpine:pull' } },
    ]);
    assert.deepEqual(parseWwwAuthenticate('Basic realm="tocfs-test"'), [{ scheme: 'basic', params: { realm: 'tocfs-test' } }]);
    assert.deepEqual(parseWwwAuthenticate('Basic realm="a, b", Bearer realm="https://x/t",error="insufficient_scope"').map((c) => c.scheme), ['basic', 'bearer']);
    assert.deepEqual(parseWwwAuthenticate('Bearer realm="q\\"uote",service=plain').at(0)?.params, { realm: 'q"uote', service: 'plain' });
    assert.deepEqual(parseWwwAuthenticate(''), []);
  });

  it('backs off exponentially with jitter inside [d/2, d]', () => {
    const policy = { maxAttempts: 5, maxTotalMs: 1000, baseDelayMs: 100, maxDelayMs: 350 };
    assert.equal(backoffDelay(policy, 1, () => 0), 50);
    assert.equal(backoffDelay(policy, 1, () => 1), 100);
    assert.equal(backoffDelay(policy, 2, () => 1), 200);
    assert.equal(backoffDelay(policy, 5, () => 1), 350);
    assert.equal(backoffDelay(policy, 5, () => 0), 175);
  });

  it('redacts query strings (signed URLs) from messages', () => {
    assert.equal(redactUrl('https://s3.example/bucket/blob?X-Amz-Signature=secret'), 'https://s3.example/bucket/blob?…');
    assert.equal(redactUrl('http://127.0.0.1:5000/v2/'), 'http://127.0.0.1:5000/v2/');
  });
});
