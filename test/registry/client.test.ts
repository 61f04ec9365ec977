import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdir, readFile, writeFile, mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { sha256Digest, type Digest } from '../../src/util/index.js';
import { DigestMismatchError, ManifestError, MediaType, RegistryAuthError, RegistryNotFoundError, RegistryPlainHttpError, RegistryUnavailableError, CredentialStore,
  type RegistryClient } from '../../src/registry/index.js';
import { startFaultProxy } from '../helpers/fault-proxy.js';
import { startRedirectFront } from '../helpers/redirect-front.js';
import { startRegistry, type RegistryServer } from '../helpers/registry-server.js';
import { descriptorOf, pushImage, testClient } from './fixtures.js';

/** Path of a blob's data file in docker-registry's filesystem storage. */
function blobFile(reg: RegistryServer, digest: Digest): string {
  const hex = digest.slice('sha256:'.length);
  return join(reg.storageDir, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
}

describe('registry/client against docker-registry without auth', function () {
  this.timeout(60_000);
  let reg: RegistryServer;
  let client: RegistryClient;
  before(async () => {
    reg = await startRegistry();
    client = testClient([reg.host]);
  });
  after(async () => {
    await client?.close();
    await reg?.stop();
  });

  it('pushes an image and an index, then resolves and reads them back with every digest verified', async () => {
    const repo = `${reg.host}/tocfs/app`;
    const amd = await pushImage(client, repo, 'amd64', [0, 1000, 300 * 1024]);
    const arm = await pushImage(client, repo, 'arm64', [5000], { docker: true, architecture: 'arm64' });
    const index = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: MediaType.OciIndex,
      manifests: [
        { ...descriptorOf(amd.manifest, MediaType.OciManifest), platform: { os: 'linux', architecture: 'amd64' } },
        { ...descriptorOf(arm.manifest, MediaType.DockerManifest), platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
        { mediaType: MediaType.OciManifest, digest: amd.manifestDigest, size: amd.manifest.length, platform: { os: 'unknown', architecture: 'unknown' } },
      ],
    }));
    const indexDigest = await client.pushManifest(`${repo}:multi`, index, MediaType.OciIndex);
    assert.equal(indexDigest, sha256Digest(index));

    const reader = testClient([reg.host]);
    try {
      for (const [platform, image] of [['amd64', amd], ['arm64', arm]] as const) {
        const resolved = await reader.resolveImage(`${repo}:multi`, { platform: { os: 'linux', architecture: platform } });
        assert.equal(resolved.index?.digest, indexDigest);
        assert.equal(resolved.manifest.digest, image.manifestDigest);
        assert.ok(resolved.manifest.bytes.equals(image.manifest));
        assert.ok(resolved.configBytes.equals(image.config));
        assert.equal(resolved.config.architecture, platform);
        assert.equal(resolved.candidates.length, 1);
        for (const [i, layer] of resolved.manifest.manifest.layers.entries()) {
          const source = await reader.getBlobSource(resolved.reference, layer);
          const [whole] = await source.readRanges([{ start: 0, end: source.size }]);
          assert.equal(sha256Digest(whole!), layer.digest);
          assert.equal(sha256Digest(whole!), resolved.config.diffIds[i]);
        }
      }
      const byTag = await reader.fetchManifest(`${repo}:amd64`);
      assert.equal(byTag.digest, amd.manifestDigest);
      assert.equal(byTag.manifest.kind, 'manifest');
      const byDigest = await reader.fetchManifest(`${repo}@${arm.manifestDigest}`);
      assert.equal(byDigest.mediaType, MediaType.DockerManifest);
    } finally {
      await reader.close();
    }
  });

  it('skips existing blobs, mounts across repositories, and uploads in chunks and from files', async () => {
    const data = Buffer.alloc(200_000, 7);
    const a = `${reg.host}/push/a:1`;
    assert.equal((await client.pushBlob(a, data)).outcome, 'uploaded');
    assert.equal((await client.pushBlob(a, data)).outcome, 'exists');
    const mounted = await client.pushBlob(`${reg.host}/push/b:1`, data, { mountFrom: 'push/a' });
    assert.equal(mounted.outcome, 'mounted');
    assert.equal(await client.blobExists(`${reg.host}/push/b:1`, mounted.digest), true);

    const chunked = Buffer.from(Array.from({ length: 100_001 }, (_, i) => i % 253));
    const up = await client.pushBlob(`${reg.host}/push/c:1`, chunked, { chunkSize: 30_000 });
    assert.equal(up.outcome, 'uploaded');
    assert.ok((await client.fetchBlob(`${reg.host}/push/c:1`, up)).equals(chunked));

    const dir = await mkdtemp(join(tmpdir(), 'tocfs-push-'));
    try {
      const file = join(dir, 'layer');
      const content = Buffer.alloc(70_000, 3);
      await writeFile(file, content);
      const desc = { path: file, size: content.length, digest: sha256Digest(content) };
      assert.equal((await client.pushBlob(`${reg.host}/push/d:1`, desc, { chunkSize: 32_768 })).outcome, 'uploaded');
      assert.equal((await client.pushBlob(`${reg.host}/push/e:1`, desc)).outcome, 'uploaded');
      assert.equal(await client.statBlob(`${reg.host}/push/e:1`, desc.digest), content.length);
      const wrong = { ...desc, digest: sha256Digest(Buffer.from('other')) };
      await assert.rejects(client.pushBlob(`${reg.host}/push/f:1`, wrong), /DIGEST_INVALID|digest/i);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    assert.equal(await client.statBlob(`${reg.host}/push/a:1`, sha256Digest(Buffer.from('absent'))), undefined);
  });

  it('pushes manifests by digest and checks Docker-Content-Digest of manifests fetched by tag', async () => {
    const repo = `${reg.host}/tocfs/bydigest`;
    const img = await pushImage(client, repo, 'v1', [100]);
    const other = Buffer.from(JSON.stringify({ ...JSON.parse(img.manifest.toString()), annotations: { n: '2' } }));
    const digest = sha256Digest(other);
    assert.equal(await client.pushManifest(`${repo}@${digest}`, other, MediaType.OciManifest), digest);
    assert.ok((await client.fetchManifest(`${repo}@${digest}`)).bytes.equals(other));
    await assert.rejects(client.pushManifest(`${repo}@${img.manifestDigest}`, other, MediaType.OciManifest), DigestMismatchError);

    const proxy = await startFaultProxy(reg.url);
    const viaProxy = testClient([proxy.host]);
    try {
      proxy.setRule((req) => (req.url?.includes('/manifests/') ? { kind: 'set-headers', headers: { 'docker-content-digest': digest } } : undefined));
      await assert.rejects(viaProxy.fetchManifest(`${proxy.host}/tocfs/bydigest:v1`),
        (e: unknown) => e instanceof DigestMismatchError && e.code === 'REGISTRY_DIGEST_MISMATCH' && /Docker-Content-Digest/.test(e.message));
    } finally {
      await viaProxy.close();
      await proxy.stop();
    }
  });

  it('speaks TLS: unverified for insecure registries, verified (and refused for a self-signed cert) otherwise', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tocfs-tls-'));
    const run = promisify(execFile);
    await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem'),
      '-days', '1', '-subj', '/CN=127.0.0.1']);
    const proxy = await startFaultProxy(reg.url, { tls: { key: await readFile(join(dir, 'k.pem')), cert: await readFile(join(dir, 'c.pem')) } });
    const insecure = testClient([proxy.host]);
    const strict = testClient([]);
    try {
      await pushImage(client, `${reg.host}/tocfs/tls`, 'v1', [10]);
      assert.equal((await insecure.fetchManifest(`${proxy.host}/tocfs/tls:v1`)).manifest.kind, 'manifest');
      assert.ok(proxy.count('GET', /\/manifests\/v1$/) === 1, 'the request went over TLS to the proxy');
      await assert.rejects(strict.fetchManifest(`${proxy.host}/tocfs/tls:v1`),
        (e: unknown) => e instanceof RegistryUnavailableError && /certificate/i.test(e.message));
    } finally {
      await insecure.close();
      await strict.close();
      await proxy.stop();
      await new Promise((r) => setTimeout(r, 200)); // the last background write
      await rm(dir, { recursive: true, force: true, maxRetries: 3 });
    }
  });

  it('says a registry answered plain HTTP, and how to mark it insecure, when HTTPS meets an HTTP registry', async () => {
    await pushImage(client, `${reg.host}/tocfs/plain`, 'v1', [10]);
    const strict = testClient([]); // reg.host is not in registries.conf: HTTPS
    const named = testClient([], { registriesConf: undefined, registriesConfPaths: { path: '/nonexistent/tocfs-registries.conf', dropInDir: '/nonexistent/d' } });
    try {
      for (const [c, file] of [[strict, 'registries.conf'], [named, '/nonexistent/tocfs-registries.conf']] as const) {
        await assert.rejects(c.fetchManifest(`${reg.host}/tocfs/plain:v1`), (e: unknown) => {
          assert.ok(e instanceof RegistryPlainHttpError, String(e));
          assert.equal(e.code, 'REGISTRY_PLAIN_HTTP');
          assert.ok(e.message.includes(`the registry at ${reg.host} answered plain HTTP to an HTTPS request`), e.message);
          assert.ok(e.message.includes(`[[registry]] location = "${reg.host}" insecure = true`), e.message);
          assert.ok(e.message.includes(`to ${file}`), e.message);
          assert.match(String((e.cause as { code?: unknown }).code), /ERR_SSL_WRONG_VERSION_NUMBER/);
          return true;
        });
      }
    } finally {
      await strict.close();
      await named.close();
    }
  });

  it('answers missing tags and blobs with RegistryNotFoundError', async () => {
    await assert.rejects(client.fetchManifest(`${reg.host}/tocfs/app:nope`),
      (e: unknown) => e instanceof RegistryNotFoundError && /MANIFEST_UNKNOWN/.test(e.message) && e.message.includes('tocfs/app'));
    await assert.rejects(client.openBlob(`${reg.host}/tocfs/app:x`, sha256Digest(Buffer.from('none'))), RegistryNotFoundError);
  });

  it('keeps configs by digest (configCacheDir): a later resolve uses the kept one, a tampered one is fetched again', async () => {
    const repo = `${reg.host}/tocfs/kept`;
    const img = await pushImage(client, repo, 'v1', [4096]);
    const configDigest = sha256Digest(img.config);
    const dir = await mkdtemp(join(tmpdir(), 'tocfs-configs-'));
    const proxy = await startFaultProxy(reg.url);
    const viaProxy = (): RegistryClient => testClient([proxy.host], { configCacheDir: dir });
    const configGets = () => proxy.count('GET', new RegExp(`/blobs/${configDigest}$`));
    const kept = join(dir, configDigest.slice(7));
    const untilKept = async () => {
      for (const until = Date.now() + 10_000; Date.now() < until;) {
        if (await readFile(kept).then((b) => b.equals(img.config), () => false)) return;
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.fail(`${kept} was not written with the config`);
    };
    try {
      const first = viaProxy();
      assert.ok((await first.resolveImage(`${proxy.host}/tocfs/kept:v1`)).configBytes.equals(img.config));
      await first.close();
      assert.equal(configGets(), 1);
      await untilKept(); // written in the background
      const second = viaProxy();
      assert.ok((await second.resolveImage(`${proxy.host}/tocfs/kept:v1`)).configBytes.equals(img.config));
      await second.close();
      assert.equal(configGets(), 1, 'the kept config was used');
      await writeFile(join(dir, configDigest.slice(7)), img.config.toString('utf8').replace('amd64', 'AMD64'));
      const third = viaProxy();
      assert.ok((await third.resolveImage(`${proxy.host}/tocfs/kept:v1`)).configBytes.equals(img.config), 'never the tampered bytes');
      await third.close();
      assert.equal(configGets(), 2, 'a kept config that does not hash to its digest is fetched again');
      // ... and kept again, in place of the tampered copy (written in the background).
      await untilKept();
    } finally {
      await proxy.stop();
      await rm(dir, { recursive: true, force: true, maxRetries: 3 });
    }
  });

  it('detects corrupted blobs and manifests in the registry storage', async () => {
    const repo = `${reg.host}/tocfs/corrupt`;
    const img = await pushImage(client, repo, 'v1', [4096]);
    const configDigest = sha256Digest(img.config);
    const cfgPath = blobFile(reg, configDigest);
    const text = await readFile(cfgPath, 'utf8');
    await writeFile(cfgPath, text.replace('amd64', 'AMD64'));
    const reader = testClient([reg.host]);
    try {
      await assert.rejects(reader.resolveImage(`${repo}:v1`), (e: unknown) => e instanceof DigestMismatchError && e.message.includes(configDigest));
      const manifestPath = blobFile(reg, img.manifestDigest);
      const mtext = await readFile(manifestPath, 'utf8');
      await writeFile(manifestPath, mtext.replace('application/vnd.oci.image.config.v1+json', 'application/vnd.oci.image.config.v1+jsoN'));
      await assert.rejects(reader.fetchManifest(`${repo}@${img.manifestDigest}`), DigestMismatchError);
    } finally {
      await reader.close();
    }
  });
});

