import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, linkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { OciLayout } from '../../src/convert/index.js';
import { runCli, run } from '../helpers/cli.js';

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Make a layer tar with GNU tar from a small tree (real tool, real tar quirks). */
async function makeTar(dir: string, name: string, files: Record<string, Buffer>): Promise<string> {
  const root = join(dir, `${name}-root`);
  for (const [p, data] of Object.entries(files)) {
    mkdirSync(join(root, p, '..'), { recursive: true });
    writeFileSync(join(root, p), data);
  }
  const tar = join(dir, `${name}.tar`);
  await run('tar', ['--sort=name', '--mtime=2024-01-01 00:00:00Z', '--owner=0', '--group=0', '--numeric-owner', '-cf', tar, '-C', root, '.']);
  return tar;
}

/** An OCI layout of two gzip layers, built by hand as an image builder would. */
function makeGzipLayout(dir: string, tars: string[], name = 'src-layout'): { diffIDs: string[] } {
  const layout = join(dir, name);
  mkdirSync(join(layout, 'blobs', 'sha256'), { recursive: true });
  const put = (b: Buffer) => { const d = sha(b); writeFileSync(join(layout, 'blobs', 'sha256', d.slice(7)), b); return d; };
  const diffIDs: string[] = [];
  const layers = tars.map((t) => {
    const raw = readFileSync(t);
    diffIDs.push(sha(raw));
    const gz = gzipSync(raw);
    return { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: put(gz), size: gz.length };
  });
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Cmd: ['/bin/sh'] }, rootfs: { type: 'layers', diff_ids: diffIDs } }));
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: put(config), size: config.length }, layers,
  }));
  const md = put(manifest);
  writeFileSync(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: md, size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': 'v1' } }] }));
  return { diffIDs };
}

