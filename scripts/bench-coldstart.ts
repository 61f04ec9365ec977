// Cold start of a container, normal pull of a gzip image vs podman through tocfs of the same image as
// zstd:chunked, both through a shaped link to a loopback registry: `npm run bench:coldstart` (root, podman,
// docker-registry, busybox-static, /dev/fuse). Results and their meaning: docs/benchmarks-coldstart.md.
//
//   1. Generate an image of BENCH_IMAGE_MIB (default 256) MiB in three layers: busybox and ~2 400 small files
//      (10 % of the bytes), ~75 medium files (30 %), a few large files (60 %); about 30 % of the bytes are fresh
//      text-like data, the rest random. GNU tar → buildImage twice (gzip, zstd:chunked) → pushed to Debian's
//      docker-registry on loopback.
//   2. Start a TCP proxy in front of the registry that models a link: one FIFO serialisation queue per direction
//      at BENCH_MBIT (default 100 Mbit/s; the cap is for all connections together), then a one-way delay of
//      BENCH_LATENCY_MS (default 20 ms) per direction, so an HTTP round trip costs 2 × that, plus one round trip
//      for each new TCP connection. Podman and tocfs reach the registry only through it; it counts the bytes
//      and follows each HTTP exchange (method, path, Range, response size, latency).
//   3. For each side, from cold (fresh podman storage, fresh tocfs daemon with a fresh state dir, caches dropped):
//      time `podman pull`, then `podman run <image> sh -c 'xargs sha256sum < /bench/read-list && echo <marker>'`,
//      which reads whole files totalling BENCH_READ_FRACTION (default 0.1) of the image's bytes; "run" ends when
//      the marker arrives on podman's stdout (see runUntilMarker for why not at podman's exit).
//   4. Print pull / run / total seconds, bytes and requests that went through the proxy per side, the ratio of
//      total times normal / tocfs (goal ≥ 5×), and where each phase's wire time went. Every side's sha256sum
//      output must equal the hashes computed from the generated files; tocfs must serve all layers itself.
//
// Environment: BENCH_IMAGE_MIB, BENCH_LATENCY_MS, BENCH_MBIT (0 = no cap), BENCH_READ_FRACTION, BENCH_READERS
// (default 1: parallel readers in the container), BENCH_TOCFS_VARIANTS (tocfs configurations to compare, see
// parseVariants), BENCH_RUNS (default 1: all sides repeated with fresh state against the same images),
// BENCH_LOG_DIR (write the proxy's request log and the daemon logs there), BENCH_TIMEOUT_S (default 900),
// BENCH_NORMAL=skip (tocfs variants only, no ratio), BENCH_DAEMON_NODE_OPTIONS (NODE_OPTIONS of the daemon).
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parseRegistriesConf, RegistriesConf, RegistryClient } from '../src/registry/index.js';
import { CLI } from '../test/helpers/cli.js';
import { startDaemon, type DaemonHandle } from '../test/helpers/daemon.js';
import { buildImage, pushImage, type BuiltImage } from '../test/helpers/image-builder.js';
import { Podman, podmanRunArgv } from '../test/helpers/podman.js';
import { startRegistry, type RegistryServer } from '../test/helpers/registry-server.js';
import { envNumber, startBenchRun } from './lib/bench-run.js';
import { calibrate, describePhase, startLinkProxy, type LinkProxy, type PhaseCounters } from './lib/link-proxy.js';
import { dropCaches, runUntilMarker, timed } from './lib/podman-run.js';

const execFileP = promisify(execFile);

// ---------------------------------------------------------------------------------------------------------
// Parameters

