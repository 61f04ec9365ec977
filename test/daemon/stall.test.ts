import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { startDaemon, type DaemonHandle } from '../helpers/daemon.js';
import { BLOB_PATH, faultFirst, startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { badCrcImage, deepTreeTar, imageOfTar, wideDirTar, zeroBombImage } from '../helpers/hostile-images.js';
import { buildImage, buildLayerTar, pushImage, type BuiltImage } from '../helpers/image-builder.js';
import { loopbackClient, startRegistry, type RegistryServer } from '../helpers/registry-server.js';

/** The slowest FUSE answer a good image may give while a hostile one is processed (issue #11). */
const MAX_LATENCY_MS = 250;
const WIDE = 150_000;
const DEEP = 2000;

/**
 * Watch a good layer while `work` runs: stat unique names under its diff/ (each one a FUSE LOOKUP the daemon must
 * answer; ENOENT answers are not cached by the kernel) every 20 ms, and report the slowest answer.
 */
async function probe<T>(goodDiff: string, work: Promise<T>): Promise<{ result: PromiseSettledResult<T>; maxMs: number; samples: number }> {
  let done = false;
  const settled = work.then((value) => ({ status: 'fulfilled', value }) as const, (reason: unknown) => ({ status: 'rejected', reason }) as const)
    .finally(() => { done = true; });
  let maxMs = 0;
  let samples = 0;
  const deadline = Date.now() + 120_000;
  while (!done && Date.now() < deadline) {
    const t0 = performance.now();
    await stat(join(goodDiff, `probe-${samples}-${Math.random()}`)).catch(() => undefined);
    maxMs = Math.max(maxMs, performance.now() - t0);
    samples++;
    await new Promise((r) => setTimeout(r, 20));
  }
  return { result: await settled, maxMs, samples };
}

describe('daemon: one hostile image never stalls another (issue #11)', function () {
  this.timeout(600_000);
  let work: string;
  let registry: RegistryServer;
  let proxy: FaultProxy;
  let d: DaemonHandle;
  const images: Record<string, BuiltImage> = {};
  const refOf = (name: string) => `${proxy.host}/stall/${name}:v1`;
  const layerDir = (name: string) => join(d.mountpoint, Buffer.from(refOf(name)).toString('base64'), images[name]!.layers[0]!.digest);
  const goodFile = randomBytes(300_000);

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'tocfs-stall-'));
    registry = await startRegistry({});
    proxy = await startFaultProxy(registry.url);
    images['good'] = await buildImage([{ tar: await buildLayerTar(work, 'good', [{ path: 'data/file.bin', type: 'file', data: goodFile }]), compression: 'zstd:chunked' }]);
    images['wide'] = await imageOfTar(wideDirTar(WIDE));
    images['deep'] = await imageOfTar(deepTreeTar(DEEP));
    images['zeros'] = await zeroBombImage(32 * 2 ** 30);
    images['crc'] = await badCrcImage();
    images['late'] = await buildImage([{ tar: await buildLayerTar(work, 'late', [{ path: 'x', type: 'file', data: 'late' }]), compression: 'zstd:chunked' }]);
    const client = loopbackClient(registry.host);
    for (const [name, img] of Object.entries(images)) await pushImage(client, `${registry.host}/stall/${name}:v1`, img);
    await client.close();
    // A state root as an older tocfs left it: world-readable.
    mkdirSync(join(work, 'state', 'access'), { recursive: true, mode: 0o755 });
    writeFileSync(join(work, 'state', 'access', 'old.json'), '[]', { mode: 0o644 });
    d = await startDaemon(work, { insecureHosts: [proxy.host], extraConfig: 'failure_ttl = 1\n' });
    assert.ok((await readFile(join(layerDir('good'), 'diff', 'data', 'file.bin'))).equals(goodFile));
  });
  after(async () => {
    await d?.stop();
    await proxy?.stop();
    await registry?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const good = () => join(layerDir('good'), 'diff');

  it(`resolves a layer of ${WIDE} entries in one directory off the FUSE thread, and lists it`, async () => {
    const r = await probe(good(), stat(join(layerDir('wide'), 'info')));
    assert.equal(r.result.status, 'fulfilled', String((r.result as PromiseRejectedResult).reason));
    assert.ok(r.samples > 0);
    assert.ok(r.maxMs < MAX_LATENCY_MS, `a good image's lookup waited ${r.maxMs.toFixed(0)} ms while the wide layer resolved`);
    const listed = await probe(good(), readdir(join(layerDir('wide'), 'diff', 'w')));
    assert.equal(listed.result.status, 'fulfilled');
    assert.equal((listed.result as PromiseFulfilledResult<string[]>).value.length, WIDE);
    assert.ok(listed.maxMs < MAX_LATENCY_MS, `a good image's lookup waited ${listed.maxMs.toFixed(0)} ms while the wide directory was listed`);
    await stat(join(layerDir('wide'), 'diff', 'w', `f${String(WIDE - 1).padStart(7, '0')}`));
  });

  it(`resolves a ${DEEP}-deep tree off the FUSE thread`, async () => {
    const r = await probe(good(), stat(join(layerDir('deep'), 'info')));
    assert.equal(r.result.status, 'fulfilled', String((r.result as PromiseRejectedResult).reason));
    assert.ok(r.maxMs < MAX_LATENCY_MS, `a good image's lookup waited ${r.maxMs.toFixed(0)} ms while the deep layer resolved`);
    // The whole path is beyond PATH_MAX: walk half of it as the working directory.
    const half = Array<string>(DEEP / 2).fill('d');
    const cwd = process.cwd();
    try {
      process.chdir(join(layerDir('deep'), 'diff', ...half));
      assert.equal(await readFile(join(...half, 'bottom'), 'utf8'), 'deep');
    } finally {
      process.chdir(cwd);
    }
  });

  it('refuses a 32 GiB zeros chunk at once instead of hashing 32 GiB (podman then pulls the layer itself)', async () => {
    const t0 = Date.now();
    const r = await probe(good(), stat(join(layerDir('zeros'), 'info')));
    assert.equal(r.result.status, 'rejected');
    assert.equal(((r.result as PromiseRejectedResult).reason as NodeJS.ErrnoException).code, 'ENOENT');
    assert.ok(Date.now() - t0 < 10_000, `refusing took ${Date.now() - t0} ms`);
    assert.ok(r.maxMs < MAX_LATENCY_MS, `a good image's lookup waited ${r.maxMs.toFixed(0)} ms`);
    await d.waitForLog(/zeros chunk of 34359738368 bytes .* exceeds the 4294967296-byte limit for holes/);
  });

  it('quarantines a layer whose DiffID proof fails with an error (a CRC mismatch), not only on a mismatch', async () => {
    const dir = layerDir('crc');
    await stat(join(dir, 'info'));
    await d.waitForLog(/QUARANTINED: its DiffID proof failed: .*d\/small.*CRC/, 60_000);
    // EIO through a cached path; ENOENT once the kernel looks the layer directory up again (podman must not use it).
    await assert.rejects(readFile(join(dir, 'diff', 'd', 'small')), (e: NodeJS.ErrnoException) => e.code === 'EIO' || e.code === 'ENOENT');
    const status = JSON.parse((await runCli(['status', '--root', d.root, '--json'])).stdout) as { layers: { blobDigest: string; quarantined?: string }[]; workers: { tasks: number } };
    assert.ok(status.workers.tasks > 0, 'TOCs and proofs ran on worker threads');
    assert.match(status.layers.find((l) => l.blobDigest === images['crc']!.layers[0]!.digest)!.quarantined ?? '', /CRC/);
  });

  it('remembers a failed resolution only failure_ttl seconds', async () => {
    proxy.setRule(faultFirst(1, 'GET', BLOB_PATH, { kind: 'status', status: 404 }));
    await assert.rejects(stat(join(layerDir('late'), 'info')), (e: NodeJS.ErrnoException) => e.code === 'ENOENT');
    proxy.setRule(undefined);
    await new Promise((r) => setTimeout(r, 1500));
    await stat(join(layerDir('late'), 'info'));
    assert.equal(await readFile(join(layerDir('late'), 'diff', 'x'), 'utf8'), 'late');
  });

  it('keeps its state private: 0700 directories, 0600 files, an old world-readable root repaired', () => {
    const mode = (p: string) => statSync(p).mode & 0o777;
    assert.equal(mode(d.root), 0o700);
    for (const sub of ['cache', 'index', 'access']) assert.equal(mode(join(d.root, sub)), 0o700, sub);
    assert.equal(mode(join(d.root, 'access', 'old.json')), 0o600);
    const tree = join(d.root, 'index', `${images['good']!.layers[0]!.tocDigest!.slice(7)}.tree`);
    assert.equal(mode(tree), 0o600);
  });

  it('stops within 2 s of SIGTERM while a fetch hangs', async () => {
    const big = await buildImage([{ tar: await buildLayerTar(work, 'big', [{ path: 'big.bin', type: 'file', data: randomBytes(8 << 20) }]), compression: 'zstd:chunked' }]);
    const client = loopbackClient(registry.host);
    await pushImage(client, `${registry.host}/stall/big:v1`, big);
    await client.close();
    const dir2 = join(work, 'second');
    mkdirSync(dir2);
    const d2 = await startDaemon(dir2, { insecureHosts: [proxy.host] });
    try {
      const layer = join(d2.mountpoint, Buffer.from(`${proxy.host}/stall/big:v1`).toString('base64'), big.layers[0]!.digest);
      await stat(join(layer, 'info'));
      // Every further blob request hangs mid-body: background fetch and reads are stuck in flight.
      proxy.setRule((req) => (BLOB_PATH.test(req.url ?? '') ? { kind: 'stall-body', afterBytes: 100 } : undefined));
      void readFile(join(layer, 'diff', 'big.bin')).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 500));
      const t0 = Date.now();
      await d2.stop();
      assert.ok(Date.now() - t0 < 2000, `stopping took ${Date.now() - t0} ms`);
    } finally {
      proxy.setRule(undefined);
      await d2.stop();
    }
  });
});