describe('convert: images to zstd:chunked', () => {
  let tmp: string;
  before(() => { tmp = mkdtempSync(join(tmpdir(), 'tocfs-convert-')); });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it('converts an OCI layout of gzip layers; DiffIDs stay, every layer inspects clean, skopeo accepts the result', async () => {
    const big = Buffer.concat([randomBytes(300_000), Buffer.alloc(5000), randomBytes(200_000)]);
    const t1 = await makeTar(tmp, 'l1', { 'etc/hostname': Buffer.from('tocfs\n'), 'usr/bin/big': big, 'usr/share/empty': Buffer.alloc(0) });
    const t2 = await makeTar(tmp, 'l2', { 'etc/motd': Buffer.from('hello\n'), 'var/lib/data': randomBytes(70_000) });
    const { diffIDs } = makeGzipLayout(tmp, [t1, t2]);
    const dst = join(tmp, 'dst-layout');
    const r = await runCli(['convert', `oci:${join(tmp, 'src-layout')}:v1`, `oci:${dst}:chunked`, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.deepEqual(report.layers.map((l: { diffID: string }) => l.diffID), diffIDs);
    const { manifest } = await new OciLayout(dst).readImage('chunked');
    assert.equal(manifest.layers.length, 2);
    for (const [i, layer] of manifest.layers.entries()) {
      assert.equal(layer.mediaType, 'application/vnd.oci.image.layer.v1.tar+zstd');
      assert.ok(layer.annotations?.['io.github.containers.zstd-chunked.manifest-checksum']);
      writeFileSync(join(tmp, `desc${i}.json`), JSON.stringify(layer));
      const ins = await runCli(['inspect', join(dst, 'blobs', 'sha256', layer.digest.slice(7)), '--descriptor', join(tmp, `desc${i}.json`), '--json']);
      assert.equal(ins.code, 0, ins.stderr);
      assert.equal(JSON.parse(ins.stdout).diffID, diffIDs[i]);
    }
    // skopeo re-verifies every blob digest and the manifest while copying.
    await run('skopeo', ['copy', '--quiet', `oci:${dst}:chunked`, `dir:${join(tmp, 'skopeo-dir')}`]);
    const copied = JSON.parse(readFileSync(join(tmp, 'skopeo-dir', 'manifest.json'), 'utf8'));
    assert.equal(copied.layers[1].digest, manifest.layers[1]!.digest);
  });

  it('converts a single layer tar with hardlinks and symlinks into a one-layer image', async () => {
    const root = join(tmp, 'links-root');
    mkdirSync(join(root, 'bin'), { recursive: true });
    writeFileSync(join(root, 'bin', 'tool'), randomBytes(100_000));
    linkSync(join(root, 'bin', 'tool'), join(root, 'bin', 'tool-link'));
    symlinkSync('tool', join(root, 'bin', 'rel'));
    const tar = join(tmp, 'links.tar');
    await run('tar', ['--format=pax', '-cf', tar, '-C', root, '.']);
    const dst = join(tmp, 'one');
    const r = await runCli(['convert', tar, `oci:${dst}`, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.layers[0].diffID, sha(readFileSync(tar)));
    const img = await new OciLayout(dst).readImage(undefined);
    const config = JSON.parse((await new OciLayout(dst).readBlob(img.manifest.config.digest)).toString());
    assert.deepEqual(config.rootfs.diff_ids, [sha(readFileSync(tar))]);
  });

  it('keeps zstd:chunked layers as they are when converting again', async () => {
    const r = await runCli(['convert', `oci:${join(tmp, 'dst-layout')}:chunked`, `oci:${join(tmp, 'again')}`, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.ok(report.layers.every((l: { converted: boolean; from: string; to: string }) => !l.converted && l.from === l.to));
  });

  it('writes prefetch hints: each listed path on the topmost layer that has it, for converted and for kept layers', async () => {
    const a = await makeTar(tmp, 'ha', { 'etc/hostname': Buffer.from('a\n'), 'usr/bin/tool': randomBytes(50_000), 'usr/bin/gone': Buffer.from('x') });
    // The upper layer deletes usr/bin/gone (an overlay whiteout): no container can read it.
    const b = await makeTar(tmp, 'hb', { 'etc/hostname': Buffer.from('b\n'), 'etc/motd': Buffer.from('hi\n'), 'usr/bin/.wh.gone': Buffer.alloc(0) });
    makeGzipLayout(tmp, [a, b], 'hint-src');
    const list = join(tmp, 'prefetch.txt');
    writeFileSync(list, '# what the app reads first\n/usr/bin/tool\n/etc/hostname\n\n/no/such/file\n/etc//motd\n/usr/bin/tool\n/etc\n/usr/bin/gone\n');
    const out = join(tmp, 'hinted');
    for (const [src, tag] of [[`oci:${join(tmp, 'hint-src')}:v1`, 'converted'], [`oci:${out}:converted`, 'kept']] as const) {
      const r = await runCli(['convert', src, `oci:${out}:${tag}`, '--prefetch', list]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /prefetch hint: 3 paths \(per layer: 1, 2\)/);
      assert.match(r.stderr, /3 path\(s\) of .*prefetch\.txt name no regular file a container of the image reads \(absent, not a regular file, or deleted by an upper layer\); left out: \/no\/such\/file, \/etc, \/usr\/bin\/gone\n/);
      const { manifest } = await new OciLayout(out).readImage(tag);
      const hint = (i: number): unknown => JSON.parse(manifest.layers[i]!.annotations!['io.github.tocfs.prefetch']!);
      assert.deepEqual(hint(0), ['/usr/bin/tool']);
      assert.deepEqual(hint(1), ['/etc/hostname', '/etc/motd'], 'the upper layer has the copy a container reads');
    }
    // Without --prefetch, a kept layer keeps its hint; the layers themselves are never rewritten for it.
    const again = await runCli(['convert', `oci:${out}:kept`, `oci:${out}:again`, '--json']);
    assert.equal(again.code, 0, again.stderr);
    const { manifest } = await new OciLayout(out).readImage('again');
    assert.ok(manifest.layers[1]!.annotations!['io.github.tocfs.prefetch']);
  });

  it('refuses a relative path in the prefetch list, naming it and the file', async () => {
    const list = join(tmp, 'relative.txt');
    writeFileSync(list, '/etc/motd\nusr/bin/tool\n');
    const r = await runCli(['convert', `oci:${join(tmp, 'hint-src')}:v1`, `oci:${join(tmp, 'nope')}`, '--prefetch', list]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--prefetch .*relative\.txt: "usr\/bin\/tool" is not an absolute path/);
  });

  it('names the layer when a source blob does not match its digest', async () => {
    const layout = join(tmp, 'src-layout');
    const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8'));
    const manifest = JSON.parse(readFileSync(join(layout, 'blobs', 'sha256', index.manifests[0].digest.slice(7)), 'utf8'));
    const victim = join(layout, 'blobs', 'sha256', manifest.layers[1].digest.slice(7));
    const bytes = readFileSync(victim);
    writeFileSync(victim, Buffer.concat([bytes, gzipSync(Buffer.alloc(10))]));
    const r = await runCli(['convert', `oci:${layout}:v1`, `oci:${join(tmp, 'bad')}`]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(manifest.layers[1].digest));
  });

  it('rejects unknown transports with a hint', async () => {
    const r = await runCli(['convert', 'ftp:thing', `oci:${join(tmp, 'x')}`]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /unknown transport; use oci:<dir>\[:<tag>\]/);
  });
});

describe('convert: to and from a registry', function () {
  this.timeout(120_000);
  let tmp: string;
  let registry: import('../helpers/registry-server.js').RegistryServer;
  before(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'tocfs-convert-reg-'));
    registry = await (await import('../helpers/registry-server.js')).startRegistry({});
  });
  after(async () => {
    await registry?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('pushes a converted image to docker:// and reads it back unchanged, with verified layers', async () => {
    const t = await makeTar(tmp, 'r1', { 'etc/os-release': Buffer.from('ID=test\n'), 'usr/lib/blob': randomBytes(150_000) });
    const { diffIDs } = makeGzipLayout(tmp, [t]);
    const ref = `${registry.host}/convert/pushed:v1`;
    const pushed = await runCli(['convert', `oci:${join(tmp, 'src-layout')}:v1`, `docker://${ref}`, '--insecure', '--json']);
    assert.equal(pushed.code, 0, pushed.stderr);
    const back = await runCli(['convert', `docker://${ref}`, `oci:${join(tmp, 'back')}:v1`, '--insecure', '--json']);
    assert.equal(back.code, 0, back.stderr);
    const a = JSON.parse(pushed.stdout);
    const b = JSON.parse(back.stdout);
    assert.deepEqual(b.layers.map((l: { to: string }) => l.to), a.layers.map((l: { to: string }) => l.to), 'zstd:chunked layers come back as they are');
    assert.deepEqual(b.layers.map((l: { diffID: string }) => l.diffID), diffIDs);
    assert.equal(b.manifestDigest, a.manifestDigest, 'the same manifest bytes');
  });
});
