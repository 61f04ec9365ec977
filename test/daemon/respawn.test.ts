import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { readFile, readdir, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { ONE_FETCH_PER_MISS, startDaemon, type DaemonHandle } from '../helpers/daemon.js';
import { BLOB_PATH, startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { buildImage, buildLayerTar, pushImage, type BuiltImage } from '../helpers/image-builder.js';
import { loopbackClient, startRegistry, type RegistryServer } from '../helpers/registry-server.js';

/** Whether a process runs (a zombie does not: an orphan's reaper may be slow to collect it). */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function mounted(mountpoint: string): boolean {
  return readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === mountpoint && l.includes('fuse.tocfs'));
}

describe('daemon: the mount survives its server (supervisor, FUSE_NOTIFY_RESEND, stable node ids)', function () {
  this.timeout(180_000);
  let work: string;
  let registry: RegistryServer;
  let proxy: FaultProxy;
  let image: BuiltImage;
  let ref: string;
  const daemons: DaemonHandle[] = [];
  const files = Array.from({ length: 240 }, (_, i) => ({ path: `data/d${i % 8}/f${i}.bin`, data: randomBytes(6000 + ((i * 7919) % 30_000)) }));

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'tocfs-respawn-'));
    registry = await startRegistry({});
    proxy = await startFaultProxy(registry.url);
    const tar = await buildLayerTar(work, 'l', files.map((f) => ({ path: f.path, type: 'file' as const, data: f.data })));
    image = await buildImage([{ tar, compression: 'zstd:chunked' }]);
    const c = loopbackClient(registry.host);
    ref = `${proxy.host}/respawn/app:v1`;
    await pushImage(c, `${registry.host}/respawn/app:v1`, image);
    await c.close();
  });
  afterEach(function () {
    // The daemons' logs of a failed test, for whoever debugs it.
    if (this.currentTest?.state === 'failed' && process.env.TOCFS_TEST_LOG) writeFileSync(process.env.TOCFS_TEST_LOG, daemons.map((d) => d.log()).join('\n'));
  });
  after(async () => {
    for (const d of daemons) await d.stop();
    await proxy?.stop();
    await registry?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  async function daemon(name: string): Promise<DaemonHandle> {
    const dir = join(work, name);
    mkdirSync(dir, { recursive: true });
    // Every read goes to the registry (no background fetch, no disk cache): a server killed mid-read has requests
    // in its hands that only a resend can finish.
    const d = await startDaemon(dir, { insecureHosts: [proxy.host], extraConfig: 'background_fetch = false\ndiffid_proof = "off"\ndisk_cache = 0\n' + ONE_FETCH_PER_MISS });
    daemons.push(d);
    return d;
  }
  const diffOf = (d: DaemonHandle) => join(d.mountpoint, Buffer.from(ref).toString('base64'), image.layers[0]!.tocDigest!, 'diff');

  it('SIGHUP to tocfs mount replaces the server while readers read: every read succeeds, the mount stays', async () => {
    const d = await daemon('restart-server');
    const diff = diffOf(d);
    assert.ok((await readFile(join(diff, files[0]!.path))).equals(files[0]!.data));
    const first = d.serverPid()!;
    proxy.setRule((req) => (req.method === 'GET' && BLOB_PATH.test(req.url ?? '') ? { kind: 'delay', ms: 150 } : undefined));
    const failures: string[] = [];
    let done = 0;
    const order = files.slice(1, 120);
    const reader = async (slice: typeof files): Promise<void> => {
      for (const f of slice) {
        try {
          if (!(await readFile(join(diff, f.path))).equals(f.data)) failures.push(`${f.path}: wrong content`);
        } catch (err) {
          failures.push(`${f.path}: ${(err as Error).message}`);
        }
        done++;
      }
    };
    const readers = Promise.all([0, 1, 2, 3].map((k) => reader(order.filter((_, i) => i % 4 === k))));
    await waitFor('reads under way', () => done >= 8);
    process.kill(d.pid, 'SIGHUP');
    await readers;
    proxy.setRule(undefined);
    assert.deepEqual(failures, [], 'no read failed');
    await d.waitForLog(/restarting the server \(SIGHUP\); the mount stays/);
    await d.waitForLog(/"msg":"server resumed the mount"/);
    assert.notEqual(d.serverPid(), first, 'a new server serves the mount');
    assert.doesNotMatch(d.log(), /server died/, 'a restart is not reported as a crash');
    assert.ok(mounted(d.mountpoint));
  });

  it('kill -9 of the server while readers read: every read succeeds, the respawn is logged, the resent requests answered', async () => {
    const d = await daemon('kill-server');
    const diff = diffOf(d);
    // Resolve the layer and look up a few directories before the kill: the kernel then holds node ids of this server.
    assert.ok((await readFile(join(diff, files[0]!.path))).equals(files[0]!.data));
    const first = d.serverPid()!;
    assert.ok(first && first !== d.pid, 'the server is a child of tocfs mount');
    proxy.setRule((req) => (req.method === 'GET' && BLOB_PATH.test(req.url ?? '') ? { kind: 'delay', ms: 150 } : undefined));

    const failures: string[] = [];
    const doneAt: number[] = [];
    let next = 1;
    const reader = async (): Promise<void> => {
      for (let i = next++; i < files.length; i = next++) {
        const f = files[i]!;
        try {
          const got = await readFile(join(diff, f.path));
          if (!got.equals(f.data)) failures.push(`${f.path}: wrong content (${got.length} bytes)`);
        } catch (err) {
          failures.push(`${f.path}: ${(err as Error).message}`);
        }
        doneAt.push(Date.now());
      }
    };
    const readers = Promise.all(Array.from({ length: 4 }, () => reader()));
    await waitFor('reads under way', () => doneAt.length >= 12);
    const killedAt = Date.now();
    process.kill(first, 'SIGKILL');
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([readers, new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`reads hang after the kill (${doneAt.length} done):\n${d.log()}`)), 30_000);
    })]).finally(() => clearTimeout(timer));
    const after = doneAt.filter((t) => t > killedAt).sort((a, b) => a - b);

    assert.deepEqual(failures, [], 'no read failed');
    assert.equal(doneAt.length, files.length - 1);
    await d.waitForLog(/server died \(signal SIGKILL\), respawning/);
    await d.waitForLog(/"msg":"server resumed the mount"/);
    const second = d.serverPid()!;
    assert.notEqual(second, first, 'a new server serves the mount');
    assert.ok(alive(second) && !alive(first));
    assert.match(d.log(), /asked the kernel to resend the requests the previous server had read/);

    // The new server answered requests the dead one had read (they come back marked as resent).
    const s = await runCli(['status', '--root', d.root, '--json']);
    assert.equal(s.code, 0, s.stderr);
    const status = JSON.parse(s.stdout) as { pid: number; fuse: { resent: number } };
    assert.equal(status.pid, second);
    assert.ok(status.fuse.resent > 0, `requests in the dead server's hands were resent: ${JSON.stringify(status.fuse)}`);

    // Node ids the kernel got from the first server still work: stat, list and read through cached dentries.
    const names = await readdir(join(diff, 'data/d3'));
    assert.equal(names.length, files.filter((f) => f.path.startsWith('data/d3/')).length);
    assert.equal((await stat(join(diff, files[5]!.path))).size, files[5]!.data.length);
    assert.ok((await readFile(join(diff, files[0]!.path))).equals(files[0]!.data));
    const resumed = /"afterMs":(\d+)[^\n]*"msg":"server resumed the mount"/.exec(d.log());
    console.log(`      kill → first read answered: ${after[0]! - killedAt} ms; kill → new server ready: ${resumed?.[1]} ms; resent requests: ${status.fuse.resent}`);

    // Again with the registry down: the next server reopens the layer from what the journal recorded and the local
    // tree index, so the node ids the kernel holds still answer (OPEN of a file read before, listing a directory).
    proxy.setRule(() => ({ kind: 'status', status: 503 }));
    const fetchesBefore = proxy.requests.length;
    process.kill(second, 'SIGKILL');
    await waitFor('a third server', () => d.serverPid() !== second && [...d.log().matchAll(/"msg":"server resumed the mount"/g)].length === 2);
    assert.ok((await readFile(join(diff, files[0]!.path))).equals(files[0]!.data));
    assert.equal((await readdir(join(diff, 'data/d5'))).length, files.filter((f) => f.path.startsWith('data/d5/')).length);
    assert.equal(proxy.requests.length, fetchesBefore, 'the registry was not asked');
    proxy.setRule(undefined);
  });

  it('kill -9 of tocfs mount (the supervisor): the server exits, the dead mount is detached by the next tocfs mount', async () => {
    const d = await daemon('kill-supervisor');
    const diff = diffOf(d);
    assert.ok((await readFile(join(diff, files[1]!.path))).equals(files[1]!.data));
    const server = d.serverPid()!;
    process.kill(d.pid, 'SIGKILL');
    await waitFor('the server to exit', () => !alive(server));
    // A dead mount, as after a crash of an unsupervised daemon (once the root's cached attributes expire: 1 s).
    await waitFor('ENOTCONN on the mountpoint', () => stat(d.mountpoint).then(() => false, (err: NodeJS.ErrnoException) => err.code === 'ENOTCONN'), 5000);
    const again = await daemon('kill-supervisor');
    assert.match(again.log(), /detached a stale FUSE mount/);
    assert.ok((await readFile(join(diffOf(again), files[2]!.path))).equals(files[2]!.data));
  });

  it('a server that keeps dying: 5 respawns within a minute, then tocfs mount unmounts and exits 1', async () => {
    const d = await daemon('keeps-dying');
    const killed = new Set<number>();
    while (killed.size < 6) {
      await waitFor('the next server', () => {
        const pid = d.serverPid();
        return pid !== undefined && !killed.has(pid);
      }, 20_000);
      const pid = d.serverPid()!;
      killed.add(pid);
      process.kill(pid, 'SIGKILL');
    }
    await waitFor('tocfs mount to give up', () => d.exitCode() !== null, 20_000);
    assert.equal(d.exitCode(), 1);
    assert.equal([...d.log().matchAll(/server died \(signal SIGKILL\), respawning/g)].length, 5);
    assert.match(d.log(), /server died \(signal SIGKILL\) 6 times within 60 s: giving up, unmounting/);
    assert.ok(!mounted(d.mountpoint), 'the mount is gone, not left dead');
  });

  it('SIGTERM to tocfs mount stops the server and unmounts within 2 s', async () => {
    const d = await daemon('sigterm');
    assert.ok((await readFile(join(diffOf(d), files[3]!.path))).equals(files[3]!.data));
    const server = d.serverPid()!;
    const t0 = Date.now();
    process.kill(d.pid, 'SIGTERM');
    await waitFor('tocfs mount to exit', () => !alive(d.pid), 5000);
    const ms = Date.now() - t0;
    assert.ok(ms < 2000, `stopped in ${ms} ms`);
    assert.ok(!alive(server), 'the server is gone too');
    assert.ok(!mounted(d.mountpoint), 'nothing stays mounted');
  });
});
