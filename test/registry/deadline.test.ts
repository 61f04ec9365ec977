// fetch_timeout end to end (issue #11 item 6): a read or lookup fails at its deadline, whatever it is waiting for
// (TCP/TLS handshake, a request queued behind stalled connections, headers, a stalled body, a token, a backoff),
// with a RegistryTimeoutError that names the host, the operation and the bound. Real servers only: a loopback
// black hole, and docker-registry behind the fault proxy.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { sha256Digest } from '../../src/util/index.js';
import { DEFAULT_RETRY_POLICY, DEFAULT_TIMEOUTS, RegistryTimeoutError, RegistryUnavailableError, type RegistryClient,
  type RegistryClientOptions } from '../../src/registry/index.js';
import { BLOB_PATH, startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { startRegistry, type RegistryServer } from '../helpers/registry-server.js';
import { blob, pushImage, startBlackHole, testClient, type BlackHole, type PushedImage } from './fixtures.js';

/** How late after its deadline an operation may settle (timers, event loop, a busy 2-vCPU machine). */
const SLACK_MS = 1500;

/** A client configured like the daemon's: default retry policy and per-phase timeouts, only the fetch timeout set. */
function daemonLikeClient(insecureHosts: readonly string[], opts: RegistryClientOptions = {}): RegistryClient {
  return testClient(insecureHosts, { retry: { ...DEFAULT_RETRY_POLICY }, timeouts: { ...DEFAULT_TIMEOUTS }, ...opts });
}

/** Run `fn`, expect a RegistryTimeoutError no earlier than `boundMs` and no later than `boundMs` + slack. */
async function expectTimeout(boundMs: number, fn: () => Promise<unknown>): Promise<RegistryTimeoutError> {
  const t0 = Date.now();
  let error: unknown;
  try {
    await fn();
  } catch (err) {
    error = err;
  }
  const elapsed = Date.now() - t0;
  assert.ok(error instanceof RegistryTimeoutError, `expected RegistryTimeoutError, got ${String(error)}`);
  assert.equal(error.code, 'REGISTRY_TIMEOUT');
  assert.ok(elapsed >= boundMs - 50, `failed after ${elapsed} ms, before its ${boundMs} ms bound`);
  assert.ok(elapsed < boundMs + SLACK_MS, `failed after ${elapsed} ms, bound ${boundMs} ms`);
  return error;
}

describe('registry deadlines (fetch_timeout) end to end', function () {
  this.timeout(60_000);
  const BIG = 2 * 1024 * 1024;
  let reg: RegistryServer;
  let image: PushedImage;
  const repo = 'deadline/img';
  before(async () => {
    reg = await startRegistry();
    const pusher = testClient([reg.host]);
    try {
      image = await pushImage(pusher, `${reg.host}/${repo}`, 'v1', [BIG]);
    } finally {
      await pusher.close();
    }
  });
  after(async () => { await reg?.stop(); });

  const layer = () => image.layerDescriptors[0]!;

  describe('a black-holed registry (accepts connections, never answers)', () => {
    let hole: BlackHole;
    let client: RegistryClient | undefined;
    beforeEach(async () => { hole = await startBlackHole(); });
    afterEach(async () => {
      // The black hole first: its sockets close, so requests still waiting in the pool end and close() is quick.
      await hole.stop();
      await client?.close();
      client = undefined;
    });

    it('bounds a blob read over HTTPS (stuck in the TLS handshake) by its deadline: 5 s → under 6.5 s', async () => {
      client = daemonLikeClient([]); // not insecure: HTTPS, whose handshake the black hole never answers
      const source = await client.getBlobSource(`${hole.host}/${repo}`, layer());
      const err = await expectTimeout(5000, () => source.readRanges([{ start: 0, end: 10 }], undefined, Date.now() + 5000));
      assert.ok(hole.accepted >= 1, 'the client did connect');
      assert.equal(err.host, hole.host);
      assert.ok(err.message.includes(hole.host), err.message);
      assert.ok(err.message.includes(layer().digest), err.message);
      assert.match(err.message, /within 5 s/);
      assert.match(err.message, /raise fetch_timeout/);
    });

    it('bounds a lookup (manifest, index, config) by the client fetch timeout when the caller names no deadline', async () => {
      // insecure: HTTPS is tried first, then plain HTTP; both get no answer.
      client = daemonLikeClient([hole.host], { fetchTimeoutMs: 2000 });
      const err = await expectTimeout(2000, () => client!.resolveImage(`${hole.host}/${repo}:v1`));
      assert.match(err.message, new RegExp(`fetching manifest ${hole.host}/${repo}:v1`));
      assert.match(err.message, /within 2 s \(fetch_timeout is 2 s\)/);
    });

    it('bounds every read of a crowd waiting for the same unanswered ping', async () => {
      client = daemonLikeClient([hole.host], { fetchTimeoutMs: 1500 });
      const source = await client.getBlobSource(`${hole.host}/${repo}`, layer());
      const errors = await Promise.all(Array.from({ length: 20 }, (_, i) =>
        expectTimeout(1500, () => source.readRanges([{ start: i * 100, end: i * 100 + 10 }]))));
      assert.equal(errors.length, 20);
    });

    it('names a timeout signal (AbortSignal.timeout) as a timeout, not an abort', async () => {
      client = daemonLikeClient([hole.host]);
      const source = await client.getBlobSource(`${hole.host}/${repo}`, layer());
      await expectTimeout(1500, () => source.readRanges([{ start: 0, end: 10 }], AbortSignal.timeout(1500)));
    });
  });

  describe('docker-registry behind a stalling proxy', () => {
    let proxy: FaultProxy;
    let client: RegistryClient;
    before(async () => { proxy = await startFaultProxy(reg.url); });
    beforeEach(async () => {
      proxy.setRule(undefined);
      proxy.clear();
      client = daemonLikeClient([proxy.host], { fetchTimeoutMs: 2000 });
      // Ping and learn the host before the faults start, so only the blob requests are stuck.
      const source = await client.getBlobSource(`${proxy.host}/${repo}`, layer());
      await source.readRanges([{ start: 0, end: 1 }]);
    });
    afterEach(async () => {
      proxy.setRule(undefined);
      await client.close();
    });
    after(async () => { await proxy?.stop(); });

    const stallBlobs = (fault: { kind: 'stall' } | { kind: 'stall-body'; afterBytes: number }) =>
      proxy.setRule((req) => (req.method === 'GET' && BLOB_PATH.test(req.url ?? '') ? fault : undefined));

    it('bounds a read whose headers came but whose body stalls, single and multi-range, and recovers after', async () => {
      stallBlobs({ kind: 'stall-body', afterBytes: 1000 });
      const source = await client.getBlobSource(`${proxy.host}/${repo}`, layer());
      const one = await expectTimeout(2000, () => source.readRanges([{ start: 0, end: 200_000 }]));
      assert.match(one.message, /reading bytes 0-199999 of blob/);
      await expectTimeout(2000, () => source.readRanges([{ start: 0, end: 100_000 }, { start: 500_000, end: 600_000 }]));
      proxy.setRule(undefined);
      const [got] = await source.readRanges([{ start: 10, end: 20_000 }]);
      assert.ok(got!.equals(image.layers[0]!.subarray(10, 20_000)), 'the client works again once the registry does');
    });

    it('bounds reads queued behind stalled connections (more reads than pooled connections)', async () => {
      stallBlobs({ kind: 'stall' });
      const source = await client.getBlobSource(`${proxy.host}/${repo}`, layer());
      const deadline = Date.now() + 2000;
      // 40 reads, 16 connections per origin: 24 of them wait in the pool for a connection that never frees up.
      const errors = await Promise.all(Array.from({ length: 40 }, (_, i) =>
        expectTimeout(2000, () => source.readRanges([{ start: i * 1000, end: i * 1000 + 10 }], undefined, deadline))));
      assert.equal(errors.length, 40);
      assert.ok(proxy.count('GET', BLOB_PATH) <= 40 + 1, 'no retries after the deadline');
    });

    it('stops retrying when the next backoff would pass the deadline, with the registry\'s own error', async () => {
      const patient = daemonLikeClient([proxy.host], {
        fetchTimeoutMs: 1500, retry: { maxAttempts: 100, maxTotalMs: 60_000, baseDelayMs: 400, maxDelayMs: 2000 },
      });
      try {
        proxy.setRule((req) => (req.method === 'GET' && BLOB_PATH.test(req.url ?? '') ? { kind: 'status', status: 503, retryAfter: '1' } : undefined));
        const source = await patient.getBlobSource(`${proxy.host}/${repo}`, layer());
        const t0 = Date.now();
        const err = await source.readRanges([{ start: 0, end: 10 }]).then(() => undefined, (e: unknown) => e);
        const elapsed = Date.now() - t0;
        assert.ok(elapsed < 1500 + SLACK_MS, `gave up after ${elapsed} ms`);
        assert.ok(err instanceof RegistryUnavailableError || err instanceof RegistryTimeoutError, String(err));
        assert.match((err as Error).message, /HTTP 503/);
        assert.ok(proxy.count('GET', BLOB_PATH) >= 2, 'it did retry while there was time');
      } finally {
        await patient.close();
      }
    });

    it('bounds a manifest fetch by digest and a config fetch (shared fetches: the waiter stops, not the work)', async () => {
      proxy.setRule((req) => (req.method === 'GET' && /\/(manifests|blobs)\//.test(req.url ?? '') ? { kind: 'stall' } : undefined));
      const ref = `${proxy.host}/${repo}@${image.manifestDigest}`;
      // Two callers share one fetch; each stops at its own deadline.
      const [a] = await Promise.all([
        expectTimeout(2000, () => client.fetchManifest(ref)),
        expectTimeout(1000, () => client.fetchManifest(ref, { deadline: Date.now() + 1000 })),
      ]);
      assert.ok(a.message.includes(image.manifestDigest), a.message);
      assert.equal(proxy.count('GET', /\/manifests\//), 1, 'one shared request');
      await expectTimeout(2000, () => client.fetchBlob(`${proxy.host}/${repo}`, { digest: sha256Digest(image.config), size: image.config.length }));
    });
  });

  describe('an HTTPS registry that goes black after it was contacted', () => {
    let dir: string;
    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'tocfs-deadline-tls-'));
      await promisify(execFile)('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'k.pem'),
        '-out', join(dir, 'c.pem'), '-days', '1', '-subj', '/CN=127.0.0.1']);
    });
    after(async () => { await rm(dir, { recursive: true, force: true }); });

    it('bounds a read whose new connection hangs in the TLS handshake: 5 s → under 6.5 s (was ~10 s, or 30 s without a signal)', async () => {
      const proxy = await startFaultProxy(reg.url, { tls: { key: await readFile(join(dir, 'k.pem')), cert: await readFile(join(dir, 'c.pem')) } });
      const client = daemonLikeClient([proxy.host]);
      let hole: BlackHole | undefined;
      try {
        const source = await client.getBlobSource(`${proxy.host}/${repo}`, layer());
        const [first] = await source.readRanges([{ start: 0, end: 10 }]);
        assert.ok(first!.equals(image.layers[0]!.subarray(0, 10)), 'the registry worked, over TLS');
        // The registry's address now accepts TCP and never answers: the pooled connection is gone, a new one hangs.
        await proxy.stop();
        hole = await startBlackHole(Number(proxy.host.split(':')[1]));
        await expectTimeout(5000, () => source.readRanges([{ start: 0, end: 10 }], AbortSignal.timeout(5000)));
        await expectTimeout(2000, () => source.readRanges([{ start: 0, end: 10 }], undefined, Date.now() + 2000));
        assert.ok(hole.accepted >= 1, 'the client did try to connect');
      } finally {
        await hole?.stop();
        await client.close();
      }
    });
  });

  describe('a token server that never answers', () => {
    let tokenReg: RegistryServer;
    let hole: BlackHole;
    let proxy: FaultProxy;
    before(async () => {
      tokenReg = await startRegistry({ auth: 'token', token: { anonymousActions: ['pull'] } });
      hole = await startBlackHole();
      proxy = await startFaultProxy(tokenReg.url);
      // The registry's challenges now send clients to the black hole for their tokens.
      proxy.setRule(() => ({
        kind: 'set-headers',
        headers: { 'www-authenticate': `Bearer realm="http://${hole.host}/token",service="${tokenReg.tokenServer!.service}"` },
      }));
    });
    after(async () => {
      await hole?.stop();
      await proxy?.stop();
      await tokenReg?.stop();
    });

    it('bounds a read that waits for a token', async () => {
      const client = daemonLikeClient([proxy.host], { fetchTimeoutMs: 2000 });
      try {
        const source = await client.getBlobSource(`${proxy.host}/${repo}`, { digest: sha256Digest(blob(1)), size: 1 });
        const err = await expectTimeout(2000, () => source.readRanges([{ start: 0, end: 1 }]));
        assert.ok(err.message.includes(proxy.host), err.message);
        assert.ok(proxy.count('GET', /^\/v2\/$/) >= 1, 'the ping went through and named the token realm');
      } finally {
        await hole.stop();
        await client.close();
      }
    });
  });
});
