import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openChunkedLayer } from '../../src/format/index.js';
import { encodeRefName } from '../../src/store/index.js';
import { startDaemon, type DaemonHandle } from '../helpers/daemon.js';
import { buildImage, buildLayerTar, pushImage, withConfig, type BuiltImage } from '../helpers/image-builder.js';
import { Debian13Chroot, Podman5, debian13Root } from '../helpers/podman5.js';
import { startRegistry, type RegistryServer, loopbackClient } from '../helpers/registry-server.js';
import { snapshotTree } from '../helpers/tree-snapshot.js';
import { assertLayerEffects, baseLayer, HASH_ALL_FILES, topLayer } from '../helpers/e2e-image.js';



/** The same image with its config's `rootfs.diff_ids` emptied (a config podman ≥ 5.4 will not use the store for). */
function withoutDiffIds(img: BuiltImage): BuiltImage {
  return withConfig(img, (c) => { c.rootfs.diff_ids = []; });
}

interface LogLine {
  msg?: string;
  ref?: string;
  key?: string;
}

/** The daemon's JSON log lines (anything else it printed is skipped). */
function logLines(log: string): LogLine[] {
  return log.split('\n').flatMap((l) => {
    try {
      return [JSON.parse(l) as LogLine];
    } catch {
      return [];
    }
  });
}

