// FUSE passthrough of big files complete on local disk (kernel FUSE mount, real docker-registry): the bytes are right
// through tocfs and through an overlay mount stacked on it, the status counts the opens, tocfs works as before where
// passthrough is unavailable, and nothing but verified bytes is ever assembled into a file the kernel reads directly.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DaemonStatus } from '../../src/daemon/index.js';
import { TarBuilder } from '../format/tar-builder.js';
import { runCli, run } from '../helpers/cli.js';
import { startDaemon, type DaemonHandle } from '../helpers/daemon.js';
import { imageOfTar } from '../helpers/hostile-images.js';
import { pushImage, type BuiltImage } from '../helpers/image-builder.js';
import { loopbackClient, startRegistry, type RegistryServer } from '../helpers/registry-server.js';

const hex = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function waitUntil(check: () => Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('daemon: FUSE passthrough of files complete on local disk', function () {
  this.timeout(120_000);
  let work: string;
  let registry: RegistryServer;
  let image: BuiltImage;
  const big = randomBytes(3 << 20);
  const small = randomBytes(10_000);
  const daemons: DaemonHandle[] = [];
  const ref = () => `${registry.host}/pt/app:v1`;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'tocfs-passthrough-'));
    registry = await startRegistry({});
    image = await imageOfTar(new TarBuilder().file('big.bin', big).file('small.txt', small).build());
    const client = loopbackClient(registry.host);
    await pushImage(client, ref(), image);
    await client.close();
  });
  after(async () => {
    for (const d of daemons) await d.stop();
    await registry?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  async function daemon(dir: string, opts: { extra?: string; env?: Record<string, string> } = {}): Promise<DaemonHandle> {
    mkdirSync(join(work, dir), { recursive: true });
    const d = await startDaemon(join(work, dir), { insecureHosts: [registry.host], extraConfig: `diffid_proof = "off"\n${opts.extra ?? ''}`, ...(opts.env ? { env: opts.env } : {}) });
    daemons.push(d);
    return d;
  }
  const diff = (d: DaemonHandle) => join(d.mountpoint, Buffer.from(ref()).toString('base64'), image.layers[0]!.digest, 'diff');
  async function status(d: DaemonHandle): Promise<DaemonStatus> {
    const r = await runCli(['status', '--root', d.root, '--json']);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as DaemonStatus;
  }
  /** Resolve the layer and wait until the background fetch has put all of it in the disk cache. */
  async function local(d: DaemonHandle): Promise<void> {
    await stat(join(diff(d), '..', 'info'));
    await d.waitForLog(/"msg":"layer fully local"/, 60_000);
  }
  const assembledDir = (d: DaemonHandle) => join(d.root, 'cache', 'files');
  const readyLogs = (d: DaemonHandle) => d.log().match(/"msg":"passthrough: complete file ready"/g)?.length ?? 0;

  it('serves a fully local big file by passthrough, with its bytes, also through an overlay mount on top', async () => {
    const d = await daemon('on');
    await local(d);
    // The first open is served as usual and has a complete copy made for the next ones.
    assert.ok((await readFile(join(diff(d), 'big.bin'))).equals(big));
    await d.waitForLog(/"msg":"passthrough: complete file ready"/, 30_000);
    const copy = join(assembledDir(d), hex(big));
    assert.ok(readFileSync(copy).equals(big));
    assert.equal(statSync(copy).mode & 0o777, 0o600);
    const before = await status(d);
    assert.equal(before.passthrough?.on, true, JSON.stringify(before.passthrough));
    assert.equal(before.passthrough?.opens, 0);
    assert.equal(before.passthrough?.files, 1);
    assert.ok((before.cache.disk?.bytes ?? 0) >= big.length * 2, 'the copy counts in the disk cache budget');

    assert.ok((await readFile(join(diff(d), 'big.bin'))).equals(big));
    assert.ok((await readFile(join(diff(d), 'small.txt'))).equals(small), 'small files are served as usual');
    const after = await status(d);
    assert.equal(after.passthrough?.opens, 1);
    assert.equal(after.passthrough?.active, 0, 'the backing file is unregistered when its last open is released');
    assert.equal(after.layers[0]!.servedBytes, before.layers[0]!.servedBytes + small.length, 'no READ of big.bin reached tocfs');
    assert.match((await runCli(['status', '--root', d.root])).stdout, /passthrough {3}on: 1 opens read by the kernel directly/);

    // podman's case: overlayfs stacked on the tocfs diff directory (our stack depth 1 leaves it room).
    const ov = join(work, 'overlay');
    for (const sub of ['upper', 'work', 'merged']) mkdirSync(join(ov, sub), { recursive: true });
    // The layer path holds "sha256:", and ':' separates lower dirs: podman too names its lowers by short links.
    symlinkSync(diff(d), join(ov, 'lower'));
    await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${join(ov, 'lower')},upperdir=${join(ov, 'upper')},workdir=${join(ov, 'work')}`, join(ov, 'merged')]);
    try {
      assert.ok((await readFile(join(ov, 'merged', 'big.bin'))).equals(big));
      assert.ok((await readFile(join(ov, 'merged', 'small.txt'))).equals(small));
    } finally {
      await run('umount', [join(ov, 'merged')]);
    }
    assert.equal((await status(d)).passthrough?.opens, 2);
  });

  it('a file read while its layer is still being fetched gets its copy when the layer is local, for its next open', async () => {
    const d = await daemon('early');
    assert.ok((await readFile(join(diff(d), 'big.bin'))).equals(big), 'read at once: fetched, not local yet');
    await d.waitForLog(/"msg":"layer fully local"/, 60_000);
    await d.waitForLog(/"msg":"passthrough: complete file ready"/, 30_000);
    assert.ok((await readFile(join(diff(d), 'big.bin'))).equals(big));
    assert.equal((await status(d)).passthrough?.opens, 1);
  });

  it('a server that takes over (kill -9) keeps the backing file the kernel still uses, and gives no new passthrough', async () => {
    const d = await daemon('respawn');
    await local(d);
    const path = join(diff(d), 'big.bin');
    assert.ok((await readFile(path)).equals(big));
    await d.waitForLog(/"msg":"passthrough: complete file ready"/, 30_000);
    // A reader keeps the file open by passthrough across the server's death.
    const holder = spawn('sh', ['-c', `exec 3< '${path}'; read _ ; sha256sum <&3`], { stdio: ['pipe', 'pipe', 'inherit'] });
    let held = '';
    holder.stdout!.on('data', (c: Buffer) => (held += c.toString()));
    await waitUntil(async () => ((await status(d)).passthrough?.active ?? 0) === 1, 'the holder\'s passthrough open');
    const first = d.serverPid()!;
    process.kill(first, 'SIGKILL');
    await d.waitForLog(/"msg":"server resumed the mount"/, 30_000);
    // New opens of that node must use the same backing file (an open the other way fails while the holder's lasts).
    assert.ok((await readFile(path)).equals(big));
    assert.ok((await readFile(path)).equals(big));
    holder.stdin!.end('\n');
    await new Promise((r) => holder.once('exit', r));
    assert.equal(held.split(' ')[0], hex(big));
    const s = await status(d);
    assert.equal(s.passthrough?.on, true);
    assert.equal(s.passthrough?.opens, 2, 'the inherited backing file served the new opens');
    // After the holder is gone, the restored layer stays on the page-cache path (opens this server never saw may exist).
    assert.ok((await readFile(path)).equals(big));
    assert.ok((await readFile(join(diff(d), 'small.txt'))).equals(small));
  });

  it('works as before where passthrough is unavailable (no addon, or passthrough = false), saying why', async () => {
    const cases = [
      { dir: 'no-addon', opts: { env: { TOCFS_NO_PASSTHROUGH: '1' } }, why: /TOCFS_NO_PASSTHROUGH=1/ },
      { dir: 'config-off', opts: { extra: 'passthrough = false\n' }, why: /passthrough = false/ },
    ];
    for (const c of cases) {
      const d = await daemon(c.dir, c.opts);
      await local(d);
      for (let i = 0; i < 3; i++) assert.ok((await readFile(join(diff(d), 'big.bin'))).equals(big));
      const s = await status(d);
      assert.equal(s.passthrough?.on, false);
      assert.match(s.passthrough?.why ?? '', c.why);
      assert.equal(s.passthrough?.opens, 0);
      assert.equal(readdirSync(assembledDir(d)).length, 0, 'nothing assembled');
      assert.match(d.log(), /"msg":"FUSE passthrough off: /);
      await d.stop();
    }
  });

  it('never assembles a corrupt disk-cache chunk, nor serves a damaged copy from an earlier run', async () => {
    const dir = 'corrupt';
    let d = await daemon(dir);
    await local(d);
    await d.stop();
    // Damage every chunk file in the disk cache (a bit flip on disk, or tampering).
    const chunks = join(d.root, 'cache', 'sha256');
    for (const sub of readdirSync(chunks)) {
      for (const name of readdirSync(join(chunks, sub))) {
        const p = join(chunks, sub, name);
        const b = readFileSync(p);
        b[b.length >> 1]! ^= 0x40;
        writeFileSync(p, b);
      }
    }
    d = await daemon(dir);
    await stat(join(diff(d), '..', 'info'));
    // An open without a read asks for a copy: the assembler finds the damaged chunks and refuses.
    await run('sh', ['-c', `: < '${join(diff(d), 'big.bin')}'`]);
    await d.waitForLog(/does not match its digest; removed/, 30_000);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(readdirSync(assembledDir(d)).filter((n) => !n.startsWith('.')).length, 0, 'no copy made of damaged chunks');
    assert.equal(readyLogs(d), 0);
    // Reads refetch and verify what is damaged, and the bytes are right.
    assert.ok((await readFile(join(diff(d), 'big.bin'))).equals(big));
    // Once the good chunks are back on disk (and the retry pause is over), a later open gets a good copy.
    const deadline = Date.now() + 30_000;
    while (readyLogs(d) === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 1000));
      await run('sh', ['-c', `: < '${join(diff(d), 'big.bin')}'`]);
    }
    assert.equal(readyLogs(d), 1, 'a copy from the refetched chunks');
    assert.ok(readFileSync(join(assembledDir(d), hex(big))).equals(big));
    assert.ok((await readFile(join(diff(d), 'big.bin'))).equals(big));
    assert.ok(((await status(d)).passthrough?.opens ?? 0) >= 1);
    await d.stop();

    // The copy itself damaged while the daemon was down: the next daemon checks it before any use, and remakes it.
    const copy = join(assembledDir(d), hex(big));
    const b = readFileSync(copy);
    b[12345]! ^= 1;
    chmodSync(copy, 0o600);
    writeFileSync(copy, b);
    d = await daemon(dir);
    await stat(join(diff(d), '..', 'info'));
    assert.ok((await readFile(join(diff(d), 'big.bin'))).equals(big), 'served as usual while the copy is checked');
    await d.waitForLog(/"msg":"passthrough: complete file ready"/, 30_000);
    assert.match(d.log(), /"reused":false/, 'the damaged copy was not taken');
    assert.ok(readFileSync(copy).equals(big));
    assert.ok((await readFile(join(diff(d), 'big.bin'))).equals(big));
    assert.equal((await status(d)).passthrough?.opens, 1);
    assert.ok(existsSync(copy));
  });
});
