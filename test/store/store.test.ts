import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { access, open, readdir, readFile, rmdir, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDaemon, type DaemonHandle } from '../helpers/daemon.js';
import { buildImage, buildLayerTar, pushImage, type BuiltImage } from '../helpers/image-builder.js';
import { startRegistry, type RegistryServer, loopbackClient } from '../helpers/registry-server.js';

const b64 = (s: string) => Buffer.from(s).toString('base64');
const errCode = (p: Promise<unknown>) => p.then(() => 'ok', (e: NodeJS.ErrnoException) => e.code);

/** Run a shell command in a child: the test process never blocks on its own FUSE daemon, but be safe anyway. */
function sh(cmd: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => execFile('bash', ['-c', cmd], (err, stdout, stderr) => resolve({ code: err ? (err.code as number) ?? 1 : 0, out: stdout + stderr })));
}

describe('store: the additional layer store namespace on a real mount', function () {
  this.timeout(120_000);
  let work: string;
  let registry: RegistryServer;
  let daemon: DaemonHandle;
  let image: BuiltImage;
  let ref: string;
  let layerDir: (key: string, r?: string) => string;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'tocfs-store-'));
    registry = await startRegistry({});
    const client = loopbackClient(registry.host);
    const tar = await buildLayerTar(work, 'l', [
      { path: 'etc/motd', type: 'file', data: 'hello\n' },
      { path: 'usr/lib/data.bin', type: 'file', data: Buffer.alloc(300_000, 7), uid: 7, gid: 8 },
    ]);
    const plainTar = await buildLayerTar(work, 'p', [{ path: 'opt/x', type: 'file', data: 'x\n' }]);
    image = await buildImage([{ tar, compression: 'zstd:chunked' }, { tar: plainTar, compression: 'gzip' }]);
    ref = `${registry.host}/store/test:v1`;
    await pushImage(client, ref, image);
    // An index whose first instance is another platform: the layer must still be found in the second.
    const other = await buildImage([{ tar: plainTar, compression: 'gzip' }]);
    const otherRef = `${registry.host}/store/multi:other`;
    const otherDigest = await pushImage(client, otherRef, other);
    const mainDigest = await pushImage(client, `${registry.host}/store/multi:main`, image);
    const index = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: otherDigest, size: other.manifest.length, platform: { os: 'linux', architecture: 'amd64' } },
        { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: mainDigest, size: image.manifest.length, platform: { os: 'linux', architecture: 'amd64' } },
      ],
    }));
    await client.pushManifest(`${registry.host}/store/multi:v1`, index, 'application/vnd.oci.image.index.v1+json');
    await client.close();
    daemon = await startDaemon(work, { insecureHosts: [registry.host] });
    layerDir = (key, r = ref) => join(daemon.mountpoint, b64(r), key);
  });

  after(async () => {
    await daemon?.stop();
    await registry?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('serves a zstd:chunked layer under its blob digest with the podman ≤ 5.0 info', async () => {
    const l = image.layers[0]!;
    const dir = layerDir(l.digest);
    assert.deepEqual((await readdir(dir)).sort(), ['blob', 'diff', 'info', 'toc-digest']);
    const info = JSON.parse(await readFile(join(dir, 'info'), 'utf8'));
    const desc = JSON.parse(image.manifest.toString()).layers[0];
    assert.deepEqual(info, {
      'compressed-diff-digest': l.digest, 'compressed-size': desc.size, 'diff-digest': l.diffID,
      'diff-size': (await stat(join(work, 'l.tar'))).size, compression: 4, 'toc-digest': l.tocDigest, uidset: [0, 7], gidset: [0, 8],
    });
    assert.equal((await stat(join(dir, 'info'))).size, Buffer.byteLength(JSON.stringify(info)));
  });

  it('serves the same layer under its TOC digest with the podman ≥ 5.1 info', async () => {
    const l = image.layers[0]!;
    const info = JSON.parse(await readFile(join(layerDir(l.tocDigest!), 'info'), 'utf8'));
    assert.equal(info['toc-digest'], l.tocDigest);
    assert.deepEqual(info.flags, { 'expected-layer-diffid': l.diffID });
    assert.equal(info['diff-digest'], undefined);
    assert.equal(await readFile(join(layerDir(l.tocDigest!), 'toc-digest'), 'utf8'), l.tocDigest);
  });

  it('serves diff/ contents and a blob byte-identical to the registry blob', async () => {
    const dir = layerDir(image.layers[0]!.digest);
    assert.equal(await readFile(join(dir, 'diff/etc/motd'), 'utf8'), 'hello\n');
    const st = await stat(join(dir, 'diff/usr/lib/data.bin'));
    assert.deepEqual([st.size, st.uid, st.gid], [300_000, 7, 8]);
    const blob = await readFile(join(dir, 'blob'));
    assert.equal(`sha256:${createHash('sha256').update(blob).digest('hex')}`, image.layers[0]!.digest);
  });

  it('answers ENOENT at once for layers it cannot serve lazily, and for what does not exist', async () => {
    assert.equal(await errCode(stat(layerDir(image.layers[1]!.digest))), 'ENOENT', 'gzip layer');
    assert.equal(await errCode(stat(layerDir(`sha256:${'0'.repeat(64)}`))), 'ENOENT', 'unknown digest');
    assert.equal(await errCode(stat(layerDir('not-a-digest'))), 'ENOENT');
    assert.equal(await errCode(stat(join(daemon.mountpoint, '!!!not-base64'))), 'ENOENT');
    assert.equal(await errCode(stat(layerDir(image.layers[0]!.digest, `${registry.host}/store/missing:v1`))), 'ENOENT', 'unknown image');
    await daemon.waitForLog(/is plain; podman pulls it normally/);
  });

  it('finds a key in any platform-matching instance of an index', async () => {
    const info = JSON.parse(await readFile(join(layerDir(image.layers[0]!.digest, `${registry.host}/store/multi:v1`), 'info'), 'utf8'));
    assert.equal(info['diff-digest'], image.layers[0]!.diffID);
  });

  it('counts "use" on CREATE and releases on RMDIR, answering ENOENT to both as c/storage expects', async () => {
    const dir = layerDir(image.layers[0]!.tocDigest!);
    assert.equal(await errCode(open(join(dir, 'use'), 'w+')), 'ENOENT');
    assert.equal(await errCode(stat(join(dir, 'use'))), 'ENOENT');
    await daemon.waitForLog(/"uses":1,"msg":"layer in use"/);
    assert.equal(await errCode(rmdir(dir)), 'ENOENT');
    await daemon.waitForLog(/"uses":0,"msg":"layer released"/);
    assert.ok((await stat(join(dir, 'diff'))).isDirectory(), 'a released layer stays servable');
  });

  it('answers access(F_OK) with success, as podman ≥ 5.1 checks existence that way', async () => {
    await access(join(layerDir(image.layers[0]!.tocDigest!), 'diff'));
    const r = await sh(`test -e '${join(layerDir(image.layers[0]!.tocDigest!), 'info')}' && echo yes`);
    assert.equal(r.out.trim(), 'yes');
  });

  it('keeps the store root to root, and answers "not supported" for SELinux labels so ls -l stops asking', async () => {
    assert.equal((await stat(daemon.mountpoint)).mode & 0o777, 0o700);
    const file = join(layerDir(image.layers[0]!.digest), 'diff/etc/motd');
    const selinux = await sh(`getfattr -n security.selinux '${file}'`);
    assert.match(selinux.out, /Operation not supported/);
    const other = await sh(`getfattr -n user.nothing '${file}'`);
    assert.match(other.out, /No such attribute/);
  });

  it('lists what it resolved, and refuses writes inside layers', async () => {
    assert.ok((await readdir(daemon.mountpoint)).includes(b64(ref)));
    assert.ok((await readdir(join(daemon.mountpoint, b64(ref)))).includes(image.layers[0]!.digest));
    const r = await sh(`touch '${join(layerDir(image.layers[0]!.digest), 'diff', 'new')}'`);
    assert.notEqual(r.code, 0);
    assert.match(r.out, /Read-only file system/);
  });
});