describe('e2e: podman 5.4 (Debian 13 chroot) through tocfs (TOC-digest lookups)', function () {
  this.timeout(600_000);
  let work: string;
  let registry: RegistryServer;
  let daemon: DaemonHandle;
  let chroot: Debian13Chroot;
  let als: Podman5;
  let plain: Podman5;
  let image: BuiltImage;
  let mixedImage: BuiltImage;
  let ref: string;
  let mixedRef: string;
  let noDiffIdsRef: string;

  before(async function () {
    // First run on a machine: debootstrap of Debian 13 (about 2 minutes, cached afterwards). A failure here fails
    // the suite with the script's explanation; it never skips.
    this.timeout(1_200_000);
    const root = await debian13Root();
    work = mkdtempSync('/tmp/tocfs-e2e5-');
    registry = await startRegistry({});
    const l1 = await buildLayerTar(work, 'l1', baseLayer());
    const l2 = await buildLayerTar(work, 'l2', topLayer());
    const client = loopbackClient(registry.host);
    image = await buildImage([{ tar: l1, compression: 'zstd:chunked' }, { tar: l2, compression: 'zstd:chunked' }]);
    ref = `${registry.host}/e2e5/chunked:v1`;
    await pushImage(client, ref, image);
    mixedImage = await buildImage([{ tar: l1, compression: 'gzip' }, { tar: l2, compression: 'zstd:chunked' }]);
    mixedRef = `${registry.host}/e2e5/mixed:v1`;
    await pushImage(client, mixedRef, mixedImage);
    noDiffIdsRef = `${registry.host}/e2e5/no-diffids:v1`;
    await pushImage(client, noDiffIdsRef, withoutDiffIds(image));
    await client.close();
    daemon = await startDaemon(work, { insecureHosts: [registry.host] });
    // After the daemon mounted: the namespace takes a copy of the host's mounts, tocfs included.
    chroot = await Debian13Chroot.start(root, [work]);
    assert.match(await chroot.exec('podman', ['--version']), /^podman version 5\./);
    als = new Podman5(chroot, join(work, 'podman-als'), { als: daemon.mountpoint, insecureHosts: [registry.host] });
    plain = new Podman5(chroot, join(work, 'podman-plain'), { insecureHosts: [registry.host] });
    await als.podman(['pull', '-q', ref]);
    await plain.podman(['pull', '-q', ref]);
  });

  after(async () => {
    // Every step runs even if an earlier one fails (e.g. stop() finding a leaked mount); the first error is reported.
    const errors: unknown[] = [];
    for (const step of [() => als?.cleanup(), () => plain?.cleanup(), () => chroot?.stop(), () => daemon?.stop(), () => registry?.stop()]) {
      await Promise.resolve().then(step).catch((e: unknown) => errors.push(e));
    }
    if (work) rmSync(work, { recursive: true, force: true });
    if (errors.length) throw errors[0];
  });

  /** What the c/storage layers backed by the store point at (the `additionallayer` file: `<store>/<b64 ref>/<key>`). */
  function alsLayerPaths(p: Podman5): string[] {
    const dir = join(p.graphroot, 'overlay');
    return readdirSync(dir).filter((d) => existsSync(join(dir, d, 'additionallayer')))
      .map((d) => readFileSync(join(dir, d, 'additionallayer'), 'utf8').trim()).sort();
  }

  /** Each comparison below is only meaningful while the image really is stacked from the store. */
  function assertStoreBacked(): void {
    assert.equal(alsLayerPaths(als).length, 2, 'the image under test is backed by the store');
  }

  async function mountedTree(p: Podman5, r: string): Promise<string[]> {
    const m = (await p.podman(['image', 'mount', r])).trim();
    try {
      // The mount exists only in the chroot's namespace; the mount's own root is podman's directory, not content.
      return (await snapshotTree(p.hostPath(m))).filter((l) => !l.startsWith('/ '));
    } finally {
      await p.podman(['image', 'umount', r]);
    }
  }

  it('looks both zstd:chunked layers up by TOC digest and stacks them from the store', () => {
    const b64 = encodeRefName(ref);
    const tocs = image.layers.map((l) => l.tocDigest!);
    assert.deepEqual(alsLayerPaths(als), tocs.map((t) => `${daemon.mountpoint}/${b64}/${t}`).sort());
    assert.deepEqual(alsLayerPaths(plain), []);
    const used = logLines(daemon.log()).filter((l) => l.msg === 'layer in use' && l.ref === ref).map((l) => l.key);
    assert.deepEqual([...new Set(used)].sort(), [...tocs].sort(), 'every "use" was for a TOC-digest key');
    for (const l of image.layers) assert.ok(!daemon.log().includes(`"key":"${l.digest}"`), `blob digest ${l.digest} was never a key`);
    // What c/storage recorded from our info: TOC identity, the DiffID only as the flag that save/push verify against.
    const recorded = JSON.parse(readFileSync(join(als.graphroot, 'overlay-layers', 'layers.json'), 'utf8')) as Record<string, unknown>[];
    for (const l of image.layers) {
      const entry = recorded.find((e) => e['toc-digest'] === l.tocDigest);
      assert.ok(entry, `layers.json has the layer with TOC ${l.tocDigest}`);
      assert.deepEqual(entry['flags'], { 'expected-layer-diffid': l.diffID });
      assert.equal(entry['diff-digest'], undefined);
      assert.equal(entry['compressed-diff-digest'], l.digest);
    }
  });

  it('podman image mount shows the same tree as a normal pull (types, modes, owners, times, links, xattrs, content)', async () => {
    assertStoreBacked();
    const a = await mountedTree(als, ref);
    const b = await mountedTree(plain, ref);
    assertLayerEffects(a);
    assert.deepEqual(a, b);
  });

  it('podman run reads every file with the same bytes as a normal pull', async () => {
    assertStoreBacked();
    const cmd = HASH_ALL_FILES;
    const a = await als.run(ref, cmd);
    const b = await plain.run(ref, cmd);
    assert.ok(a.includes('/data/big.bin'));
    assert.equal(a, b);
  });

  it('podman save (OCI archive) of the store-backed image loads elsewhere identically', async () => {
    assertStoreBacked();
    const archive = join(work, 'saved.tar');
    await als.podman(['save', '--format', 'oci-archive', '-o', archive, ref]);
    const other = new Podman5(chroot, join(work, 'podman-load'), {});
    try {
      await other.podman(['load', '-q', '-i', archive]);
      const loaded = (await other.podman(['images', '--format', '{{.ID}}'])).trim().split('\n')[0]!;
      assert.deepEqual(await mountedTree(other, loaded), await mountedTree(plain, ref));
    } finally {
      await other.cleanup();
    }
  });

  it('podman push of the store-backed image re-pulls identically', async () => {
    assertStoreBacked();
    const pushed = `${registry.host}/e2e5/pushed:v1`;
    await als.podman(['push', '-q', ref, pushed]);
    await plain.podman(['pull', '-q', pushed]);
    assert.deepEqual(await mountedTree(plain, pushed), await mountedTree(plain, ref));
  });

  it('mixed image: the gzip layer is pulled without asking the store, the zstd:chunked one comes from it', async () => {
    const mixed = new Podman5(chroot, join(work, 'podman-mixed'), { als: daemon.mountpoint, insecureHosts: [registry.host] });
    try {
      await mixed.podman(['pull', '-q', mixedRef]);
      // What the store said about this image, should podman not have taken the layer from it.
      const said = () => logLines(daemon.log()).filter((l) => l.ref === mixedRef).map((l) => JSON.stringify(l)).join('\n');
      assert.deepEqual(alsLayerPaths(mixed), [`${daemon.mountpoint}/${encodeRefName(mixedRef)}/${mixedImage.layers[1]!.tocDigest!}`],
        `podman did not stack the zstd:chunked layer from the store; the store logged for ${mixedRef}:\n${said()}`);
      // podman 4.3.1 probes the gzip layer by blob digest (the store says ENOENT); podman ≥ 5.1 never asks.
      const asked = logLines(daemon.log()).filter((l) => l.ref === mixedRef).map((l) => l.key);
      assert.ok(!asked.includes(mixedImage.layers[0]!.digest), 'gzip layer never looked up');
      assert.deepEqual(await mountedTree(mixed, mixedRef), await mountedTree(plain, ref));
    } finally {
      await mixed.cleanup();
    }
  });

  it('a config without DiffIDs makes podman 5.4 skip the store and pull normally', async () => {
    const p = new Podman5(chroot, join(work, 'podman-nodiff'), { als: daemon.mountpoint, insecureHosts: [registry.host] });
    try {
      await p.podman(['pull', '-q', noDiffIdsRef]);
      assert.deepEqual(alsLayerPaths(p), []);
      assert.ok(!logLines(daemon.log()).some((l) => l.ref === noDiffIdsRef), 'the store was not consulted for this image');
      assert.deepEqual(await mountedTree(p, noDiffIdsRef), await mountedTree(plain, ref));
    } finally {
      await p.cleanup();
    }
  });

  it('podman rmi releases the layers it used', async () => {
    const released = () => logLines(daemon.log()).filter((l) => l.msg === 'layer released' && l.ref === ref).length;
    const before = released();
    await als.podman(['rmi', '-f', ref]);
    assert.ok(released() - before >= 2, `released ${released() - before} times`);
    assert.deepEqual(alsLayerPaths(als), []);
  });

  it('a corrupt chunk in the registry is an I/O error in the container, other files still read', async () => {
    const client = loopbackClient(registry.host);
    const l3 = await buildLayerTar(work, 'l3', [
      { path: 'data/victim.bin', type: 'file', data: randomBytes(50_000) },
      { path: 'data/fine.txt', type: 'file', data: `fine ${randomBytes(8).toString('hex')}\n` },
    ]);
    const base = await buildLayerTar(work, 'l1b', baseLayer().filter((i) => i.path.startsWith('bin/')));
    const img = await buildImage([{ tar: base, compression: 'zstd:chunked' }, { tar: l3, compression: 'zstd:chunked' }]);
    const badRef = `${registry.host}/e2e5/corrupt:v1`;
    await pushImage(client, badRef, img);
    await client.close();
    // Flip one byte of victim.bin's payload inside the registry's own storage.
    const layer = img.layers[1]!;
    const blob = img.blobs.get(layer.digest)!;
    const annotations = (JSON.parse(img.manifest.toString()) as { layers: { annotations: Record<string, string> }[] }).layers[1]!.annotations;
    const opened = await openChunkedLayer({ size: blob.length, read: async (s, e) => blob.subarray(s, e) }, annotations);
    const victim = opened.toc.files.find((f) => f.path === '/data/victim.bin')!;
    const at = victim.chunks[0]!.start + 20;
    const path = join(registry.storageDir, 'docker/registry/v2/blobs/sha256', layer.digest.slice(7, 9), layer.digest.slice(7), 'data');
    const stored = readFileSync(path);
    stored[at] ^= 0xff;
    writeFileSync(path, stored);
    const p = new Podman5(chroot, join(work, 'podman-corrupt'), { als: daemon.mountpoint, insecureHosts: [registry.host] });
    try {
      await p.podman(['pull', '-q', badRef]);
      assert.equal(alsLayerPaths(p).length, 2, 'both layers from the store (the TOC is intact, only a chunk is bad)');
      const out = await p.run(badRef, ['sh', '-c', 'sha256sum /data/victim.bin 2>&1; echo "victim=$?"; cat /data/fine.txt']);
      assert.match(out, /Input\/output error/);
      assert.match(out, /victim=1/);
      assert.match(out, /^fine [0-9a-f]{16}$/m);
      // The log line names image, layer, path and offsets (quotes are JSON-escaped in the log).
      assert.match(daemon.log(), new RegExp(`"msg":"${badRef.replace(/[.]/g, '\\.')} layer ${layer.digest}: \\\\"/data/victim\\.bin\\\\" chunk at file offset 0 \\(blob \\[\\d+, \\d+\\)\\): (content hashes to|cannot decompress)`));
      // The daemon still serves the image pulled earlier.
      assert.ok((await mountedTree(plain, ref)).length > 10);
    } finally {
      await p.cleanup();
    }
  });
});