const IMAGE_MIB = envNumber('bench:coldstart', 'BENCH_IMAGE_MIB', 256, (v) => v >= 16 && v <= 4096, 'a size in MiB between 16 and 4096');
const LATENCY_MS = envNumber('bench:coldstart', 'BENCH_LATENCY_MS', 20, (v) => v >= 0 && v <= 1000, 'a one-way latency in ms between 0 and 1000');
const MBIT = envNumber('bench:coldstart', 'BENCH_MBIT', 100, (v) => v >= 0, 'a bandwidth in Mbit/s (0 = no cap)');
const READ_FRACTION = envNumber('bench:coldstart', 'BENCH_READ_FRACTION', 0.1, (v) => v > 0 && v <= 1, 'a fraction in (0, 1]');
/** Parallel readers in the container (xargs -P); 1 is a plain sequential reader, like most program starts. */
const READERS = envNumber('bench:coldstart', 'BENCH_READERS', 1, (v) => Number.isInteger(v) && v >= 1 && v <= 64, 'a reader count between 1 and 64');
const RUNS = envNumber('bench:coldstart', 'BENCH_RUNS', 1, (v) => Number.isInteger(v) && v >= 1 && v <= 10, 'a run count between 1 and 10');
const TIMEOUT_S = envNumber('bench:coldstart', 'BENCH_TIMEOUT_S', 900, (v) => v >= 60, 'a timeout of at least 60 s');
const LOG_DIR = process.env.BENCH_LOG_DIR;
/** `skip`: measure the tocfs variants only (for iterating on tocfs; no ratio is printed). */
const SKIP_NORMAL = process.env.BENCH_NORMAL === 'skip';
/** NODE_OPTIONS for the daemon only, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" to profile it. */
const DAEMON_NODE_OPTIONS = process.env.BENCH_DAEMON_NODE_OPTIONS;

/** A tocfs configuration to compare: a label and extra lines for the daemon's config file. */
interface Variant {
  label: string;
  toml: string;
  /** Restart tocfs over the previous variant's state directory (its disk cache and first-read order). */
  warm?: boolean;
  /**
   * Serve a copy of the image whose layers carry a prefetch hint: the files the previous variant's daemon saw
   * read first (`tocfs reads`), written by `tocfs convert --prefetch`. Fresh state, as cold as `default`.
   */
  hinted?: boolean;
}

/**
 * BENCH_TOCFS_VARIANTS: tocfs configurations, each measured against the same normal pull, separated by ';'; a
 * variant is "default" (tocfs as shipped), "warm" (tocfs restarted over the previous variant's state directory: its
 * disk cache and first-read order, with fresh podman storage), "hinted" (a cold start of the image converted with
 * `tocfs convert --prefetch` from what the previous variant's daemon saw read, see Variant.hinted), or TOML
 * assignments separated by ',', e.g. "default;warm;background_fetch=false,diffid_proof='off'".
 * The default is "default;hinted".
 */
function parseVariants(raw: string | undefined): Variant[] {
  return (raw === undefined || raw.trim() === '' ? 'default;hinted' : raw).split(';').map((v) => v.trim()).filter((v) => v !== '').map((v) => {
    if (v === 'default') return { label: 'default config', toml: '' };
    if (v === 'hinted') return { label: 'image with a prefetch hint (tocfs convert --prefetch), cold', toml: '', hinted: true };
    if (v === 'warm') return { label: 'warm cache (restarted over the previous state dir)', toml: '', warm: true };
    const lines = v.split(',').map((l) => l.trim()).filter((l) => l !== '');
    for (const l of lines) {
      if (!/^[a-z_]+\s*=\s*\S/.test(l)) {
        console.error(`bench:coldstart: BENCH_TOCFS_VARIANTS: "${l}" is not a TOML assignment (key = value)`);
        process.exit(2);
      }
    }
    return { label: lines.join(', '), toml: lines.join('\n') + '\n' };
  });
}
const VARIANTS = parseVariants(process.env.BENCH_TOCFS_VARIANTS);

const MiB = 1 << 20;
const T0 = performance.now();
const elapsed = (): string => `${((performance.now() - T0) / 1000).toFixed(1)} s`;
const load = (): string => loadavg().map((x) => x.toFixed(2)).join(' / ');
const say = (msg: string): void => console.log(`[${elapsed()}] ${msg}`);

// ---------------------------------------------------------------------------------------------------------
// The image

type Category = 'small' | 'medium' | 'large';

interface FileSpec {
  /** Path inside the image, without the leading slash. */
  path: string;
  size: number;
  text: boolean;
  category: Category;
  layer: 0 | 1 | 2;
}

/** Deterministic PRNG (mulberry32) for the image's shape and the read selection. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const logUniform = (rnd: () => number, lo: number, hi: number): number => Math.round(Math.exp(Math.log(lo) + rnd() * (Math.log(hi) - Math.log(lo))));

/**
 * The image's files: small files are 10 % of the bytes (spread over all layers, in directories of 64),
 * medium files 30 % (layer 2), large files 60 % (layer 3). About 30 % of the bytes are text-like.
 */
