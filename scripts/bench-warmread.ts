// Sequential reads of a file whose chunks are all in the disk cache (issue #12 item 4): `npm run bench:warmread`
// (root, /dev/fuse, docker-registry).
//
//   1. One layer holding one file of BENCH_MIB (default 1024) MiB of random data, pushed to docker-registry on
//      loopback; the same bytes written to a local file (the baseline: what a normal overlay lower layer reads).
//   2. `tocfs mount`, resolve the layer, wait until the background fetch made it fully local, stop the daemon.
//   3. Chunk path: start it again with `passthrough = false` over the same state (memory cache empty, disk cache
//      warm), time `sha256sum` of the file through tocfs (every READ answered from verified disk-cache chunks).
//   4. Passthrough path: start it again with passthrough on, open the file once (that open is served as usual and
//      has a checked complete copy assembled), wait until the copy is ready, then time `sha256sum` through tocfs:
//      the kernel reads the copy directly.
//   5. Time `sha256sum` of the local file. The page cache is dropped before every timed read. Prints both
//      throughput ratios tocfs / local (goals: ≥ 0.8 for the chunk path per issue #12, ≥ 0.95 with passthrough).
//      BENCH_REPEAT=n times each (local reads alternating with the tocfs ones), the fastest of each kept.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TarBuilder } from '../test/format/tar-builder.js';
import { runCli } from '../test/helpers/cli.js';
import { startDaemon, type DaemonHandle } from '../test/helpers/daemon.js';
import { imageOfTar } from '../test/helpers/hostile-images.js';
import { pushImage } from '../test/helpers/image-builder.js';
import { loopbackClient, startRegistry } from '../test/helpers/registry-server.js';

const MIB = Number(process.env['BENCH_MIB'] ?? 1024);
/** Timed reads per path, alternating with the baseline; the fastest of each counts (the machine may be shared). */
const REPEAT = Math.max(1, Number(process.env['BENCH_REPEAT'] ?? 1));

/** The fastest of `REPEAT` timed reads of `path`, each followed by one of `baseline` (kept in `baselines`). */
function fastest(path: string, baseline: string, baselines: { seconds: number; digest: string }[]): { seconds: number; digest: string } {
  const runs: { seconds: number; digest: string }[] = [];
  for (let i = 0; i < REPEAT; i++) {
    runs.push(timedSha256(path));
    baselines.push(timedSha256(baseline));
  }
  return runs.reduce((a, b) => (b.seconds < a.seconds ? b : a));
}

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
    const config = (extra = '') => ({ insecureHosts: [registry.host], extraConfig: `diffid_proof = "off"\n${extra}` });
    const layer = () => join(d!.mountpoint, Buffer.from(`${registry.host}/bench/warm:v1`).toString('base64'), image.layers[0]!.digest);
    const file = () => join(layer(), 'diff', 'big.bin');
    d = await startDaemon(work, config());
    await stat(join(layer(), 'info'));
    await d.waitForLog(/"msg":"layer fully local"/, 1_800_000);
    await d.stop();
    d = await startDaemon(work, config('passthrough = false\n'));
    await stat(join(layer(), 'info'));
    const locals: { seconds: number; digest: string }[] = [];
    const chunks = fastest(file(), local, locals);
    await d.stop();
    d = await startDaemon(work, config());
    await stat(join(layer(), 'info'));
    execFileSync('sh', ['-c', `: < '${file()}'`]);
    await d.waitForLog(/"msg":"passthrough: complete file ready"/, 1_800_000);
    const passthrough = fastest(file(), local, locals);
    const status = JSON.parse((await runCli(['status', '--root', d.root, '--json'])).stdout) as { passthrough?: { on: boolean; why?: string; opens: number } };
    if (!status.passthrough?.on || status.passthrough.opens < 1) throw new Error(`the timed read did not use passthrough: ${JSON.stringify(status.passthrough)}`);
    const base = locals.reduce((a, b) => (b.seconds < a.seconds ? b : a));
    for (const t of [chunks, passthrough]) if (t.digest !== base.digest) throw new Error(`tocfs served other bytes: ${t.digest} vs ${base.digest}`);
    const mbs = (s: number) => ((MIB * 1.048576) / s).toFixed(0);
    console.log(`bench:warmread — sha256sum of ${MIB} MiB, disk cache warm, memory cache and page cache empty (fastest of ${REPEAT})`);
    console.log(`  local file (baseline)          ${base.seconds.toFixed(2)} s  ${mbs(base.seconds)} MB/s`);
    console.log(`  tocfs, chunks (no passthrough) ${chunks.seconds.toFixed(2)} s  ${mbs(chunks.seconds)} MB/s  tocfs / local ${(base.seconds / chunks.seconds).toFixed(2)} (goal ≥ 0.8)`);
    console.log(`  tocfs, passthrough             ${passthrough.seconds.toFixed(2)} s  ${mbs(passthrough.seconds)} MB/s  tocfs / local ${(base.seconds / passthrough.seconds).toFixed(2)} (goal ≥ 0.95)`);
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
