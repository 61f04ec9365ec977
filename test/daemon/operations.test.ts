import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CredentialStore } from '../../src/registry/index.js';
import { CLI, runCli } from '../helpers/cli.js';
import { startDaemon, type DaemonHandle } from '../helpers/daemon.js';
import { buildImage, buildLayerTar, pushImage, type BuiltImage } from '../helpers/image-builder.js';
import { freePort, loopbackClient, startRegistry, type RegistryServer } from '../helpers/registry-server.js';

/** Run the CLI with `input` on stdin (as podman runs the auth helper). */
function runWithStdin(args: string[], input: string): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI, ...args], (err, _out, stderr) => resolve({ code: err ? 1 : 0, stderr }));
    child.stdin!.end(input);
  });
}

describe('daemon: operating tocfs (status, auth helper, metrics, config errors)', function () {
  this.timeout(180_000);
  let work: string;
  let open: RegistryServer;
  let closed: RegistryServer;
  let image: BuiltImage;
  const daemons: DaemonHandle[] = [];
  const file = randomBytes(120_000);

  const client = (host: string, auth?: { user: string; pass: string }) => {
    const credentials = new CredentialStore();
    if (auth) credentials.set(host, { username: auth.user, password: auth.pass });
    return loopbackClient(host, credentials);
  };

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'tocfs-ops-'));
    open = await startRegistry({});
    closed = await startRegistry({ auth: 'htpasswd', users: { alice: 's3cret' } });
    const tar = await buildLayerTar(work, 'l', [{ path: 'app/data.bin', type: 'file', data: file }]);
    image = await buildImage([{ tar, compression: 'zstd:chunked' }]);
    const c1 = client(open.host);
    await pushImage(c1, `${open.host}/ops/public:v1`, image);
    await c1.close();
    const c2 = client(closed.host, { user: 'alice', pass: 's3cret' });
    await pushImage(c2, `${closed.host}/ops/private:v1`, image);
    await c2.close();
  });
  after(async () => {
    for (const d of daemons) await d.stop();
    await open?.stop();
    await closed?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  async function daemon(name: string, extra = ''): Promise<DaemonHandle> {
    const dir = join(work, name);
    mkdirSync(dir);
    const d = await startDaemon(dir, { insecureHosts: [open.host, closed.host], extraConfig: extra });
    daemons.push(d);
    return d;
  }
  const layer = (d: DaemonHandle, ref: string) => join(d.mountpoint, Buffer.from(ref).toString('base64'), image.layers[0]!.tocDigest!);

  it('tocfs status shows each layer: ref, TOC digest, bytes local, background and proof state, use count', async () => {
    const d = await daemon('status');
    const ref = `${open.host}/ops/public:v1`;
    assert.ok((await readFile(join(layer(d, ref), 'diff/app/data.bin'))).equals(file));
    const r = await runCli(['status', '--root', d.root, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout);
    assert.equal(s.mountpoint, d.mountpoint);
    const l = s.layers[0];
    assert.equal(l.ref, ref);
    assert.equal(l.tocDigest, image.layers[0]!.tocDigest);
    assert.equal(l.generation, 'toc');
    assert.ok(l.fetchedBytes > 0 && l.fetchedBytes <= l.compressedSize, `each chunk is fetched once: ${JSON.stringify(l)}`);
    assert.equal(l.servedBytes, file.length);
    assert.ok(l.localPercent > 0);
    const text = await runCli(['status', '--root', d.root]);
    assert.match(text.stdout, new RegExp(`${ref.replace(/[.]/g, '\\.')}  ${image.layers[0]!.tocDigest}`));
    assert.match(text.stdout, /DiffID proof (proven|running|pending)/);
  });

  it('tocfs auth-helper hands podman\'s credentials to the daemon, which then pulls the private image', async () => {
    const d = await daemon('auth');
    const ref = `${closed.host}/ops/private:v1`;
    await assert.rejects(stat(join(layer(d, ref), 'info')), (e: NodeJS.ErrnoException) => e.code === 'ENOENT');
    const doc = JSON.stringify({ [ref]: { username: 'alice', password: 's3cret', identityToken: '' } });
    const h = await runWithStdin(['auth-helper', '--root', d.root], doc);
    assert.equal(h.code, 0, h.stderr);
    assert.ok((await readFile(join(layer(d, ref), 'diff/app/data.bin'))).equals(file));
    assert.ok(!d.log().includes('s3cret'), 'the password never reaches the log');
  });

  it('serves Prometheus metrics when asked to', async () => {
    const port = await freePort();
    const d = await daemon('metrics', `metrics_listen = "127.0.0.1:${port}"\n`);
    await readFile(join(layer(d, `${open.host}/ops/public:v1`), 'diff/app/data.bin'));
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    const text = await res.text();
    // Foreground reads and the background fetch share in-flight chunks: either may have fetched the bytes.
    assert.match(text, /tocfs_fetched_bytes_total\{kind="(foreground|background)"\} [1-9]/);
    assert.match(text, /tocfs_fuse_op_seconds_count\{op="read",result="ok"\} [1-9]/);
    assert.match(text, /tocfs_layers_resolved [1-9]/);
    assert.match(text, /tocfs_fetch_seconds_bucket/);
  });

  it('refuses a bad config file, naming the file, the key and what is allowed', async () => {
    const bad = join(work, 'bad.toml');
    writeFileSync(bad, 'diffid_proof = "sometimes"\n');
    const r = await runCli(['mount', join(work, 'never'), '--config', bad]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(`${bad}: diffid_proof must be "background", "before-use" or "off"`));
    writeFileSync(bad, 'cache_size = 1\n');
    const r2 = await runCli(['mount', join(work, 'never'), '--config', bad]);
    assert.match(r2.stderr, /unknown key "cache_size"/);
    const r3 = await runCli(['status', '--socket', join(work, 'nothing.sock')]);
    assert.match(r3.stderr, /cannot reach the tocfs daemon at .*nothing\.sock/);
  });
});