function planFiles(totalBytes: number, rnd: () => number): FileSpec[] {
  const files: FileSpec[] = [];
  const fill = (category: Category, share: number, size: () => number, textP: number, place: (i: number) => { path: string; layer: 0 | 1 | 2 }): void => {
    let left = Math.round(totalBytes * share);
    for (let i = 0; left > 0; i++) {
      const s = Math.min(left, size());
      left -= s;
      files.push({ ...place(i), size: s, text: rnd() < textP, category });
    }
  };
  fill('small', 0.10, () => logUniform(rnd, 512, 48 * 1024), 0.6, (i) => {
    const dir = Math.floor(i / 64);
    return { path: `usr/lib/pkg${String(dir).padStart(3, '0')}/mod${String(i % 64).padStart(2, '0')}.py`, layer: dir % 4 === 3 ? 2 : dir % 4 === 2 ? 1 : 0 };
  });
  fill('medium', 0.30, () => logUniform(rnd, 64 * 1024, 4 * MiB), 0.4, (i) => ({ path: `opt/app/lib/lib${String(i).padStart(3, '0')}.so`, layer: 1 }));
  fill('large', 0.60, () => Math.round((8 + rnd() * 32) * MiB), 0.2, (i) => ({ path: `srv/data/blob${String(i).padStart(2, '0')}.bin`, layer: 2 }));
  return files;
}

/**
 * Whole files, together about `fraction` of the image's bytes: that fraction of the small and of the medium
 * files (shuffled), then large files that fit the rest of the budget, then medium files again to fill it up.
 */
function selectReads(files: FileSpec[], fraction: number, rnd: () => number): FileSpec[] {
  const budget = fraction * files.reduce((s, f) => s + f.size, 0);
  const shuffled = (c: Category): FileSpec[] =>
    files.filter((f) => f.category === c).map((f) => ({ f, k: rnd() })).sort((a, b) => a.k - b.k).map((x) => x.f);
  const picked = new Set<FileSpec>();
  let sum = 0;
  const take = (candidates: FileSpec[], limit: number): void => {
    for (const f of candidates) {
      if (sum >= limit * 0.97) return;
      if (!picked.has(f) && sum + f.size <= limit * 1.03) {
        picked.add(f);
        sum += f.size;
      }
    }
  };
  const small = shuffled('small');
  const medium = shuffled('medium');
  const share = (c: Category): number => fraction * files.filter((f) => f.category === c).reduce((s, f) => s + f.size, 0);
  take(small, share('small'));
  take(medium, sum + share('medium'));
  take(shuffled('large').sort((a, b) => b.size - a.size), budget);
  take(medium, budget);
  take(small, budget);
  return [...picked].sort((a, b) => a.path.localeCompare(b.path));
}

const SYLLABLES = ['ka', 'lo', 'mi', 'ne', 'ru', 'sta', 'def', 'import', 'self', 'return', 'for', 'in', 'x', 'y', 'data',
  'value', 'none', 'true', 'if', 'else', 'class', 'init', 'get', 'set', 'path', 'os', 'sys', '_', '(', ')', ':', '=', '.', '0', '1'];

/** 4096 pseudo-words: text built from them compresses about 3× with gzip, like source code. */
const VOCAB: Buffer[] = (() => {
  const rnd = prng(7);
  return Array.from({ length: 4096 }, () => {
    let w = '';
    const n = 1 + Math.floor(rnd() * 3);
    for (let i = 0; i < n; i++) w += SYLLABLES[Math.floor(rnd() * SYLLABLES.length)];
    return Buffer.from(w);
  });
})();

/** Fresh text-like bytes (never repeated across files, so neither chunk dedup nor caches can help). */
function textBytes(size: number, rnd: () => number): Buffer {
  const b = Buffer.allocUnsafe(size + 64);
  let o = 0;
  let words = 0;
  while (o < size) {
    const u = rnd();
    o += VOCAB[Math.floor(u * u * VOCAB.length)]!.copy(b, o);
    b[o++] = ++words % 11 === 0 ? 10 : 32;
  }
  return b.subarray(0, size);
}

function writeFileData(path: string, f: FileSpec, rnd: () => number): void {
  const fd = openSync(path, 'w', 0o644);
  try {
    for (let o = 0; o < f.size; o += 4 * MiB) {
      const n = Math.min(4 * MiB, f.size - o);
      writeSync(fd, f.text ? textBytes(n, rnd) : randomBytes(n));
    }
  } finally {
    closeSync(fd);
  }
}

