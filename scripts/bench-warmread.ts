// Sequential reads of a file whose chunks are all in the disk cache (issue #12 item 4): `npm run bench:warmread`
// (root, /dev/fuse, docker-registry).
//
//   1. One layer holding one file of BENCH_MIB (default 1024) MiB of random data, pushed to docker-registry on
//      loopback; the same bytes written to a local file (the baseline: what a normal overlay lower layer reads).
//   2. `tocfs mount`, resolve the layer, wait until the background fetch made it fully local, stop the daemon and
//      start it again over the same state (memory cache empty, disk cache warm), drop the page cache.
//   3. Time `sha256sum` of the file through tocfs, then of the local file (page cache dropped before each), and
//      print the throughput ratio tocfs / local (goal ≥ 0.8 per the issue).
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TarBuilder } from '../test/format/tar-builder.js';
import { startDaemon, type DaemonHandle } from '../test/helpers/daemon.js';
import { imageOfTar } from '../test/helpers/hostile-images.js';
import { pushImage } from '../test/helpers/image-builder.js';
import { loopbackClient, startRegistry } from '../test/helpers/registry-server.js';

const MIB = Number(process.env['BENCH_MIB'] ?? 1024);

function timedSha256(path: string): { seconds: number; digest: string } {
  execFileSync('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches']);
  const t0 = performance.now();
  const digest = execFileSync('sha256sum', [path]).toString().split(' ')[0]!;
  return { seconds: (performance.now() - t0) / 1000, digest };
}

async function main(): Promise<void> {
  if (!(MIB >= 16 && MIB <= 8192)) throw new Error('BENCH_MIB must be between 16 and 8192');
  const work = mkdtempSync(join(tmpdir(), 'tocfs-bench-warmread-'));
  const registry = await startRegistry({});
  let d: DaemonHandle | undefined;
  try {
    const data = Buffer.allocUnsafe(MIB << 20);
    for (let at = 0; at < data.length; at += 1 << 20) randomBytes(1 << 20).copy(data, at);
    const local = join(work, 'local.bin');
    writeFileSync(local, data);
    const image = await imageOfTar(new TarBuilder().file('big.bin', data).build());
    const client = loopbackClient(registry.host);
    await pushImage(client, `${registry.host}/bench/warm:v1`, image);
    await client.close();
    const config = { insecureHosts: [registry.host], extraConfig: 'diffid_proof = "off"\n' };
    const layer = () => join(d!.mountpoint, Buffer.from(`${registry.host}/bench/warm:v1`).toString('base64'), image.layers[0]!.digest);
    d = await startDaemon(work, config);
    await stat(join(layer(), 'info'));
    await d.waitForLog(/"msg":"layer fully local"/, 1_800_000);
    await d.stop();
    d = await startDaemon(work, config);
    await stat(join(layer(), 'info'));
    const tocfs = timedSha256(join(layer(), 'diff', 'big.bin'));
    const base = timedSha256(local);
    if (tocfs.digest !== base.digest) throw new Error(`tocfs served other bytes: ${tocfs.digest} vs ${base.digest}`);
    const mbs = (s: number) => ((MIB * 1.048576) / s).toFixed(0);
    console.log(`bench:warmread — sha256sum of ${MIB} MiB, disk cache warm, memory cache and page cache empty`);
    console.log(`  local file (baseline)  ${base.seconds.toFixed(2)} s  ${mbs(base.seconds)} MB/s`);
    console.log(`  through tocfs          ${tocfs.seconds.toFixed(2)} s  ${mbs(tocfs.seconds)} MB/s`);
    console.log(`  tocfs / local throughput: ${(base.seconds / tocfs.seconds).toFixed(2)} (goal ≥ 0.8)`);
  } finally {
    await d?.stop();
    await registry.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(`bench:warmread failed: ${(err as Error).stack ?? String(err)}`);
  process.exit(1);
});