describe('registry/client manifest size limit', () => {
  let server: Server;
  let host: string;
  before(async () => {
    // docker-registry itself refuses manifests over 4 MiB on push, so a tiny server plays a registry that
    // serves one (everything else about it is irrelevant).
    server = createServer((req, res) => {
      if (req.url === '/v2/') { res.writeHead(200); res.end(); return; }
      const body = Buffer.alloc(4 * 1024 * 1024 + 10, 0x20);
      res.writeHead(200, { 'content-type': MediaType.OciManifest, ...(req.url?.includes('chunked') ? {} : { 'content-length': String(body.length) }) });
      res.end(body);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));

  it('refuses manifests over 4 MiB, announced or not', async () => {
    const client = testClient([host]);
    try {
      for (const tag of ['big', 'chunked']) {
        await assert.rejects(client.fetchManifest(`${host}/x/y:${tag}`), (e: unknown) => e instanceof ManifestError && /4194304-byte limit/.test(e.message));
      }
    } finally {
      await client.close();
    }
  });
});

describe('registry/client with htpasswd auth', function () {
  this.timeout(60_000);
  let reg: RegistryServer;
  let dir: string;
  before(async () => {
    reg = await startRegistry({ auth: 'htpasswd', users: { alice: 's3cret-pass' } });
    dir = await mkdtemp(join(tmpdir(), 'tocfs-htpasswd-'));
  });
  after(async () => {
    await reg?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('pushes and pulls with credentials from an auth file', async () => {
    const authFile = join(dir, 'auth.json');
    await writeFile(authFile, JSON.stringify({ auths: { [reg.host]: { auth: Buffer.from('alice:s3cret-pass').toString('base64') } } }));
    const client = testClient([reg.host], { credentialLookup: { authFiles: [authFile] } });
    try {
      const img = await pushImage(client, `${reg.host}/private/app`, 'v1', [10_000]);
      const resolved = await client.resolveImage(`${reg.host}/private/app:v1`);
      assert.equal(resolved.manifest.digest, img.manifestDigest);
      const source = await client.getBlobSource(resolved.reference, resolved.manifest.manifest.layers[0]!);
      const [a, b] = await source.readRanges([{ start: 0, end: 10 }, { start: 5000, end: 6000 }]);
      assert.ok(a!.equals(img.layers[0]!.subarray(0, 10)));
      assert.ok(b!.equals(img.layers[0]!.subarray(5000, 6000)));
    } finally {
      await client.close();
    }
  });

  it('asks a credential helper once, not per request', async () => {
    const bin = join(dir, 'bin');
    await mkdir(bin, { recursive: true });
    const calls = join(dir, 'calls');
    await writeFile(join(bin, 'docker-credential-count'),
      `#!/bin/sh\nread server\necho "$server" >> ${calls}\necho '{"ServerURL":"x","Username":"alice","Secret":"s3cret-pass"}'\n`);
    await chmod(join(bin, 'docker-credential-count'), 0o755);
    const authFile = join(dir, 'helper-auth.json');
    await writeFile(authFile, JSON.stringify({ credHelpers: { [reg.host]: 'count' } }));
    const client = testClient([reg.host], { credentialLookup: { authFiles: [authFile], helperPath: bin } });
    try {
      const resolved = await client.resolveImage(`${reg.host}/private/app:v1`);
      const source = await client.getBlobSource(resolved.reference, resolved.manifest.manifest.layers[0]!);
      await Promise.all(Array.from({ length: 40 }, (_, i) => source.readRanges([{ start: i, end: i + 10 }])));
      assert.deepEqual((await readFile(calls, 'utf8')).trim().split('\n'), [reg.host]);
    } finally {
      await client.close();
    }
  });

  it('sends Authorization to the registry but never to the redirect target', async () => {
    const storageReg = await startRegistry();
    const storage = await startFaultProxy(storageReg.url);
    const front = await startRedirectFront(reg.url, storage.url);
    const client = testClient([front.host, storageReg.host]);
    client.credentials.set(front.host, { username: 'alice', password: 's3cret-pass' });
    try {
      const data = Buffer.alloc(30_000, 9);
      // The "object storage" holds the same blob under the same path, without auth.
      await testClient([storageReg.host]).pushBlob(`${storageReg.host}/private/app`, data);
      await client.pushBlob(`${front.host}/private/app`, data);
      const source = await client.getBlobSource(`${front.host}/private/app`, { digest: sha256Digest(data), size: data.length });
      const [got] = await source.readRanges([{ start: 100, end: 200 }]);
      assert.ok(got!.equals(data.subarray(100, 200)));
      const redirected = front.requests.filter((r) => r.fault === 'redirect' && r.method === 'GET');
      assert.equal(redirected.length, 1);
      assert.ok(redirected[0]!.authorization, 'the registry got credentials');
      const atStorage = storage.requests.filter((r) => r.method === 'GET');
      assert.equal(atStorage.length, 1);
      assert.equal(atStorage[0]!.authorization, false, 'no Authorization to another origin');
    } finally {
      await client.close();
      await front.stop();
      await storage.stop();
      await storageReg.stop();
    }
  });

  it('uses the in-memory store over files, and fails clearly without or with wrong credentials', async () => {
    const store = new CredentialStore();
    const client = testClient([reg.host], { credentialStore: store });
    try {
      await assert.rejects(client.fetchManifest(`${reg.host}/private/app:v1`),
        (e: unknown) => e instanceof RegistryAuthError && e.code === 'REGISTRY_UNAUTHORIZED' && /podman login/.test(e.message));
      store.set(reg.host, { username: 'alice', password: 'wrong-pass' });
      await assert.rejects(client.fetchManifest(`${reg.host}/private/app:v1`),
        (e: unknown) => e instanceof RegistryAuthError && !e.message.includes('wrong-pass'));
      store.set(`${reg.host}/private/app:v1`, { username: 'alice', password: 's3cret-pass' });
      assert.equal((await client.fetchManifest(`${reg.host}/private/app:v1`)).manifest.kind, 'manifest');
    } finally {
      await client.close();
    }
  });
});

describe('registry/client with token auth', function () {
  this.timeout(60_000);
  let reg: RegistryServer;
  before(async () => {
    reg = await startRegistry({ auth: 'token', users: { bob: 'tok-pass', carol: 'carol-pass' }, token: { tokenField: 'access_token' } });
  });
  after(async () => { await reg?.stop(); });

  it('gets bearer tokens per scope, caches them, and renews them after expiry', async () => {
    let now = Date.now();
    const store = new CredentialStore();
    store.set(reg.host, { username: 'bob', password: 'tok-pass' });
    const client = testClient([reg.host], { credentialStore: store, now: () => now });
    const tokens = reg.tokenServer!;
    try {
      const img = await pushImage(client, `${reg.host}/team/app`, 'v1', [50_000, 20_000]);
      const pushTokens = tokens.requests.length;
      assert.ok(pushTokens >= 1 && pushTokens <= 2, `push used ${pushTokens} token requests`);
      assert.ok(tokens.requests.every((r) => r.user === 'bob' && r.service === 'tocfs-test-registry'));
      assert.ok(tokens.requests.some((r) => r.scopes.includes('repository:team/app:pull,push')));

      const resolved = await client.resolveImage(`${reg.host}/team/app:v1`);
      const sources = await Promise.all(resolved.manifest.manifest.layers.map((l) => client.getBlobSource(resolved.reference, l)));
      await Promise.all(Array.from({ length: 50 }, (_, i) => sources[i % 2]!.readRanges([{ start: i, end: i + 100 }])));
      const afterReads = tokens.requests.length;
      assert.equal(afterReads, pushTokens + 1, 'one pull-scope token served the manifest, config and 50 concurrent reads');

      now += 10 * 60_000;
      const [first] = await sources[0]!.readRanges([{ start: 0, end: 16 }]);
      assert.ok(first!.equals(img.layers[0]!.subarray(0, 16)));
      assert.equal(tokens.requests.length, afterReads + 1, 'an expired token is renewed');
    } finally {
      await client.close();
    }
  });

  it('takes new credentials from the store at once (no stale cached token)', async () => {
    const client = testClient([reg.host]);
    client.credentials.set(reg.host, { username: 'bob', password: 'tok-pass' });
    try {
      await client.fetchManifest(`${reg.host}/team/app:v1`);
      assert.equal(reg.tokenServer!.requests.at(-1)!.user, 'bob');
      client.credentials.set(`${reg.host}/team/app:v1`, { username: 'carol', password: 'carol-pass' });
      await client.fetchManifest(`${reg.host}/team/app:v1`);
      assert.equal(reg.tokenServer!.requests.at(-1)!.user, 'carol');
    } finally {
      await client.close();
    }
  });

  it('uses identity tokens with the OAuth2 refresh-token grant', async () => {
    const store = new CredentialStore();
    store.set(reg.host, { identityToken: 'bob:tok-pass' });
    const client = testClient([reg.host], { credentialStore: store });
    try {
      assert.equal((await client.fetchManifest(`${reg.host}/team/app:v1`)).manifest.kind, 'manifest');
      const last = reg.tokenServer!.requests.at(-1)!;
      assert.deepEqual([last.method, last.grantType, last.scopes], ['POST', 'refresh_token', ['repository:team/app:pull']]);
    } finally {
      await client.close();
    }
  });

  it('fails with RegistryAuthError when anonymous or with a wrong password', async () => {
    const anonymous = testClient([reg.host]);
    const wrong = testClient([reg.host]);
    wrong.credentials.set(reg.host, { username: 'bob', password: 'nope' });
    try {
      await assert.rejects(anonymous.fetchManifest(`${reg.host}/team/app:v1`), RegistryAuthError);
      await assert.rejects(wrong.fetchManifest(`${reg.host}/team/app:v1`),
        (e: unknown) => e instanceof RegistryAuthError && /rejected/.test(e.message) && !e.message.includes('nope'));
    } finally {
      await anonymous.close();
      await wrong.close();
    }
  });
});