const BUSYBOX_TOOLS = ['sh', 'cat', 'sha256sum', 'xargs', 'ls', 'find', 'head', 'wc', 'echo'];
const READ_LIST = 'bench/read-list';
/** The workload; the marker line says it is done (podman itself may take longer to exit, see runUntilMarker). */
const DONE_MARKER = 'BENCH-COLDSTART-DONE';
const READ_COMMAND = ['sh', '-c', `xargs ${READERS > 1 ? `-P ${READERS} -n 8 ` : ''}sha256sum < /${READ_LIST} && echo ${DONE_MARKER}`];
/** sha256sum lines in path order (parallel readers print in any order). */
const sortedLines = (out: string): string => out.split('\n').filter((l) => l !== '').sort((a, b) => a.slice(66).localeCompare(b.slice(66)) || a.localeCompare(b)).join('\n') + '\n';

interface BenchImage {
  gzip: BuiltImage;
  chunked: BuiltImage;
  files: FileSpec[];
  reads: FileSpec[];
  /** sha256sum's output for the read list, computed from the generated files. */
  expected: string;
}

/** Write the three layer trees, tar them with GNU tar, build both images; the trees are removed again. */
async function makeImage(work: string): Promise<BenchImage> {
  const rnd = prng(20260522);
  const files = planFiles(IMAGE_MIB * MiB, rnd);
  const reads = selectReads(files, READ_FRACTION, rnd);
  const roots = [0, 1, 2].map((l) => join(work, `layer${l}`));
  for (const r of roots) mkdirSync(r, { recursive: true });
  // Layer 1 also has what makes the image runnable, and the list of files the benchmark command reads.
  mkdirSync(join(roots[0]!, 'bin'));
  writeFileSync(join(roots[0]!, 'bin', 'busybox'), readFileSync('/bin/busybox'), { mode: 0o755 });
  for (const t of BUSYBOX_TOOLS) symlinkSync('busybox', join(roots[0]!, 'bin', t));
  mkdirSync(join(roots[0]!, 'etc'));
  writeFileSync(join(roots[0]!, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  mkdirSync(join(roots[0]!, 'bench'));
  writeFileSync(join(roots[0]!, READ_LIST), reads.map((f) => `/${f.path}\n`).join(''));
  const expectedLines: string[] = [];
  for (const f of files) {
    const p = join(roots[f.layer]!, f.path);
    mkdirSync(join(p, '..'), { recursive: true });
    writeFileData(p, f, rnd);
  }
  for (const f of reads) {
    const hash = createHash('sha256').update(readFileSync(join(roots[f.layer]!, f.path))).digest('hex');
    expectedLines.push(`${hash}  /${f.path}`);
  }
  const tars: string[] = [];
  for (const [l, root] of roots.entries()) {
    const tar = join(work, `layer${l}.tar`);
    await execFileP('tar', ['--format=pax', '--numeric-owner', '--owner=0', '--group=0', '--sort=name',
      '--mtime=2024-05-01T12:00:00Z', '-cf', tar, '-C', root, '.'], { timeout: 300_000 });
    tars.push(tar);
    rmSync(root, { recursive: true, force: true });
  }
  const gzip = await buildImage(tars.map((tar) => ({ tar, compression: 'gzip' as const })), ['/bin/sh']);
  const chunked = await buildImage(tars.map((tar) => ({ tar, compression: 'zstd:chunked' as const })), ['/bin/sh']);
  for (const t of tars) rmSync(t, { force: true });
  return { gzip, chunked, files, reads, expected: sortedLines(expectedLines.join('\n')) };
}

const layerBytes = (img: BuiltImage): number => img.layers.reduce((s, l) => s + img.blobs.get(l.digest)!.length, 0);

/** What the report needs of the image once its blobs are in the registry. */
interface ImageSummary {
  gzipBytes: number;
  chunkedBytes: number;
  files: FileSpec[];
  reads: FileSpec[];
  expected: string;
}

// ---------------------------------------------------------------------------------------------------------
// One side of the comparison

interface SideResult {
  side: string;
  pullS: number;
  /** podman run start → the workload's done marker on podman's stdout. */
  runS: number;
  /** podman run start → podman exited. */
  runExitS: number;
  pull: PhaseCounters;
  run: PhaseCounters;
  /** From the workload's end until the side was torn down (background fetching, if any). */
  after: PhaseCounters;
  output: string;
  /** c/storage layers whose diff is a tocfs directory. */
  alsLayers: number;
  load: string;
}

async function runSide(side: string, tag: string, p: Podman, ref: string, proxy: LinkProxy): Promise<SideResult> {
  const loadBefore = load();
  const pullCounters = proxy.phase(`${tag}:pull`);
  const pull = await timed(() => p.podman(['pull', '-q', ref], 240_000));
  const runCounters = proxy.phase(`${tag}:run`);
  let afterCounters = runCounters;
  const run = await runUntilMarker(podmanRunArgv(ref, READ_COMMAND), p.env, DONE_MARKER, 240_000, () => { afterCounters = proxy.phase(`${tag}:after`); });
  return {
    side, pullS: pull.s, runS: run.doneS, runExitS: run.exitS, pull: pullCounters, run: runCounters, after: afterCounters,
    output: run.output, alsLayers: p.alsLayerCount(), load: loadBefore,
  };
}

// ---------------------------------------------------------------------------------------------------------
// Reporting

const fmtS = (s: number): string => s.toFixed(2);
const fmtMiB = (b: number): string => (b / MiB).toFixed(1);

function report(results: SideResult[][], image: ImageSummary, proxy: LinkProxy, calibration: string): boolean {
  const gz = image.gzipBytes;
  const zc = image.chunkedBytes;
  const readBytes = image.reads.reduce((s, f) => s + f.size, 0);
  const total = image.files.reduce((s, f) => s + f.size, 0);
  const byCat = (c: Category) => image.reads.filter((f) => f.category === c);
  console.log('\n== bench:coldstart ==');
  console.log(`image: ${fmtMiB(total)} MiB in ${image.files.length} files (+ busybox), 3 layers; gzip layers ${fmtMiB(gz)} MiB, zstd:chunked layers ${fmtMiB(zc)} MiB`);
  console.log(`read: ${image.reads.length} files, ${fmtMiB(readBytes)} MiB = ${(100 * readBytes / total).toFixed(1)} % of the bytes (small ${byCat('small').length}, medium ${byCat('medium').length}, large ${byCat('large').length}); command: ${READ_COMMAND.join(' ')}`);
  console.log(`link: ${LATENCY_MS} ms one way (${2 * LATENCY_MS} ms round trip, +1 round trip per new connection), ${MBIT > 0 ? `${MBIT} Mbit/s shared` : 'no bandwidth cap'}; ${calibration}`);
  console.log(`machine: ${cpus().length} CPUs; podman ${podmanVersion}; node ${process.version}; checkout at run time: ${tocfsVersion} (the compiled tocfs is whatever dist/ was built from)`);
  let ok = true;
  for (const [i, sides] of results.entries()) {
    console.log(`\nrun ${i + 1} of ${results.length}`);
    console.log('| side | pull s | run s | total s | MiB from registry (pull + run) | requests (pull + run) | podman run exited at s | load avg 1/5/15 before |');
    console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |');
    for (const r of sides) {
      const reqs = (phase: string) => proxy.exchanges.filter((e) => e.phase === phase).length;
      console.log(`| ${r.side} | ${fmtS(r.pullS)} | ${fmtS(r.runS)} | ${fmtS(r.pullS + r.runS)} | ${fmtMiB(r.pull.down + r.run.down)} (${fmtMiB(r.pull.down)} + ${fmtMiB(r.run.down)}) | ${reqs(r.pull.name) + reqs(r.run.name)} (${reqs(r.pull.name)} + ${reqs(r.run.name)}) | ${fmtS(r.runExitS)} | ${r.load} |`);
    }
    const normal = SKIP_NORMAL ? undefined : sides[0]!;
    const checks: [string, boolean][] = normal ? [
      ['normal (gzip): output = expected hashes', sortedLines(normal.output) === image.expected],
      ['normal (gzip): pulled without the store', normal.alsLayers === 0],
    ] : [];
    for (const tocfs of sides.slice(normal ? 1 : 0)) {
      if (normal) {
        const ratio = (normal.pullS + normal.runS) / (tocfs.pullS + tocfs.runS);
        console.log(`\nratio normal / ${tocfs.side} (total time): ${ratio.toFixed(2)}× (goal ≥ 5×); bytes from registry until the workload was done: ${(100 * (tocfs.pull.down + tocfs.run.down) / (normal.pull.down + normal.run.down)).toFixed(1)} % of normal${tocfs.after.down > 0 ? ` (+ ${fmtMiB(tocfs.after.down)} MiB afterwards, in the background, until the daemon was stopped)` : ''}`);
      }
      checks.push([`${tocfs.side}: output = expected hashes`, sortedLines(tocfs.output) === image.expected]);
      checks.push([`${tocfs.side}: all 3 layers served from the store (no fallback pull)`, tocfs.alsLayers === 3]);
    }
    for (const [what, pass] of checks) {
      console.log(`  ${pass ? 'ok  ' : 'FAIL'} ${what}`);
      ok &&= pass;
    }
    for (const r of sides) {
      for (const [c, s] of [[r.pull, r.pullS], [r.run, r.runS]] as const) {
        const phase = c.name;
        console.log(`  ${r.side}, ${phase.split(':')[1]} (${s.toFixed(1)} s, ${c.connections} new connection(s)):`);
        for (const l of describePhase(proxy.exchanges.filter((e) => e.phase === phase), s)) console.log(l);
      }
      const after = proxy.exchanges.filter((e) => e.phase === r.after.name && r.after !== r.run);
      if (after.length > 0) console.log(`  ${r.side}, after the workload was done: ${after.length} requests, ${fmtMiB(r.after.down)} MiB (background work until the daemon stopped)`);
    }
  }
  return ok;
}

let podmanVersion = '?';
let tocfsVersion = '?';

/** The checkout's commit and whether src/ has uncommitted changes (the numbers depend on the tocfs that was built). */
async function describeCheckout(): Promise<string> {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
  try {
    const head = (await execFileP('git', ['-C', root, 'log', '-1', '--format=%h %cI'])).stdout.trim();
    const dirty = (await execFileP('git', ['-C', root, 'status', '--porcelain', '--', 'src'])).stdout.split('\n').filter((l) => l !== '').length;
    return `commit ${head}${dirty > 0 ? ` + ${dirty} uncommitted file(s) under src/` : ''}`;
  } catch {
    return 'not a git checkout';
  }
}

// ---------------------------------------------------------------------------------------------------------

async function main(): Promise<number> {
  if (process.getuid?.() !== 0 || !existsSync('/dev/fuse')) {
    console.error('bench:coldstart needs root and /dev/fuse (it mounts tocfs and runs podman)');
    return 2;
  }
  for (const tool of ['podman', 'docker-registry', 'tar', 'unshare']) {
    try {
      await execFileP('sh', ['-c', `command -v ${tool}`]);
    } catch {
      console.error(`bench:coldstart needs ${tool} (apt-get install podman docker-registry)`);
      return 2;
    }
  }
  if (!existsSync('/bin/busybox')) {
    console.error('bench:coldstart needs /bin/busybox (apt-get install busybox-static)');
    return 2;
  }
  podmanVersion = (await execFileP('podman', ['--version'])).stdout.trim().replace(/^podman version /, '');
  tocfsVersion = await describeCheckout();
  say(`bench:coldstart: ${IMAGE_MIB} MiB image, ${LATENCY_MS} ms one-way latency, ${MBIT || 'unlimited'} Mbit/s, read fraction ${READ_FRACTION}, ${READERS} reader(s), ${RUNS} run(s); load ${load()}`);
  const bench = startBenchRun('bench:coldstart', TIMEOUT_S);
  const { work, cleanups } = bench;
  try {
    const registry: RegistryServer = await startRegistry();
    cleanups.push(() => registry.stop());
    const calibrationBlob = { repo: 'bench/chunked', digest: '', size: 0 };
    const image: ImageSummary = await (async () => {
      // The built images (several hundred MiB of buffers) live only in here: the registry keeps the blobs.
      const built = await makeImage(work);
      say(`images built: gzip ${fmtMiB(layerBytes(built.gzip))} MiB, zstd:chunked ${fmtMiB(layerBytes(built.chunked))} MiB; ${built.reads.length} files to read`);
      const client = new RegistryClient({ registriesConf: new RegistriesConf(parseRegistriesConf(`[[registry]]\nlocation = "${registry.host}"\ninsecure = true\n`, 'bench')) });
      await pushImage(client, `${registry.host}/bench/gzip:v1`, built.gzip);
      await pushImage(client, `${registry.host}/bench/chunked:v1`, built.chunked);
      await client.close();
      const big = built.chunked.layers[2]!;
      calibrationBlob.digest = big.digest;
      calibrationBlob.size = built.chunked.blobs.get(big.digest)!.length;
      return { gzipBytes: layerBytes(built.gzip), chunkedBytes: layerBytes(built.chunked), files: built.files, reads: built.reads, expected: built.expected };
    })();
    say('pushed both images to the registry');
    const proxy = await startLinkProxy(Number(registry.host.split(':')[1]), LATENCY_MS, MBIT);
    cleanups.push(() => proxy.stop());
    const calibration = await calibrate(proxy, calibrationBlob);
    say(calibration);
    const results: SideResult[][] = [];
    for (let run = 1; run <= RUNS; run++) {
      const sides: SideResult[] = [];
      await dropCaches();
      const plain = new Podman(join(work, `podman-normal-${run}`), { insecureHosts: [proxy.host] });
      if (!SKIP_NORMAL) try {
        say(`run ${run}: normal pull of the gzip image + podman run`);
        sides.push(await runSide('normal (gzip)', `normal${run}`, plain, `${proxy.host}/bench/gzip:v1`, proxy));
      } finally {
        await plain.cleanup();
        proxy.phase('idle');
      }
      let previousDir: string | undefined;
      let previousReads: string | undefined;
      for (const [v, variant] of VARIANTS.entries()) {
        let tag = 'v1';
        if (variant.hinted) {
          if (previousReads === undefined) throw new Error('bench:coldstart: the "hinted" variant needs a variant before it (its daemon records what the workload reads)');
          tag = `hinted${run}`;
          const list = join(work, `reads-${run}-${v}.txt`);
          writeFileSync(list, previousReads);
          // What a user does: tocfs reads <ref> > list; tocfs convert --prefetch list (straight to the registry).
          const out = await execFileP(process.execPath, [CLI, 'convert', '--insecure', '--prefetch', list,
            `docker://${registry.host}/bench/chunked:v1`, `docker://${registry.host}/bench/chunked:${tag}`], { maxBuffer: 16 << 20 });
          say(`converted with a prefetch hint of ${previousReads.split('\n').filter((l) => l).length} paths: ${out.stdout.split('\n').find((l) => l.startsWith('prefetch hint')) ?? ''}`);
        }
        await dropCaches();
        const dir = variant.warm && previousDir ? previousDir : join(work, `tocfs-${run}-${v}`);
        previousDir = dir;
        const daemon: DaemonHandle = await startDaemon(dir, {
          insecureHosts: [proxy.host], extraConfig: variant.toml, ...(DAEMON_NODE_OPTIONS ? { env: { NODE_OPTIONS: DAEMON_NODE_OPTIONS } } : {}),
        });
        const lazy = new Podman(join(dir, 'podman'), { als: daemon.mountpoint, insecureHosts: [proxy.host] });
        try {
          say(`run ${run}: podman through tocfs (${variant.label}) of the zstd:chunked image + podman run`);
          sides.push(await runSide(`tocfs (zstd:chunked), ${variant.label}`, `tocfs${run}.${v}`, lazy, `${proxy.host}/bench/chunked:${tag}`, proxy));
          previousReads = (await execFileP(process.execPath, [CLI, 'reads', '--root', daemon.root, `${proxy.host}/bench/chunked:${tag}`])).stdout;
        } finally {
          await lazy.cleanup();
          await daemon.stop();
          proxy.phase('idle');
          if (LOG_DIR) {
            mkdirSync(LOG_DIR, { recursive: true });
            writeFileSync(join(LOG_DIR, `daemon-run${run}-variant${v}.log`), daemon.log());
          }
        }
      }
      say(`run ${run}: ${sides.map((r) => `${r.side} ${fmtS(r.pullS + r.runS)} s`).join('; ')}`);
      results.push(sides);
    }
    if (LOG_DIR) writeFileSync(join(LOG_DIR, 'requests.jsonl'), proxy.exchanges.map((e) => JSON.stringify(e)).join('\n') + '\n');
    const ok = report(results, image, proxy, calibration);
    console.log(`\nload average after: ${load()}; wall time ${elapsed()}`);
    return ok ? 0 : 1;
  } finally {
    await bench.finish();
  }
}

main().then((code) => { process.exitCode = code; }, (err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
