// How long a good image waits while tocfs processes a hostile or huge one: `npm run bench:stall` (root, /dev/fuse,
// docker-registry). Issue #11: one image must never stall the node.
//
//   1. Push three images to Debian's docker-registry on loopback: "good" (BENCH_GOOD_FILES small files), "wide"
//      (BENCH_WIDE entries, default 200,000, in one directory: a ~2 MB blob with a ~30 MB TOC) and "big" (one
//      layer of BENCH_PROOF_MIB, default 1024, MiB of random data, whose DiffID proof hashes all of it).
//   2. Start `tocfs mount`, open the good image, then probe it continuously: every 10 ms a FUSE LOOKUP of a name
//      that does not exist (never cached by the kernel) and an O_DIRECT read of one of its files (never served from
//      the page cache), timing each answer.
//   3. Phases, each printing the probe's p50 / p99 / max and max against the idle baseline:
//        idle      nothing else running (BENCH_IDLE_S, default 5 s);
//        wide      the 200k-entry layer resolves (TOC fetch, decode, tree build) and its directory is listed;
//        proof     the 1 GiB layer, already local, is proven (DiffID rebuilt and hashed), until the log says so.
//   Goal: max ≤ 250 ms in every phase.
import { constants, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { open, readdir, stat } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { startDaemon, type DaemonHandle } from '../test/helpers/daemon.js';
import { imageOfTar, wideDirTar } from '../test/helpers/hostile-images.js';
import { pushImage, type BuiltImage } from '../test/helpers/image-builder.js';
import { TarBuilder } from '../test/format/tar-builder.js';
import { loopbackClient, startRegistry } from '../test/helpers/registry-server.js';

const num = (name: string, fallback: number) => {
  const v = Number(process.env[name] ?? fallback);
  if (!Number.isFinite(v) || v < 0) throw new Error(`${name} must be a non-negative number`);
  return v;
};
const WIDE = num('BENCH_WIDE', 200_000);
const PROOF_MIB = num('BENCH_PROOF_MIB', 1024);
const GOOD_FILES = num('BENCH_GOOD_FILES', 200);
const IDLE_S = num('BENCH_IDLE_S', 5);
const GOAL_MS = 250;

interface Probe {
  stop(): Promise<number[]>;
}

/** Time FUSE answers for the good image until stopped: lookups of fresh names and O_DIRECT reads. */
function startProbe(diff: string, files: string[]): Probe {
  const times: number[] = [];
  let running = true;
  const buf = Buffer.alloc(4096);
  const loop = (async () => {
    for (let i = 0; running; i++) {
      let t0 = performance.now();
      await stat(join(diff, `probe-${i}`)).catch(() => undefined);
      times.push(performance.now() - t0);
      t0 = performance.now();
      const fh = await open(join(diff, files[i % files.length]!), constants.O_RDONLY | constants.O_DIRECT);
      try {
        await fh.read(buf, 0, buf.length, 0);
      } finally {
        await fh.close();
      }
      times.push(performance.now() - t0);
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  return { stop: async () => { running = false; await loop; return times; } };
}

/** Resident memory of a process (MiB). */
function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  if (process.env['BENCH_DEBUG']) console.log(/Threads:.*/.exec(status)?.[0]);
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) / 1024 : NaN;
}

function summary(name: string, times: number[], baseline?: number[]): string {
  const s = [...times].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? 0;
  const max = s[s.length - 1] ?? 0;
  const base = baseline ? Math.max(...baseline) : undefined;
  const verdict = max <= GOAL_MS ? 'ok' : `OVER the ${GOAL_MS} ms goal`;
  return `${name.padEnd(7)} samples ${String(s.length).padStart(6)}  p50 ${q(0.5).toFixed(1).padStart(7)} ms  p99 ${q(0.99).toFixed(1).padStart(7)} ms  max ${max.toFixed(1).padStart(8)} ms` +
    `${base !== undefined ? `  max/idle-max ${(max / base).toFixed(1).padStart(5)}×` : ''}  ${verdict}`;
}

function goodTar(): { tar: Buffer; files: string[] } {
  const t = new TarBuilder().dir('g/');
  const files: string[] = [];
  for (let i = 0; i < GOOD_FILES; i++) {
    files.push(`g/f${i}`);
    t.file(`g/f${i}`, randomBytes(8192));
  }
  return { tar: t.build(), files };
}

/** One file of `mib` MiB of random bytes (generated piecewise: the tar is held once). */
function bigTar(mib: number): Buffer {
  const data = Buffer.allocUnsafe(mib << 20);
  for (let at = 0; at < data.length; at += 1 << 20) randomBytes(1 << 20).copy(data, at);
  return new TarBuilder().file('big.bin', data).build();
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'tocfs-bench-stall-'));
  const registry = await startRegistry({});
  let d: DaemonHandle | undefined;
  try {
    console.log(`bench:stall — ${cpus().length} CPUs; wide ${WIDE} entries, proof ${PROOF_MIB} MiB, good image ${GOOD_FILES} files`);
    const good = goodTar();
    const images: Record<string, BuiltImage> = {
      good: await imageOfTar(good.tar),
      wide: await imageOfTar(wideDirTar(WIDE)),
      big: await imageOfTar(bigTar(PROOF_MIB)),
    };
    const client = loopbackClient(registry.host);
    for (const [name, img] of Object.entries(images)) await pushImage(client, `${registry.host}/bench/${name}:v1`, img);
    await client.close();
    console.log(`images pushed (wide blob ${(images['wide']!.blobs.get(images['wide']!.layers[0]!.digest)!.length / 1e6).toFixed(1)} MB)`);
    d = await startDaemon(work, { insecureHosts: [registry.host] });
    const layer = (name: string) => join(d!.mountpoint, Buffer.from(`${registry.host}/bench/${name}:v1`).toString('base64'), images[name]!.layers[0]!.digest);
    const diff = join(layer('good'), 'diff');
    await stat(join(layer('good'), 'info'));

    let probe = startProbe(diff, good.files);
    await new Promise((r) => setTimeout(r, IDLE_S * 1000));
    const idle = await probe.stop();
    console.log(summary('idle', idle));

    const rssBefore = rssMiB(d.serverPid() ?? d.pid);
    probe = startProbe(diff, good.files);
    let t0 = performance.now();
    await stat(join(layer('wide'), 'info'));
    const resolved = performance.now() - t0;
    t0 = performance.now();
    const listed = (await readdir(join(layer('wide'), 'diff', 'w'))).length;
    const listMs = performance.now() - t0;
    console.log(summary('wide', await probe.stop(), idle) + `   (resolve ${(resolved / 1000).toFixed(2)} s, list of ${listed} entries ${(listMs / 1000).toFixed(2)} s)`);
    const index = statSync(join(d.root, 'index', `${images['wide']!.layers[0]!.tocDigest!.slice(7)}.tree`)).size;
    await new Promise((r) => setTimeout(r, 10_000)); // the TOC workers exit after 5 s idle
    console.log(`serving process RSS ${rssBefore.toFixed(0)} MiB before the wide layer, ${rssMiB(d.serverPid() ?? d.pid).toFixed(0)} MiB after (its tree: ${(index / (WIDE + 2)).toFixed(0)} B per entry, ${(index / 2 ** 20).toFixed(1)} MiB)`);

    await stat(join(layer('big'), 'info'));
    const bigDigest = images['big']!.layers[0]!.digest;
    await d.waitForLog(new RegExp(`"layer":"${bigDigest}"[^\\n]*"msg":"layer fully local"`), 600_000);
    // The proof starts once the store is quiet; the probe keeps it busy, so it also measures how the proof yields.
    probe = startProbe(diff, good.files);
    t0 = performance.now();
    await d.waitForLog(new RegExp(`"layer":"${bigDigest}"[^\\n]*"msg":"DiffID proven"`), 1_800_000);
    const proofS = (performance.now() - t0) / 1000;
    console.log(summary('proof', await probe.stop(), idle) + `   (proof of ${PROOF_MIB} MiB took ${proofS.toFixed(1)} s beside the probe)`);
  } finally {
    await d?.stop();
    await registry.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(`bench:stall failed: ${(err as Error).stack ?? String(err)}`);
  process.exit(1);
});
