/**
 * npm run bench:format — convert and inspect throughput (MB/s of tar) and peak RSS for a generated layer of
 * BENCH_SIZE_MIB (default 1024) MiB, next to the zstd CLI doing the comparable raw work in the same run:
 *   convert ~ `zstd -<level> -T1` (compress the tar), inspect ~ `zstd -dc | sha256sum` (decompress and hash).
 * Each measured command runs in its own process so its peak RSS is its own.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const CLI = join(here, '..', 'src', 'cli', 'main.js');
const SIZE_MIB = Number(process.env.BENCH_SIZE_MIB ?? 1024);
const LEVEL = Number(process.env.BENCH_LEVEL ?? 3);

/** Deterministic pseudo-random bytes (xorshift), so every run converts the same layer. */
function prng(seed: number): (n: number) => Buffer {
  let x = seed >>> 0 || 1;
  return (n) => {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i += 4) {
      x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
      b.writeUInt32LE(x, Math.min(i, n - 4) & ~0);
    }
    return b;
  };
}

/** A tree mixing incompressible data, text-like data and files with long zero runs, ~SIZE_MIB in total. */
function generateTree(root: string): number {
  const rnd = prng(42);
  const words = Buffer.from('lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore\n');
  let total = 0;
  let i = 0;
  while (total < SIZE_MIB << 20) {
    const dir = join(root, `d${String(i % 64).padStart(2, '0')}`);
    mkdirSync(dir, { recursive: true });
    const kind = i % 5;
    const size = [4096, 65536, 1 << 20, 4 << 20, 16 << 20][i % 5]! + (i * 7919) % 4096;
    let data: Buffer;
    if (kind < 2) data = rnd(size);
    else if (kind < 4) data = Buffer.alloc(size, words);
    else data = Buffer.concat([rnd(size >> 2), Buffer.alloc(size >> 1), rnd(size - (size >> 2) - (size >> 1))]);
    writeFileSync(join(dir, `f${i}.bin`), data);
    total += size;
    i++;
  }
  return i;
}

function sh(cmd: string, args: string[]): Promise<string> {
  return new Promise((res, rej) => execFile(cmd, args, { maxBuffer: 1 << 26 }, (e, out, err) => (e ? rej(new Error(err || e.message)) : res(out))));
}

/** Run a shell pipeline; returns wall seconds. */
async function timeShell(script: string): Promise<number> {
  const t = process.hrtime.bigint();
  await sh('bash', ['-c', script]);
  return Number(process.hrtime.bigint() - t) / 1e9;
}

/** Run the tocfs CLI in a child that reports its own peak RSS. */
async function timeCli(args: string[]): Promise<{ seconds: number; maxRssMiB: number; stdout: string }> {
  const t = process.hrtime.bigint();
  const wrapper = `import('${CLI}').then(()=>{process.on('exit',()=>process.stderr.write('\\nMAXRSS '+process.resourceUsage().maxRSS+'\\n'))})`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', wrapper, 'node', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => { stdout += d; });
  child.stderr.on('data', (d) => { stderr += d; });
  const code: number = await new Promise((r) => child.on('close', r));
  if (code !== 0) throw new Error(`tocfs ${args.join(' ')} failed: ${stderr}`);
  const rss = Number(/MAXRSS (\d+)/.exec(stderr)?.[1] ?? 0);
  return { seconds: Number(process.hrtime.bigint() - t) / 1e9, maxRssMiB: rss / 1024, stdout };
}

async function main(): Promise<void> {
  const tmp = mkdtempSync(join(tmpdir(), 'tocfs-bench-format-'));
  try {
    const files = generateTree(join(tmp, 'tree'));
    const tar = join(tmp, 'layer.tar');
    await sh('tar', ['--sort=name', '-cf', tar, '-C', join(tmp, 'tree'), '.']);
    const tarBytes = statSync(tar).size;
    const mb = tarBytes / 1e6;
    // Warm the page cache so both sides read the tar from memory.
    await timeShell(`cat ${tar} > /dev/null`);

    const zstdC = await timeShell(`zstd -q -${LEVEL} -T1 -c ${tar} > /dev/null`);
    const conv = await timeCli(['convert', tar, `oci:${join(tmp, 'out')}`, '--level', String(LEVEL), '--json']);
    const report = JSON.parse(conv.stdout) as { layers: { to: string; size: number }[] };
    const layer = report.layers[0]!;
    const blob = join(tmp, 'out', 'blobs', 'sha256', layer.to.slice(7));
    const manifest = JSON.parse(readFileSync(join(tmp, 'out', 'index.json'), 'utf8')).manifests[0];
    const m = JSON.parse(readFileSync(join(tmp, 'out', 'blobs', 'sha256', manifest.digest.slice(7)), 'utf8'));
    writeFileSync(join(tmp, 'desc.json'), JSON.stringify(m.layers[0]));
    await timeShell(`cat ${blob} > /dev/null`);
    const zstdD = await timeShell(`zstd -q -dc ${blob} | sha256sum > /dev/null`);
    const insp = await timeCli(['inspect', blob, '--descriptor', join(tmp, 'desc.json'), '--json']);
    const inspected = JSON.parse(insp.stdout) as { diffID: string; chunks: number; entries: number };
    const expectedDiff = `sha256:${createHash('sha256').update(readFileSync(tar)).digest('hex')}`;
    if (inspected.diffID !== expectedDiff) throw new Error('inspect computed a different DiffID than sha256(tar)');

    const row = (name: string, s: number, base: number, rss: number | string) =>
      `| ${name} | ${s.toFixed(2)} s | ${(mb / s).toFixed(0)} MB/s | ${(mb / base).toFixed(0)} MB/s | ${(base / s).toFixed(2)} | ${rss} |`;
    console.log(`layer: ${files} files, ${(tarBytes / 2 ** 20).toFixed(0)} MiB tar → ${(layer.size / 2 ** 20).toFixed(0)} MiB zstd:chunked (level ${LEVEL}), ${inspected.chunks} chunks`);
    console.log('| operation | time | tocfs | zstd CLI baseline | ratio (tocfs/baseline speed) | tocfs peak RSS |');
    console.log('| --- | --- | --- | --- | --- | --- |');
    console.log(row(`convert (baseline: zstd -${LEVEL} -T1)`, conv.seconds, zstdC, `${conv.maxRssMiB.toFixed(0)} MiB`));
    console.log(row('inspect (baseline: zstd -dc | sha256sum)', insp.seconds, zstdD, `${insp.maxRssMiB.toFixed(0)} MiB`));
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
