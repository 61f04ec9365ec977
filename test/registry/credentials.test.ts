import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CredentialResolver, CredentialStore, defaultAuthFiles, RegistryAuthError, RegistryConfigError } from '../../src/registry/index.js';

const b64 = (s: string) => Buffer.from(s).toString('base64');

describe('registry/credentials', () => {
  let dir: string;
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'tocfs-creds-')); });
  after(async () => { await rm(dir, { recursive: true, force: true }); });

  const file = async (name: string, doc: unknown): Promise<string> => {
    const p = join(dir, name);
    await writeFile(p, typeof doc === 'string' ? doc : JSON.stringify(doc));
    return p;
  };

  it('lists auth files like containers/image', () => {
    const home = '/home/u';
    assert.deepEqual(defaultAuthFiles({}, home, 0), ['/run/containers/0/auth.json', '/home/u/.config/containers/auth.json', '/home/u/.docker/config.json']);
    assert.deepEqual(defaultAuthFiles({ XDG_RUNTIME_DIR: '/run/user/1000', XDG_CONFIG_HOME: '/cfg', DOCKER_CONFIG: '/dk' }, home, 1000),
      ['/run/user/1000/containers/auth.json', '/cfg/containers/auth.json', '/dk/config.json']);
    assert.deepEqual(defaultAuthFiles({ REGISTRY_AUTH_FILE: '/x/auth.json' }, home, 0), ['/x/auth.json']);
  });

  it('prefers the most specific key, then the registry, and decodes user:pass', async () => {
    const p = await file('auth1.json', { auths: {
      'quay.io': { auth: b64('reg:regpass') },
      'quay.io/team': { auth: b64('team:teampass:with:colons') },
    } });
    const r = new CredentialResolver(new CredentialStore(), { authFiles: [p] });
    assert.deepEqual((await r.lookup('quay.io', 'team/app'))?.credentials, { username: 'team', password: 'teampass:with:colons' });
    assert.deepEqual((await r.lookup('quay.io', 'other/app'))?.credentials, { username: 'reg', password: 'regpass' });
    assert.equal(await r.lookup('ghcr.io', 'x/y'), undefined);
  });

  it('maps the legacy docker.io key and URL keys', async () => {
    const p = await file('docker.json', { auths: {
      'https://index.docker.io/v1/': { auth: b64('hub:hubpass') },
      'http://my.registry:5000/v2/': { auth: b64('m:mp') },
    } });
    const r = new CredentialResolver(new CredentialStore(), { authFiles: [p] });
    assert.equal((await r.lookup('docker.io', 'library/alpine'))?.credentials.username, 'hub');
    assert.equal((await r.lookup('my.registry:5000', 'a'))?.credentials.username, 'm');
  });

  it('searches files in order and the in-memory store first', async () => {
    const a = await file('a.json', { auths: { 'r.example': { auth: b64('first:1') } } });
    const b = await file('b.json', { auths: { 'r.example': { auth: b64('second:2') }, 's.example': { auth: b64('s:3') } } });
    const store = new CredentialStore();
    const r = new CredentialResolver(store, { authFiles: [join(dir, 'missing.json'), a, b] });
    assert.equal((await r.lookup('r.example', 'x'))?.credentials.username, 'first');
    assert.equal((await r.lookup('s.example', 'x'))?.credentials.username, 's');
    store.set('r.example/x:latest', { username: 'helper', password: 'h' });
    const found = await r.lookup('r.example', 'x');
    assert.equal(found?.credentials.username, 'helper');
    assert.doesNotMatch(found!.source, /h$/, 'the source names no secret');
    assert.equal((await r.lookup('r.example', 'y'))?.credentials.username, 'first', 'store key is repository-specific');
    const before = store.generation;
    store.set(`r.example/y@sha256:${'0'.repeat(64)}`, { username: 'by-digest', password: 'd' });
    assert.equal((await r.lookup('r.example', 'y'))?.credentials.username, 'by-digest');
    assert.ok(store.generation > before, 'changes bump the generation');
  });

  it('runs docker-credential helpers (credHelpers, then credsStore) with the server on stdin', async () => {
    const bin = join(dir, 'bin');
    await mkdir(bin, { recursive: true });
    const log = join(dir, 'helper.log');
    const script = `#!/bin/sh\nread server\necho "$1 $server" >> ${log}\n` +
      `case "$server" in\n  helped.example) echo '{"ServerURL":"helped.example","Username":"hu","Secret":"hs"}';;\n` +
      `  token.example) echo '{"ServerURL":"token.example","Username":"<token>","Secret":"refresh"}';;\n` +
      `  *) echo 'credentials not found in native keychain'; exit 1;;\nesac\n`;
    await writeFile(join(bin, 'docker-credential-fake'), script);
    await chmod(join(bin, 'docker-credential-fake'), 0o755);
    const p = await file('helpers.json', { credHelpers: { 'helped.example': 'fake' }, credsStore: 'fake', auths: { 'plain.example': { auth: b64('p:q') } } });
    const r = new CredentialResolver(new CredentialStore(), { authFiles: [p], helperPath: bin });
    assert.deepEqual((await r.lookup('helped.example', 'a'))?.credentials, { username: 'hu', password: 'hs' });
    assert.deepEqual((await r.lookup('token.example', 'a'))?.credentials, { identityToken: 'refresh' });
    assert.equal((await r.lookup('plain.example', 'a'))?.credentials.username, 'p');
    assert.equal(await r.lookup('nothing.example', 'a'), undefined);
    const { readFile } = await import('node:fs/promises');
    assert.deepEqual((await readFile(log, 'utf8')).trim().split('\n'), ['get helped.example', 'get token.example', 'get nothing.example']);

    const missing = await file('missing-helper.json', { credHelpers: { 'x.example': 'does-not-exist' } });
    await assert.rejects(new CredentialResolver(new CredentialStore(), { authFiles: [missing] }).lookup('x.example', 'a'),
      (e: unknown) => e instanceof RegistryAuthError && /docker-credential-does-not-exist/.test(e.message));
  });

  it('names the file when it is broken, without printing its content', async () => {
    const p = await file('broken.json', '{"auths": {"a": {"auth": "c2VjcmV0"}');
    await assert.rejects(new CredentialResolver(new CredentialStore(), { authFiles: [p] }).lookup('a', 'b'),
      (e: unknown) => e instanceof RegistryConfigError && e.message.includes(p) && !e.message.includes('c2VjcmV0'));
    const q = await file('nocolon.json', { auths: { a: { auth: b64('no-colon-here') } } });
    await assert.rejects(new CredentialResolver(new CredentialStore(), { authFiles: [q] }).lookup('a', 'b'),
      (e: unknown) => e instanceof RegistryConfigError && !e.message.includes('no-colon-here'));
  });
});
