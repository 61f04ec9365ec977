import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { startDaemon } from '../helpers/daemon.js';
import { BLOB_PATH, startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { buildImage, buildLayerTar, pushImage, type BuiltImage } from '../helpers/image-builder.js';
import { startRegistry, type RegistryServer, loopbackClient } from '../helpers/registry-server.js';

describe('store: persistent disk cache across daemon restarts', function () {
  this.timeout(180_000);
  let work: string;
  let registry: RegistryServer;
  let proxy: FaultProxy;
  let image: BuiltImage;
  let ref: string;
  const files = Array.from({ length: 6 }, (_, i) => ({ path: `data/f${i}.bin`, data: randomBytes(300_000 + i * 1000) }));

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'tocfs-restart-'));
    registry = await startRegistry({});
    proxy = await startFaultProxy(registry.url);
    const tar = await buildLayerTar(work, 'l', files.map((f) => ({ ...f, type: 'file' as const })));
    image = await buildImage([{ tar, compression: 'zstd:chunked' }]);
    // Every read goes through the counting proxy: the image is named by the proxy's address.
    ref = `${proxy.host}/restart/test:v1`;
    const client = loopbackClient(proxy.host);
    await pushImage(client, ref, image);
    await client.close();
  });
  after(async () => {
    await proxy?.stop();
    await registry?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const readAll = async (mountpoint: string) => {
    const dir = join(mountpoint, Buffer.from(ref).toString('base64'), image.layers[0]!.digest, 'diff');
    for (const f of files) assert.ok((await readFile(join(dir, f.path))).equals(f.data), f.path);
  };

  it('serves a restarted daemon from the warm cache: 0 blob bytes refetched', async () => {
    const d1 = await startDaemon(work, { insecureHosts: [proxy.host] });
    try {
      proxy.clear();
      await readAll(d1.mountpoint);
      assert.ok(proxy.count('GET', BLOB_PATH) > 0, 'the first run fetched');
    } finally {
      await d1.stop();
    }
    const d2 = await startDaemon(work, { insecureHosts: [proxy.host] });
    try {
      proxy.clear();
      await readAll(d2.mountpoint);
      // Only the manifest and config are fetched again (no range request at all): the layer's tree was kept per
      // TOC digest (no TOC fetch, no parse), and every chunk comes from the disk cache.
      const ranges = proxy.requests.filter((r) => r.method === 'GET' && BLOB_PATH.test(r.path) && r.range);
      assert.equal(ranges.length, 0, JSON.stringify(ranges));
      assert.match(d2.log(), /"msg":"layer resolved"/);
      assert.match(d2.log(), /"msg":"disk cache listed"/);
    } finally {
      await d2.stop();
    }
  });

  it('tocfs gc trims the cache to a size', async () => {
    const r = await runCli(['gc', '--root', join(work, 'state'), '--max-size', '0']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /removed [1-9]\d* chunks .* 0 bytes kept/);
    // The layer's kept tree was loaded by the restarted daemon just now: a 30-day gc keeps it, a 0-day one does not.
    assert.match(r.stdout, /index: removed 0 layer trees not loaded for 30 days \(0 bytes\); 1 kept/);
    const r0 = await runCli(['gc', '--root', join(work, 'state'), '--max-size', '0', '--index-days', '0']);
    assert.match(r0.stdout, /index: removed 1 layer trees not loaded for 0 days \(\d+ bytes\); 0 kept/);
    assert.deepEqual(readdirSync(join(work, 'state', 'index')), []);
  });
});
