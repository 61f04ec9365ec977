import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { ONE_FETCH_PER_MISS, startDaemon, type DaemonHandle } from '../helpers/daemon.js';
import { BUSYBOX_TOOLS } from '../helpers/e2e-image.js';
import { BLOB_PATH, startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { buildImage, buildLayerTar, pushImage, type TreeItem } from '../helpers/image-builder.js';
import { Podman } from '../helpers/podman.js';
import { Debian13Chroot, Podman5, debian13Root } from '../helpers/podman5.js';
import { loopbackClient, startRegistry, type RegistryServer } from '../helpers/registry-server.js';
import { requireFile } from '../helpers/tools.js';

/** What the scenario needs of a podman: its commands, and its own cleanup. */
interface PodmanUnderTest {
  podman(args: string[]): Promise<string>;
  run(image: string, command: string[]): Promise<string>;
  cleanup(): Promise<void>;
}

/** podman 4.3.1 from Debian 12 (blob-digest lookups). */
async function podman4(work: string, daemon: DaemonHandle, insecure: string): Promise<PodmanUnderTest> {
  return new Podman(join(work, 'podman'), { als: daemon.mountpoint, insecureHosts: [insecure] });
}

/** podman 5.4 from a Debian 13 root (TOC-digest lookups), in a namespace started after the mount existed. */
async function podman5(work: string, daemon: DaemonHandle, insecure: string): Promise<PodmanUnderTest> {
  const chroot = await Debian13Chroot.start(await debian13Root(), [work]);
  const p = new Podman5(chroot, join(work, 'podman5'), { als: daemon.mountpoint, insecureHosts: [insecure] });
  return { podman: (a) => p.podman(a), run: (i, c) => p.run(i, c), cleanup: async () => { await p.cleanup(); await chroot.stop(); } };
}

// The scenario of issue #13: `kill -9` of the daemon while a podman container reads files. With the supervisor the
// container must not notice, and podman must keep working afterwards.
for (const [version, start] of [['4.3.1', podman4], ['5.4', podman5]] as const) describe(`e2e: a podman ${version} container reading files while the tocfs server is killed`, function () {
  this.timeout(1_200_000);
  let work: string;
  let registry: RegistryServer;
  let proxy: FaultProxy;
  let daemon: DaemonHandle;
  let podman: PodmanUnderTest;
  let ref: string;
  const files = Array.from({ length: 150 }, (_, i) => ({ path: `data/f${String(i).padStart(3, '0')}.bin`, data: randomBytes(4000 + ((i * 7919) % 40_000)) }));
  const expected = files.map((f) => `${createHash('sha256').update(f.data).digest('hex')}  /${f.path}`).join('\n');

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'tocfs-e2e-respawn-'));
    registry = await startRegistry({});
    proxy = await startFaultProxy(registry.url);
    const base: TreeItem[] = [
      { path: 'bin/busybox', type: 'file', data: readFileSync(requireFile('/bin/busybox', 'busybox-static')), mode: 0o755 },
      ...[...BUSYBOX_TOOLS, 'sleep'].map((t): TreeItem => ({ path: `bin/${t}`, type: 'symlink', target: 'busybox' })),
    ];
    const l1 = await buildLayerTar(work, 'l1', base);
    const l2 = await buildLayerTar(work, 'l2', files.map((f) => ({ path: f.path, type: 'file' as const, data: f.data })));
    const image = await buildImage([{ tar: l1, compression: 'zstd:chunked' }, { tar: l2, compression: 'zstd:chunked' }]);
    const client = loopbackClient(registry.host);
    await pushImage(client, `${registry.host}/e2e/respawn:v1`, image);
    await client.close();
    ref = `${proxy.host}/e2e/respawn:v1`;
    daemon = await startDaemon(work, { insecureHosts: [proxy.host], extraConfig: 'background_fetch = false\ndiffid_proof = "off"\ndisk_cache = 0\n' + ONE_FETCH_PER_MISS });
    podman = await start(work, daemon, proxy.host);
    await podman.podman(['pull', '-q', ref]);
  });

  after(async () => {
    await podman?.cleanup();
    await daemon?.stop();
    await proxy?.stop();
    await registry?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('the container reads every file correctly across kill -9 of the server, and podman keeps working', async () => {
    // Every chunk fetch is slowed down, so the container is mid-read, with requests in the server's hands, when it dies.
    proxy.setRule((req) => (req.method === 'GET' && BLOB_PATH.test(req.url ?? '') ? { kind: 'delay', ms: 100 } : undefined));
    const first = daemon.serverPid()!;
    const container = podman.run(ref, ['sh', '-c', 'for f in $(find /data -type f | sort); do sha256sum "$f" || echo "FAILED $f"; done']);
    let failed: unknown;
    container.catch((err: unknown) => { failed = err; });
    // Kill once the container has read a part of the data layer.
    const end = Date.now() + 120_000;
    let served = 0;
    for (;;) {
      const s = await runCli(['status', '--root', daemon.root, '--json']);
      served = s.code === 0 ? (JSON.parse(s.stdout) as { layers: { servedBytes: number; entries: number }[] }).layers
        .filter((l) => l.entries >= files.length).reduce((n, l) => n + l.servedBytes, 0) : 0;
      if (served > 200_000 || failed !== undefined) break;
      if (Date.now() > end) throw new Error('the container never read the data layer');
      await new Promise((r) => setTimeout(r, 100));
    }
    process.kill(first, 'SIGKILL');
    const killedAt = Date.now();
    const total = files.reduce((n, f) => n + f.data.length, 0);
    assert.ok(served < total / 2, `killed while the container had read ${served} of ${total} bytes`);
    const out = await container;
    const s = JSON.parse((await runCli(['status', '--root', daemon.root, '--json'])).stdout) as { fuse: { resent: number } };
    console.log(`      killed after ${served} of ${total} bytes read; the container finished ${Date.now() - killedAt} ms later; resent requests: ${s.fuse.resent}`);
    proxy.setRule(undefined);
    assert.equal(out.trim(), expected, 'every file read, with the right content');
    await daemon.waitForLog(/server died \(signal SIGKILL\), respawning/);
    assert.notEqual(daemon.serverPid(), first);
    // podman still works with the store (the issue: "can't stat additionallayerstore dir").
    assert.match(await podman.podman(['images']), /e2e\/respawn/);
    assert.equal((await podman.run(ref, ['sh', '-c', 'cat /data/f007.bin | sha256sum'])).split(' ')[0], createHash('sha256').update(files[7]!.data).digest('hex'));
  });
});
