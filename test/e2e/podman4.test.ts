import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openChunkedLayer } from '../../src/format/index.js';
import { runCli } from '../helpers/cli.js';
import { startDaemon, type DaemonHandle } from '../helpers/daemon.js';
import { buildImage, buildLayerTar, pushImage, type BuiltImage } from '../helpers/image-builder.js';
import { Podman } from '../helpers/podman.js';
import { startRegistry, type RegistryServer, loopbackClient } from '../helpers/registry-server.js';
import { snapshotTree } from '../helpers/tree-snapshot.js';
import { assertLayerEffects, baseLayer, HASH_ALL_FILES, topLayer } from '../helpers/e2e-image.js';



describe('e2e: podman 4.3.1 through tocfs (blob-digest lookups)', function () {
  this.timeout(600_000);
  let work: string;
  let registry: RegistryServer;
  let daemon: DaemonHandle;
  let als: Podman;
  let plain: Podman;
  let image: BuiltImage;
  let ref: string;
  let mixedRef: string;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'tocfs-e2e4-'));
    registry = await startRegistry({});
    const l1 = await buildLayerTar(work, 'l1', baseLayer());
    const l2 = await buildLayerTar(work, 'l2', topLayer());
    const client = loopbackClient(registry.host);
    image = await buildImage([{ tar: l1, compression: 'zstd:chunked' }, { tar: l2, compression: 'zstd:chunked' }]);
    ref = `${registry.host}/e2e/chunked:v1`;
    await pushImage(client, ref, image);
    mixedRef = `${registry.host}/e2e/mixed:v1`;
    await pushImage(client, mixedRef, await buildImage([{ tar: l1, compression: 'gzip' }, { tar: l2, compression: 'zstd:chunked' }]));
    await client.close();
    daemon = await startDaemon(work, { insecureHosts: [registry.host] });
    als = new Podman(join(work, 'podman-als'), { als: daemon.mountpoint, insecureHosts: [registry.host] });
    plain = new Podman(join(work, 'podman-plain'), { insecureHosts: [registry.host] });
    await als.podman(['pull', '-q', ref]);
    await plain.podman(['pull', '-q', ref]);
  });

  after(async () => {
    await als?.cleanup();
    await plain?.cleanup();
    await daemon?.stop();
    await registry?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  async function mountedTree(p: Podman, r: string): Promise<string[]> {
    const m = (await p.podman(['image', 'mount', r])).trim();
    try {
      // The mount's own root is podman's directory (its mode and mtime vary between mounts), not image content.
      return (await snapshotTree(m)).filter((l) => !l.startsWith('/ '));
    } finally {
      await p.podman(['image', 'umount', r]);
    }
  }

  it('pulls both layers through the store instead of downloading them', async () => {
    assert.equal(als.alsLayerCount(), 2);
    assert.equal(plain.alsLayerCount(), 0);
    await daemon.waitForLog(/"msg":"layer resolved"/);
  });

  it('podman image mount shows the same tree as a normal pull (types, modes, owners, times, links, xattrs, content)', async () => {
    const a = await mountedTree(als, ref);
    const b = await mountedTree(plain, ref);
    assertLayerEffects(a);
    assert.deepEqual(a, b);
  });

  it('podman run reads every file with the same bytes as a normal pull', async () => {
    const cmd = HASH_ALL_FILES;
    const a = await als.run(ref, cmd);
    const b = await plain.run(ref, cmd);
    assert.ok(a.includes('/data/big.bin'));
    assert.equal(a, b);
  });

  it('once layers are local and proven, containers exec and read big files by FUSE passthrough, with the same bytes', async () => {
    await daemon.waitForLog(/"msg":"DiffID proven"[\s\S]*"msg":"DiffID proven"/, 120_000);
    const expected = await plain.run(ref, HASH_ALL_FILES);
    // The first run's opens have complete copies made of busybox and data/big.bin; the next run's opens use them.
    assert.equal(await als.run(ref, HASH_ALL_FILES), expected);
    await daemon.waitForLog(/"msg":"passthrough: complete file ready"[\s\S]*"msg":"passthrough: complete file ready"/, 60_000);
    assert.equal(await als.run(ref, HASH_ALL_FILES), expected);
    const r = await runCli(['status', '--root', daemon.root, '--json']);
    const pt = (JSON.parse(r.stdout) as { passthrough?: { on: boolean; opens: number } }).passthrough;
    assert.equal(pt?.on, true, JSON.stringify(pt));
    assert.ok((pt?.opens ?? 0) >= 2, `busybox (exec'd) and data/big.bin through passthrough: ${JSON.stringify(pt)}`);
  });

  it('podman save (OCI archive) of the ALS-backed image loads elsewhere identically', async () => {
    const archive = join(work, 'saved.tar');
    await als.podman(['save', '--format', 'oci-archive', '-o', archive, ref]);
    const other = new Podman(join(work, 'podman-load'), {});
    try {
      await other.podman(['load', '-q', '-i', archive]);
      const loaded = (await other.podman(['images', '--format', '{{.ID}}'])).trim().split('\n')[0]!;
      assert.deepEqual(await mountedTree(other, loaded), await mountedTree(plain, ref));
    } finally {
      await other.cleanup();
    }
  });

  it('podman push of the ALS-backed image re-pulls identically', async () => {
    const pushed = `${registry.host}/e2e/pushed:v1`;
    await als.podman(['push', '-q', ref, pushed]);
    await plain.podman(['pull', '-q', pushed]);
    assert.deepEqual(await mountedTree(plain, pushed), await mountedTree(plain, ref));
  });

  it('works for a mixed image: the gzip layer is pulled normally, the zstd:chunked one lazily', async () => {
    const mixed = new Podman(join(work, 'podman-mixed'), { als: daemon.mountpoint, insecureHosts: [registry.host] });
    try {
      await mixed.podman(['pull', '-q', mixedRef]);
      assert.equal(mixed.alsLayerCount(), 1);
      assert.deepEqual(await mountedTree(mixed, mixedRef), await mountedTree(plain, ref));
    } finally {
      await mixed.cleanup();
    }
  });

  it('podman rmi releases the layers it used', async () => {
    const released = () => (daemon.log().match(/"msg":"layer released"/g) ?? []).length;
    const before = released();
    await als.podman(['rmi', '-f', ref]);
    const end = Date.now() + 10_000;
    while (released() - before < 2 && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    assert.ok(released() - before >= 2, `released ${released() - before} times`);
  });

  it('a corrupt chunk in the registry is an I/O error in the container, other files still read', async () => {
    const client = loopbackClient(registry.host);
    const victimData = randomBytes(50_000);
    const l3 = await buildLayerTar(work, 'l3', [
      { path: 'data/victim.bin', type: 'file', data: victimData },
      { path: 'data/fine.txt', type: 'file', data: `fine ${randomBytes(8).toString('hex')}\n` },
    ]);
    const base = await buildLayerTar(work, 'l1b', baseLayer().filter((i) => i.path.startsWith('bin/')));
    const img = await buildImage([{ tar: base, compression: 'zstd:chunked' }, { tar: l3, compression: 'zstd:chunked' }]);
    const badRef = `${registry.host}/e2e/corrupt:v1`;
    await pushImage(client, badRef, img);
    await client.close();
    // Flip one byte of victim.bin's payload inside the registry's own storage.
    const layer = img.layers[1]!;
    const blob = img.blobs.get(layer.digest)!;
    const opened = await openChunkedLayer({ size: blob.length, read: async (s, e) => blob.subarray(s, e) }, JSON.parse(img.manifest.toString()).layers[1].annotations);
    const victim = opened.toc.files.find((f) => f.path === '/data/victim.bin')!;
    const at = victim.chunks[0]!.start + 20;
    const path = join(registry.storageDir, 'docker/registry/v2/blobs/sha256', layer.digest.slice(7, 9), layer.digest.slice(7), 'data');
    const stored = readFileSync(path);
    stored[at] ^= 0xff;
    writeFileSync(path, stored);
    const p = new Podman(join(work, 'podman-corrupt'), { als: daemon.mountpoint, insecureHosts: [registry.host] });
    try {
      await p.podman(['pull', '-q', badRef]);
      const out = await p.run(badRef, ['sh', '-c', 'sha256sum /data/victim.bin 2>&1; echo "victim=$?"; cat /data/fine.txt']);
      assert.match(out, /Input\/output error/);
      assert.match(out, /victim=1/);
      assert.match(out, /^fine [0-9a-f]{16}$/m);
      // The log line names image, layer, path and offsets (quotes are JSON-escaped in the log).
      await daemon.waitForLog(new RegExp(`"msg":"${badRef.replace(/[.]/g, '\\.')} layer ${layer.digest}: \\\\"/data/victim\\.bin\\\\" chunk at file offset 0 \\(blob \\[\\d+, \\d+\\)\\): (content hashes to|cannot decompress)`));
      // The daemon still serves the image pulled earlier.
      assert.ok((await mountedTree(plain, ref)).length > 10);
      assert.ok(existsSync(join(daemon.mountpoint)));
    } finally {
      await p.cleanup();
    }
  });
});
