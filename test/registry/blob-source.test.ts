import assert from 'node:assert/strict';
import fc from 'fast-check';
import { request } from 'undici';
import { sha256Digest } from '../../src/util/index.js';
import { InvalidRangeError, planFetch, RegistryAbortedError, RegistryUnavailableError, type ByteRange, type RegistryClient }
  from '../../src/registry/index.js';
import { BLOB_PATH, faultFirst, startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { startRedirectFront } from '../helpers/redirect-front.js';
import { freePort, startRegistry, type RegistryServer } from '../helpers/registry-server.js';
import { blob, expectElapsedBelow, loopbackConf, testClient } from './fixtures.js';

const BIG = 3 * 1024 * 1024 + 123;
const SMALL = 100 * 1024;

describe('registry/blob-source planning', () => {
  it('merges overlapping and touching ranges, keeps empty ones out, and batches by count and bytes', () => {
    const plan = planFetch([{ start: 50, end: 60 }, { start: 0, end: 10 }, { start: 10, end: 20 }, { start: 55, end: 70 }, { start: 5, end: 5 },
      { start: 100, end: 200 }], 0, 2, 1000);
    assert.deepEqual(plan.merged, [{ start: 0, end: 20 }, { start: 50, end: 70 }, { start: 100, end: 200 }]);
    assert.deepEqual(plan.owner, [1, 0, 0, 1, -1, 2]);
    assert.deepEqual(plan.batches.map((b) => b.ranges.length), [2, 1]);
    assert.deepEqual(planFetch([{ start: 0, end: 600 }, { start: 700, end: 1300 }], 0, 32, 1000).batches.length, 2);
    assert.deepEqual(planFetch([{ start: 0, end: 10 }, { start: 30, end: 40 }], 20, 32, 1000).merged, [{ start: 0, end: 40 }]);
  });
});

describe('registry/blob-source against docker-registry', function () {
  this.timeout(60_000);
  let reg: RegistryServer;
  let client: RegistryClient;
  const big = blob(BIG);
  const small = blob(SMALL);
  const repo = 'ranges/blob';
  const bigDesc = { digest: sha256Digest(big), size: BIG };
  const smallDesc = { digest: sha256Digest(small), size: SMALL };

  before(async () => {
    reg = await startRegistry();
    client = testClient([reg.host]);
    await client.pushBlob(`${reg.host}/${repo}`, big);
    await client.pushBlob(`${reg.host}/${repo}`, small);
  });
  after(async () => {
    await client?.close();
    await reg?.stop();
  });

  const slices = (data: Buffer, ranges: readonly ByteRange[]) => ranges.map((r) => data.subarray(r.start, r.end));

  it('docker-registry answers multi-range requests with multipart/byteranges', async () => {
    const res = await request(`${reg.url}/v2/${repo}/blobs/${bigDesc.digest}`, { headers: { range: 'bytes=0-9,1000-1009' } });
    await res.body.dump();
    assert.equal(res.statusCode, 206);
    assert.match(String(res.headers['content-type']), /^multipart\/byteranges; boundary=/);
  });

  it('reads single ranges, multi-range batches, duplicates and empty ranges in the order asked', async () => {
    const source = await client.getBlobSource(`${reg.host}/${repo}`, bigDesc);
    const before = { ...client.blobStats };
    const ranges = [{ start: BIG - 10, end: BIG }, { start: 0, end: 1 }, { start: 4096, end: 8192 }, { start: 4096, end: 8192 },
      { start: 7, end: 7 }, { start: 100_000, end: 1_200_000 }, { start: 8000, end: 9000 }];
    const got = await source.readRanges(ranges);
    assert.deepEqual(got.map((b) => b.length), ranges.map((r) => r.end - r.start));
    got.forEach((b, i) => assert.ok(b.equals(big.subarray(ranges[i]!.start, ranges[i]!.end)), `range ${i}`));
    assert.equal(client.blobStats.multiRangeRequests - before.multiRangeRequests, 1, 'one multi-range request');
    assert.equal(client.blobStats.singleRangeFallbacks, before.singleRangeFallbacks);
    const [one] = await source.readRanges([{ start: 1, end: 3 }]);
    assert.ok(one!.equals(big.subarray(1, 3)));
  });

  it('returns exactly the bytes asked for random range sets', async () => {
    const source = await client.getBlobSource(`${reg.host}/${repo}`, bigDesc);
    await fc.assert(fc.asyncProperty(fc.array(fc.tuple(fc.nat(BIG - 1), fc.nat(300_000)), { minLength: 1, maxLength: 40 }), async (raw) => {
      const ranges = raw.map(([s, len]) => ({ start: s, end: Math.min(BIG, s + len) }));
      const got = await source.readRanges(ranges);
      slices(big, ranges).forEach((want, i) => assert.ok(got[i]!.equals(want)));
    }), { numRuns: 15 });
  });

  it('rejects ranges outside the blob with a typed error', async () => {
    const source = await client.getBlobSource(`${reg.host}/${repo}`, smallDesc);
    for (const r of [{ start: -1, end: 2 }, { start: 5, end: 4 }, { start: 0, end: SMALL + 1 }, { start: 0.5, end: 2 }]) {
      await assert.rejects(source.readRanges([r]), (e: unknown) => e instanceof InvalidRangeError && e.code === 'REGISTRY_INVALID_RANGE');
    }
  });

  it('serves hundreds of concurrent reads over a bounded pool', async () => {
    const source = await client.getBlobSource(`${reg.host}/${repo}`, bigDesc);
    const reads = Array.from({ length: 300 }, (_, i) => {
      const start = (i * 7919 * 13) % (BIG - 70_000);
      return [{ start, end: start + 65_536 }, { start: start + 66_000, end: start + 70_000 }];
    });
    const results = await Promise.all(reads.map((r) => source.readRanges(r)));
    results.forEach((got, i) => slices(big, reads[i]!).forEach((want, k) => assert.ok(got[k]!.equals(want))));
  });

  describe('through a fault proxy', () => {
    let proxy: FaultProxy;
    let faulty: RegistryClient;
    const blobGets = () => proxy.count('GET', BLOB_PATH);
    before(async () => {
      proxy = await startFaultProxy(reg.url);
    });
    beforeEach(() => {
      proxy.setRule(undefined);
      proxy.clear();
      faulty = testClient([proxy.host], {
        retry: { maxAttempts: 4, maxTotalMs: 5000, baseDelayMs: 20, maxDelayMs: 100 },
        timeouts: { connectMs: 1000, headersMs: 400, bodyIdleMs: 400 },
      });
    });
    afterEach(async () => { await faulty.close(); });
    after(async () => { await proxy?.stop(); });

    const read = async (ranges: ByteRange[], desc = bigDesc, signal?: AbortSignal) =>
      (await faulty.getBlobSource(`${proxy.host}/${repo}`, desc)).readRanges(ranges, signal);

    it('retries 5xx and succeeds on the third attempt', async () => {
      proxy.setRule(faultFirst(2, 'GET', BLOB_PATH, { kind: 'status', status: 503 }));
      const [got] = await read([{ start: 10, end: 5000 }]);
      assert.ok(got!.equals(big.subarray(10, 5000)));
      assert.equal(blobGets(), 3);
    });

    it('gives up after maxAttempts with RegistryUnavailableError, within the time bound', async () => {
      proxy.setRule((req) => (req.method === 'GET' && BLOB_PATH.test(req.url ?? '') ? { kind: 'status', status: 502 } : undefined));
      const { error } = await expectElapsedBelow(3000, () => read([{ start: 0, end: 10 }]));
      assert.ok(error instanceof RegistryUnavailableError, String(error));
      assert.equal(error.attempts, 4);
      assert.match(error.message, /4 attempt\(s\).*HTTP 502/);
      assert.equal(blobGets(), 4);
    });

    it('retries connection resets and truncated bodies, never returning short data', async () => {
      proxy.setRule(faultFirst(1, 'GET', BLOB_PATH, { kind: 'reset' }));
      const [a] = await read([{ start: 0, end: 100_000 }]);
      assert.ok(a!.equals(big.subarray(0, 100_000)));
      assert.equal(blobGets(), 2);

      proxy.clear();
      proxy.setRule(faultFirst(2, 'GET', BLOB_PATH, { kind: 'truncate', afterBytes: 30_000 }));
      const [b, c] = await read([{ start: 0, end: 50_000 }, { start: 60_000, end: 120_000 }]);
      assert.ok(b!.equals(big.subarray(0, 50_000)) && c!.equals(big.subarray(60_000, 120_000)));
      assert.equal(blobGets(), 3);

      proxy.clear();
      proxy.setRule((req) => (req.method === 'GET' && BLOB_PATH.test(req.url ?? '') ? { kind: 'truncate', afterBytes: 1000 } : undefined));
      await assert.rejects(read([{ start: 0, end: 50_000 }]), (e: unknown) => e instanceof RegistryUnavailableError && /truncated|broke|closed/.test(e.message));
      assert.equal(blobGets(), 4);
    });

    it('times out stalls before headers and mid-body, then retries', async () => {
      proxy.setRule(faultFirst(1, 'GET', BLOB_PATH, { kind: 'stall' }));
      const [a] = await read([{ start: 5, end: 10 }]);
      assert.ok(a!.equals(big.subarray(5, 10)));
      assert.equal(blobGets(), 2);

      proxy.clear();
      proxy.setRule(faultFirst(1, 'GET', BLOB_PATH, { kind: 'stall-body', afterBytes: 10_000 }));
      const [b] = await read([{ start: 0, end: 200_000 }]);
      assert.ok(b!.equals(big.subarray(0, 200_000)));
      assert.equal(blobGets(), 2);
    });

    it('bounds the total time of a request that keeps stalling', async () => {
      const slow = testClient([proxy.host], {
        retry: { maxAttempts: 100, maxTotalMs: 1200, baseDelayMs: 20, maxDelayMs: 50 },
        timeouts: { connectMs: 1000, headersMs: 60_000, bodyIdleMs: 60_000 },
      });
      try {
        const source = await slow.getBlobSource(`${proxy.host}/${repo}`, bigDesc);
        await source.readRanges([{ start: 0, end: 1 }]); // ping and warm up before the faults start
        proxy.setRule((req) => (req.method === 'GET' && BLOB_PATH.test(req.url ?? '') ? { kind: 'stall' } : undefined));
        const { error, elapsed } = await expectElapsedBelow(3000, () => source.readRanges([{ start: 0, end: 10 }]));
        assert.ok(error instanceof RegistryUnavailableError, String(error));
        assert.ok(elapsed >= 1100, `gave up after ${elapsed} ms`);
        assert.match(error.message, /1200 ms limit/);
      } finally {
        await slow.close();
      }
    });

    it('stops at once when the caller aborts', async () => {
      const ctl = new AbortController();
      let stalledAt = 0;
      proxy.setRule((req) => {
        if (req.method !== 'GET' || !BLOB_PATH.test(req.url ?? '')) return undefined;
        // Abort shortly after the request is stuck at the server.
        stalledAt = Date.now();
        setTimeout(() => ctl.abort(), 50);
        return { kind: 'stall' };
      });
      const { error } = await expectElapsedBelow(5000, () => read([{ start: 0, end: 10 }], bigDesc, ctl.signal));
      assert.ok(Date.now() - stalledAt < 1000, 'the read ended soon after the abort');
      assert.ok(error instanceof RegistryAbortedError, String(error));
      assert.equal(blobGets(), 1);
    });

    it('one caller aborting does not cancel work shared with others (ping, tokens, manifests)', async () => {
      proxy.setRule(faultFirst(1, 'GET', /^\/v2\/$/, { kind: 'status', status: 503 }));
      const ctl = new AbortController();
      const source = await faulty.getBlobSource(`${proxy.host}/${repo}`, bigDesc);
      const aborted = source.readRanges([{ start: 0, end: 10 }], ctl.signal);
      const other = source.readRanges([{ start: 10, end: 20 }]);
      ctl.abort();
      await assert.rejects(aborted, RegistryAbortedError);
      assert.ok((await other)[0]!.equals(big.subarray(10, 20)));
      assert.equal(proxy.count('GET', /^\/v2\/$/), 2, 'one failed ping, one retry, shared by both callers');
    });

    it('falls back to one request per range when the server ignores Range on a big blob', async () => {
      proxy.setRule((req) => (req.method === 'GET' && BLOB_PATH.test(req.url ?? '') && req.headers.range?.includes(',') ? { kind: 'ignore-range' } : undefined));
      const ranges = [{ start: 0, end: 10 }, { start: 1_000_000, end: 1_000_100 }, { start: 2_000_000, end: 2_500_000 }];
      const got = await read(ranges);
      slices(big, ranges).forEach((want, i) => assert.ok(got[i]!.equals(want)));
      assert.equal(blobGets(), 4, 'one refused multi-range request, then one per range');
      proxy.clear();
      await read(ranges);
      assert.equal(blobGets(), 3, 'the host is remembered as single-range only');
    });

    it('slices a small blob out of a 200 answer instead of asking again', async () => {
      proxy.setRule((req) => (req.method === 'GET' && BLOB_PATH.test(req.url ?? '') ? { kind: 'ignore-range' } : undefined));
      const ranges = [{ start: 0, end: 10 }, { start: 50_000, end: 50_100 }, { start: SMALL - 1, end: SMALL }];
      const got = await read(ranges, smallDesc);
      slices(small, ranges).forEach((want, i) => assert.ok(got[i]!.equals(want)));
      assert.equal(blobGets(), 1);
    });

    it('falls back to single ranges when multi-range requests are refused (416)', async () => {
      proxy.setRule((req) => (BLOB_PATH.test(req.url ?? '') ? { kind: 'refuse-multirange' } : undefined));
      const ranges = [{ start: 3, end: 30 }, { start: 3000, end: 3100 }];
      const got = await read(ranges);
      slices(big, ranges).forEach((want, i) => assert.ok(got[i]!.equals(want)));
      assert.equal(blobGets(), 3);
    });

    it('tries multi-range requests again once the refusal has decayed (not never again)', async () => {
      const decaying = testClient([proxy.host], { blobReader: { multiRangeRetryMs: 400 } });
      try {
        const source = await decaying.getBlobSource(`${proxy.host}/${repo}`, bigDesc);
        const ranges = [{ start: 3, end: 30 }, { start: 3000, end: 3100 }];
        const multi = () => proxy.requests.filter((r) => r.method === 'GET' && r.range?.includes(',')).length;
        proxy.setRule((req) => (BLOB_PATH.test(req.url ?? '') ? { kind: 'refuse-multirange' } : undefined));
        await source.readRanges(ranges);
        assert.equal(multi(), 1, 'one multi-range request, refused with 416');
        assert.equal(blobGets(), 3, 'then one request per range');

        // Within the decay period the host gets single ranges only, even once it would accept multi-range again.
        proxy.setRule(undefined);
        proxy.clear();
        let got = await source.readRanges(ranges);
        slices(big, ranges).forEach((want, i) => assert.ok(got[i]!.equals(want)));
        assert.equal(multi(), 0);
        assert.equal(blobGets(), 2);

        await new Promise((r) => setTimeout(r, 450));
        proxy.clear();
        got = await source.readRanges(ranges);
        slices(big, ranges).forEach((want, i) => assert.ok(got[i]!.equals(want)));
        assert.equal(multi(), 1, 'multi-range is tried again after the decay period');
        assert.equal(blobGets(), 1, 'and, accepted, serves both ranges in one request');
        assert.equal(proxy.requests.find((r) => r.range?.includes(','))?.fault, undefined);
      } finally {
        await decaying.close();
      }
    });
  });

  describe('behind a redirecting front', () => {
    let storage: FaultProxy;
    let front: Awaited<ReturnType<typeof startRedirectFront>>;
    before(async () => {
      storage = await startFaultProxy(reg.url);
      front = await startRedirectFront(reg.url, storage.url);
    });
    after(async () => {
      await front?.stop();
      await storage?.stop();
    });

    it('follows the redirect once, then reads from the cached final URL', async () => {
      const c = testClient([front.host]);
      try {
        const source = await c.getBlobSource(`${front.host}/${repo}`, bigDesc);
        const ranges = [{ start: 0, end: 100 }, { start: 2_000_000, end: 2_000_500 }];
        for (let i = 0; i < 3; i++) {
          const got = await source.readRanges(ranges);
          slices(big, ranges).forEach((want, k) => assert.ok(got[k]!.equals(want)));
        }
        assert.equal(front.redirects(), 1);
        assert.equal(storage.count('GET', BLOB_PATH), 3);
        assert.equal(c.blobStats.redirectCacheHits, 2);
        assert.ok((await c.fetchBlob(`${front.host}/${repo}`, smallDesc)).equals(small));
      } finally {
        await c.close();
      }
    });

    it('asks the registry again when the cached URL expires or fails', async () => {
      const c = testClient([front.host], { blobReader: { redirectCacheTtlMs: 600 } });
      front.clear();
      storage.clear();
      try {
        const source = await c.getBlobSource(`${front.host}/${repo}`, bigDesc);
        await source.readRanges([{ start: 0, end: 10 }]);
        await new Promise((r) => setTimeout(r, 800));
        await source.readRanges([{ start: 0, end: 10 }]);
        assert.equal(front.redirects(), 2, 'expired entry re-resolved');
        storage.setRule(faultFirst(1, 'GET', BLOB_PATH, { kind: 'status', status: 403 }));
        const [got] = await source.readRanges([{ start: 10, end: 20 }]);
        assert.ok(got!.equals(big.subarray(10, 20)));
        assert.equal(front.redirects(), 3, 'a refused cached URL is dropped and re-resolved');
      } finally {
        storage.setRule(undefined);
        await c.close();
      }
    });
  });

  describe('with mirrors', () => {
    let mirror: FaultProxy;
    let primary: FaultProxy;
    let emptyReg: RegistryServer;
    let emptyMirror: FaultProxy;
    before(async () => {
      mirror = await startFaultProxy(reg.url);
      primary = await startFaultProxy(reg.url);
      emptyReg = await startRegistry();
      emptyMirror = await startFaultProxy(emptyReg.url);
    });
    after(async () => {
      await Promise.all([mirror?.stop(), primary?.stop(), emptyMirror?.stop()]);
      await emptyReg?.stop();
    });
    beforeEach(() => { for (const p of [mirror, primary, emptyMirror]) p.clear(); });

    const mirrored = (mirrors: string[]) => testClient([], {
      registriesConf: loopbackConf([], `[[registry]]\nlocation = "${primary.host}"\ninsecure = true\n` +
        mirrors.map((m) => `[[registry.mirror]]\nlocation = "${m}"\ninsecure = true\n`).join('')),
    });

    it('reads from the first mirror that works', async () => {
      const c = mirrored([mirror.host]);
      try {
        const [got] = await (await c.getBlobSource(`${primary.host}/${repo}`, smallDesc)).readRanges([{ start: 0, end: 1000 }]);
        assert.ok(got!.equals(small.subarray(0, 1000)));
        assert.equal(mirror.count('GET', BLOB_PATH), 1);
        assert.equal(primary.requests.length, 0);
      } finally {
        await c.close();
      }
    });

    it('falls back to the primary when a mirror is down or lacks the content', async () => {
      const dead = `127.0.0.1:${await freePort()}`;
      const c = mirrored([dead, emptyMirror.host]);
      try {
        const source = await c.getBlobSource(`${primary.host}/${repo}`, smallDesc);
        const [got] = await source.readRanges([{ start: 0, end: 1000 }]);
        assert.ok(got!.equals(small.subarray(0, 1000)));
        assert.equal(emptyMirror.count('GET', BLOB_PATH), 1, 'the empty mirror answered 404');
        assert.equal(primary.count('GET', BLOB_PATH), 1);
        assert.equal(source.endpoint.apiHost, primary.host, 'later reads stay on the primary');
        assert.ok((await c.fetchBlob(`${primary.host}/${repo}`, smallDesc)).equals(small));
      } finally {
        await c.close();
      }
    });
  });
});
