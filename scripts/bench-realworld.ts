// Cold start of real images built from Debian 12 packages (issue #12): `npm run bench:realworld` (root, /dev/fuse,
// podman, skopeo, docker-registry, debootstrap and Debian's mirror; the first run builds and caches the images).
//
//   1. Images (scripts/lib/realworld-images.ts): python3 + numpy/scipy/pandas, gcc/g++/gfortran, nodejs + npm, and a
//      1 GiB read-everything data layer, each as a Debian minbase layer + the layer its packages add. Pushed to a
//      loopback docker-registry (storage cached beside the images) as gzip and as zstd:chunked written by skopeo 1.18
//      (the c/image of podman 5.4).
//   2. The link: the proxy of bench:coldstart (scripts/lib/link-proxy.ts), BENCH_MBIT (default 100) Mbit/s shared,
//      BENCH_LATENCY_MS (default 20) ms each way. Every side reaches the registry only through it.
//   3. Per workload, per run, from cold (fresh podman storage and tocfs state, page cache dropped), these sides:
//        full       podman 4.3.1 pulls the gzip image, then runs the workload
//        partial    podman 5.4 (Debian 13 root) pulls the zstd:chunked image with enable_partial_images, then runs
//        plain      podman 4.3.1 through tocfs, default configuration
//        nobg       the same with background_fetch = false and diffid_proof = "off" (the proof needs every byte, so
//                   with it on the layer is still fetched in the background): reads alone fetch
//        hinted     tocfs with a hint attached by `tocfs hint` (the image digest unchanged) from plain's reads
//        warm       tocfs restarted over plain's state directory, fresh podman storage
//      Time = pull + run until the workload prints its done marker.
//   4. Print, per workload, the medians over the runs, the ratios full / side and partial / side, MiB fetched until
//      ready, and MiB of files the workload read (from tocfs reads); check every output.
//
// Environment: BENCH_WORKLOADS (default python,gcc,node,bigread), BENCH_SIDES (default full,partial,plain,nobg,
// hinted,warm), BENCH_RUNS (default 3), BENCH_MBIT, BENCH_LATENCY_MS, BENCH_REALWORLD_CACHE (default
// /var/cache/tocfs/realworld), BENCH_DEBIAN_MIRROR, BENCH_JSON (write all results there), BENCH_LOG_DIR (daemon logs
// and the proxy's request log), BENCH_CHART (write an SVG bar chart of the medians there), BENCH_TIMEOUT_S
// (default 7200), BENCH_TOCFS_TOML (config lines for every tocfs side,
// separated by ';').
import { execFile } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parseHintLine } from '../src/format/index.js';
import { CLI } from '../test/helpers/cli.js';
import { startDaemon, type DaemonHandle } from '../test/helpers/daemon.js';
import { Podman, PODMAN_RUN_FLAGS, podmanRunArgv } from '../test/helpers/podman.js';
import { debian13Root, Debian13Chroot, Podman5 } from '../test/helpers/podman5.js';
import { freePort, startRegistry, type RegistryServer } from '../test/helpers/registry-server.js';
import { envNumber, startBenchRun } from './lib/bench-run.js';
import { calibrate, describePhase, startLinkProxy, type LinkProxy, type PhaseCounters } from './lib/link-proxy.js';
import { dropCaches, runUntilMarker, timed, type MarkedRun } from './lib/podman-run.js';
import { DONE_MARKER, WORKLOADS, workloadLayers, writeOciLayout, type Workload, type WorkloadLayers } from './lib/realworld-images.js';

const execFileP = promisify(execFile);
const MiB = 1 << 20;

function envList<T extends string>(name: string, all: readonly T[], fallback: readonly T[]): T[] {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return [...fallback];
  const items = raw.split(',').map((s) => s.trim()).filter((s) => s !== '');
  for (const i of items) {
    if (!all.includes(i as T)) {
      console.error(`bench:realworld: ${name}: "${i}" is not one of ${all.join(', ')}`);
      process.exit(2);
    }
  }
  return items as T[];
}

const SIDES = ['full', 'partial', 'plain', 'nobg', 'hinted', 'warm'] as const;
type Side = (typeof SIDES)[number];
const SIDE_LABEL: Record<Side, string> = {
  full: 'full pull (podman 4.3.1, gzip)', partial: 'podman 5.4 partial pull (zstd:chunked)', plain: 'tocfs plain',
  nobg: 'tocfs, reads only (no background fetch, no proof)', hinted: 'tocfs hinted (tocfs hint)', warm: 'tocfs warm (restarted)',
};

const MBIT = envNumber('bench:realworld', 'BENCH_MBIT', 100, (v) => v >= 0, 'a bandwidth in Mbit/s (0 = no cap)');
const LATENCY_MS = envNumber('bench:realworld', 'BENCH_LATENCY_MS', 20, (v) => v >= 0 && v <= 1000, 'a one-way latency in ms between 0 and 1000');
const RUNS = envNumber('bench:realworld', 'BENCH_RUNS', 3, (v) => Number.isInteger(v) && v >= 1 && v <= 10, 'a run count between 1 and 10');
const TIMEOUT_S = envNumber('bench:realworld', 'BENCH_TIMEOUT_S', 7200, (v) => v >= 60, 'a timeout of at least 60 s');
const WORKLOAD_NAMES = envList('BENCH_WORKLOADS', WORKLOADS.map((w) => w.name), WORKLOADS.map((w) => w.name));
const SIDES_WANTED = envList('BENCH_SIDES', SIDES, SIDES);
const CACHE_DIR = process.env.BENCH_REALWORLD_CACHE ?? '/var/cache/tocfs/realworld';
const MIRROR = process.env.BENCH_DEBIAN_MIRROR ?? 'http://deb.debian.org/debian';
const LOG_DIR = process.env.BENCH_LOG_DIR;
/** Extra lines for every tocfs side's config file, e.g. "whole_file = 0" to compare with a setting changed. */
const TOCFS_TOML = (process.env.BENCH_TOCFS_TOML ?? '').split(';').map((l) => l.trim()).filter((l) => l !== '').map((l) => `${l}\n`).join('');

const T0 = performance.now();
const elapsed = (): string => `${((performance.now() - T0) / 1000).toFixed(0)} s`;
const say = (msg: string): void => console.log(`[${elapsed()}] ${msg}`);
const fmtMiB = (b: number): string => (b / MiB).toFixed(1);

interface SideResult {
  workload: string;
  side: Side;
  run: number;
  pullS: number;
  runS: number;
  totalS: number;
  /** Bytes registry → client during pull and run (until the marker). */
  pullBytes: number;
  runBytes: number;
  requests: number;
  /** Layers served by tocfs (c/storage "additionallayer" entries). */
  alsLayers: number;
  ok: boolean;
  problem?: string;
}

// ---------------------------------------------------------------------------------------------------------
// Images in the registry

interface PushedWorkload {
  workload: Workload;
  layers: WorkloadLayers;
  /** Repositories (under the registry) of the gzip image, the zstd:chunked image, and a copy of it for hints. */
  gzip: string;
  zstd: string;
  hinted: string;
}

/**
 * Push one workload's images unless the cached registry storage already has them (a marker per workload records the
 * layer tars' recipes and sizes it was pushed from).
 */
async function pushWorkload(registry: RegistryServer, chroot: Debian13Chroot, work: string, w: Workload, layers: WorkloadLayers): Promise<PushedWorkload> {
  const repo = (kind: string): string => `realworld/${w.name}-${kind}:v1`;
  const pushed: PushedWorkload = { workload: w, layers, gzip: repo('gzip'), zstd: repo('zstd'), hinted: repo('hinted') };
  const stamp = layers.tars.map((t) => `${readFileSync(`${t}.ready`, 'utf8').trim()} ${lstatSync(t).size}`).join('\n');
  const marker = join(CACHE_DIR, 'registry', `pushed-${w.name}`);
  if (existsSync(marker) && readFileSync(marker, 'utf8') === stamp) return pushed;
  const layout = join(work, `oci-${w.name}`);
  await writeOciLayout(layout, layers.tars, 'v1', w.command);
  const dest = (r: string): string => `docker://${registry.host}/${r}`;
  say(`${w.name}: pushing gzip (skopeo of Debian 12)`);
  await execFileP('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${layout}:v1`, dest(pushed.gzip)], { timeout: 1800_000 });
  say(`${w.name}: pushing zstd:chunked (skopeo 1.18 of the Debian 13 root)`);
  await chroot.exec('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', '--dest-compress-format=zstd:chunked', `oci:${layout}:v1`, dest(pushed.zstd)], { timeoutMs: 1800_000 });
  await chroot.exec('skopeo', ['copy', '--quiet', '--src-tls-verify=false', '--dest-tls-verify=false', '--preserve-digests', dest(pushed.zstd), dest(pushed.hinted)], { timeoutMs: 600_000 });
  rmSync(layout, { recursive: true, force: true });
  writeFileSync(marker, stamp);
  return pushed;
}

// ---------------------------------------------------------------------------------------------------------
// One side

interface Ctx {
  work: string;
  registry: RegistryServer;
  proxy: LinkProxy;
  chroot: Debian13Chroot;
}

/** What one side measured around `pull` and `run`. */
async function measure(ctx: Ctx, tag: string, pull: () => Promise<unknown>, run: (onDone: () => void) => Promise<MarkedRun>): Promise<{ pullS: number; runS: number; pull: PhaseCounters; run: PhaseCounters; output: string }> {
  const pullCounters = ctx.proxy.phase(`${tag}:pull`);
  const p = await timed(pull);
  const runCounters = ctx.proxy.phase(`${tag}:run`);
  // Run time ends at the done marker, not at podman's exit (see runUntilMarker).
  const r = await run(() => { ctx.proxy.phase(`${tag}:after`); });
  ctx.proxy.phase('idle');
  return { pullS: p.s, runS: r.doneS, pull: pullCounters, run: runCounters, output: r.output };
}

function checkOutput(w: PushedWorkload, output: string): string | undefined {
  if (w.layers.expected !== undefined && output !== w.layers.expected) return `output ${JSON.stringify(output.slice(0, 200))} is not the expected ${JSON.stringify(w.layers.expected)}`;
  return undefined;
}

const RUN_TIMEOUT_MS = 900_000;

async function fullSide(ctx: Ctx, w: PushedWorkload, run: number): Promise<SideResult> {
  const p = new Podman(join(ctx.work, `full-${w.workload.name}-${run}`), { insecureHosts: [ctx.proxy.host] });
  const ref = `${ctx.proxy.host}/${w.gzip}`;
  try {
    const m = await measure(ctx, `${w.workload.name}.full.${run}`, () => p.podman(['pull', '-q', ref], RUN_TIMEOUT_MS),
      (onDone) => runUntilMarker(podmanRunArgv(ref, w.workload.command), p.env, DONE_MARKER, RUN_TIMEOUT_MS, onDone));
    const als = p.alsLayerCount();
    const problem = checkOutput(w, m.output) ?? (als !== 0 ? `${als} layers came from an additional layer store` : undefined);
    return result(ctx, w, 'full', run, m, als, problem);
  } finally {
    await p.cleanup();
  }
}

async function partialSide(ctx: Ctx, w: PushedWorkload, run: number): Promise<SideResult> {
  const p = new Podman5(ctx.chroot, join(ctx.work, `partial-${w.workload.name}-${run}`), {
    insecureHosts: [ctx.proxy.host],
    storageOptions: ['pull_options = {enable_partial_images = "true", use_hard_links = "false", ostree_repos = ""}'],
  });
  const ref = `${ctx.proxy.host}/${w.zstd}`;
  try {
    const argv = ['nsenter', '--target', String(ctx.chroot.pid), '--mount', '--', 'chroot', ctx.chroot.root, 'podman', 'run', ...PODMAN_RUN_FLAGS, ref, ...w.workload.command];
    const m = await measure(ctx, `${w.workload.name}.partial.${run}`, () => p.podman(['pull', '-q', ref], RUN_TIMEOUT_MS),
      (onDone) => runUntilMarker(argv, p.env, DONE_MARKER, RUN_TIMEOUT_MS, onDone));
    // A partial pull asks for ranges; a pull that fell back to the whole blob did not use the TOC.
    const ranged = ctx.proxy.exchanges.filter((e) => e.phase === m.pull.name && e.range !== undefined).length;
    const problem = checkOutput(w, m.output) ?? (ranged === 0 ? 'podman 5.4 sent no range request: it pulled the layers whole, not partially' : undefined);
    return result(ctx, w, 'partial', run, m, 0, problem);
  } finally {
    await p.cleanup();
  }
}

interface TocfsRun {
  result: SideResult;
  /** The state directory (for warm), and the paths the workload read (for hinted). */
  dir: string;
  reads: string;
}

/**
 * One tocfs side. `settle`: after the measurement, let the daemon finish its background fetch and DiffID proofs
 * before it stops (bounded by SETTLE_MS), so that the warm side starts from what a node that pulled the image
 * earlier has: every layer local and proven (without it, every warm start proved the layers again and served no
 * file by passthrough, since passthrough waits for the proof).
 */
async function tocfsSide(ctx: Ctx, w: PushedWorkload, run: number, side: Side, opts: { dir?: string; toml?: string; repo?: string; settle?: boolean }): Promise<TocfsRun> {
  const dir = opts.dir ?? join(ctx.work, `tocfs-${w.workload.name}-${run}-${side}`);
  // With a log directory, the daemon's metrics (FUSE operations by opcode, fetches) are kept beside its log.
  const metricsPort = LOG_DIR ? await freePort() : undefined;
  const metricsToml = metricsPort ? `metrics_listen = "127.0.0.1:${metricsPort}"\n` : '';
  const daemon: DaemonHandle = await startDaemon(dir, { insecureHosts: [ctx.proxy.host], extraConfig: TOCFS_TOML + metricsToml + (opts.toml ?? '') });
  const p = new Podman(join(ctx.work, `podman-${w.workload.name}-${run}-${side}`), { als: daemon.mountpoint, insecureHosts: [ctx.proxy.host] });
  const ref = `${ctx.proxy.host}/${opts.repo ?? w.zstd}`;
  try {
    const m = await measure(ctx, `${w.workload.name}.${side}.${run}`, () => p.podman(['pull', '-q', ref], RUN_TIMEOUT_MS),
      (onDone) => runUntilMarker(podmanRunArgv(ref, w.workload.command), p.env, DONE_MARKER, RUN_TIMEOUT_MS, onDone));
    const als = p.alsLayerCount();
    const problem = checkOutput(w, m.output) ?? (als !== w.layers.tars.length ? `only ${als} of ${w.layers.tars.length} layers were served by tocfs` : undefined);
    const reads = (await execFileP(process.execPath, [CLI, 'reads', '--root', daemon.root, ref], { maxBuffer: 64 << 20 })).stdout;
    if (opts.settle) await settle(daemon, w.layers.tars.length);
    return { result: result(ctx, w, side, run, m, als, problem), dir, reads };
  } finally {
    if (LOG_DIR && metricsPort) await saveMetrics(metricsPort, join(LOG_DIR, `metrics-${w.workload.name}-${run}-${side}.txt`));
    await p.cleanup();
    await daemon.stop();
    if (LOG_DIR) {
      mkdirSync(LOG_DIR, { recursive: true });
      writeFileSync(join(LOG_DIR, `daemon-${w.workload.name}-${run}-${side}.log`), daemon.log());
    }
  }
}

const SETTLE_MS = 600_000;

async function settle(daemon: DaemonHandle, layers: number): Promise<void> {
  const proven = new RegExp(Array.from({ length: layers }, () => '"msg":"DiffID proven"').join('[\\s\\S]*'));
  const t0 = Date.now();
  try {
    await daemon.waitForLog(proven, SETTLE_MS);
    say(`  (the plain daemon proved its ${layers} layers ${((Date.now() - t0) / 1000).toFixed(1)} s after the run; the warm side starts from there)`);
  } catch {
    say(`  (the plain daemon had not proved its ${layers} layers ${SETTLE_MS / 1000} s after the run: the warm side proves them again)`);
  }
}

async function saveMetrics(port: number, file: string): Promise<void> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    mkdirSync(LOG_DIR!, { recursive: true });
    writeFileSync(file, await res.text());
  } catch (err) {
    console.error(`could not save the daemon's metrics to ${file}: ${(err as Error).message}`);
  }
}

function result(ctx: Ctx, w: PushedWorkload, side: Side, run: number, m: Awaited<ReturnType<typeof measure>>, als: number, problem: string | undefined): SideResult {
  const requests = ctx.proxy.exchanges.filter((e) => e.phase === m.pull.name || e.phase === m.run.name).length;
  return {
    workload: w.workload.name, side, run, pullS: m.pullS, runS: m.runS, totalS: m.pullS + m.runS, pullBytes: m.pull.down, runBytes: m.run.down,
    requests, alsLayers: als, ok: problem === undefined, ...(problem !== undefined ? { problem } : {}),
  };
}

/** All sides of one workload in one run, in an order where warm and hinted follow the plain run they build on. */
async function runWorkload(ctx: Ctx, w: PushedWorkload, run: number, readsOut: Map<string, string>): Promise<SideResult[]> {
  const out: SideResult[] = [];
  const record = (r: SideResult): void => {
    out.push(r);
    say(`${w.workload.name} run ${run}: ${SIDE_LABEL[r.side]}: pull ${r.pullS.toFixed(2)} s + run ${r.runS.toFixed(2)} s = ${r.totalS.toFixed(2)} s, ${fmtMiB(r.pullBytes + r.runBytes)} MiB, ${r.requests} requests${r.problem ? ` — FAIL: ${r.problem}` : ''}`);
  };
  const want = (s: Side): boolean => SIDES_WANTED.includes(s);
  if (want('full')) { await dropCaches(); record(await fullSide(ctx, w, run)); }
  if (want('partial')) { await dropCaches(); record(await partialSide(ctx, w, run)); }
  let plain: TocfsRun | undefined;
  if (want('plain') || want('warm') || want('hinted')) {
    await dropCaches();
    plain = await tocfsSide(ctx, w, run, 'plain', { settle: want('warm') });
    if (want('plain')) record(plain.result);
    readsOut.set(w.workload.name, plain.reads);
  }
  if (want('nobg')) { await dropCaches(); record((await tocfsSide(ctx, w, run, 'nobg', { toml: 'background_fetch = false\ndiffid_proof = "off"\n' })).result); }
  if (want('hinted') && plain) {
    const list = join(ctx.work, `reads-${w.workload.name}-${run}.txt`);
    writeFileSync(list, plain.reads);
    if (LOG_DIR) writeFileSync(join(LOG_DIR, `reads-${w.workload.name}-${run}.txt`), plain.reads);
    // What a user does once per image: tocfs reads <ref> > list; tocfs hint <ref> list (straight to the registry).
    await execFileP(process.execPath, [CLI, 'hint', '--insecure', `${ctx.registry.host}/${w.hinted}`, list]);
    await dropCaches();
    record((await tocfsSide(ctx, w, run, 'hinted', { repo: w.hinted })).result);
  }
  if (want('warm') && plain) {
    await dropCaches();
    record((await tocfsSide(ctx, w, run, 'warm', { dir: plain.dir })).result);
  }
  if (plain) rmSync(plain.dir, { recursive: true, force: true });
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Report

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n === 0 ? NaN : n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
};

/**
 * Bytes a workload read (tocfs reads: whole files, and the byte ranges read of partly read ones, whole chunks),
 * files looked up in the root the image was built from.
 */
function readBytes(w: Workload, reads: string | undefined): { files: number; bytes: number } | undefined {
  if (reads === undefined) return undefined;
  const root = w.bigData ? join(CACHE_DIR, 'data-bigread') : join(CACHE_DIR, `rootfs-${w.name}`);
  let files = 0;
  let bytes = 0;
  for (const line of reads.split('\n').filter((l) => l !== '')) {
    const { path, ranges } = parseHintLine(line);
    try {
      const st = lstatSync(join(root, path));
      if (!st.isFile()) continue;
      files++;
      bytes += ranges ? ranges.reduce((n, [a, b]) => n + Math.min(b, st.size) - a, 0) : st.size;
    } catch { /* a path of the base layer only, or gone: not counted */ }
  }
  return { files, bytes };
}

function report(all: SideResult[], pushed: PushedWorkload[], reads: Map<string, string>, calibration: string): boolean {
  console.log('\n== bench:realworld ==');
  console.log(`link: ${MBIT || 'unlimited'} Mbit/s shared, ${LATENCY_MS} ms each way; ${calibration}`);
  console.log(`machine: ${cpus().length} CPUs, load ${loadavg().map((x) => x.toFixed(2)).join(' / ')}; node ${process.version}; ${RUNS} run(s), medians`);
  let ok = true;
  for (const w of pushed) {
    const rs = all.filter((r) => r.workload === w.workload.name);
    const med = (s: Side, f: (r: SideResult) => number): number => median(rs.filter((r) => r.side === s).map(f));
    const full = med('full', (r) => r.totalS);
    const partial = med('partial', (r) => r.totalS);
    const rb = readBytes(w.workload, reads.get(w.workload.name));
    console.log(`\n### ${w.workload.name}: ${w.workload.what}`);
    console.log(`layers (uncompressed): ${w.layers.tars.map((t) => fmtMiB(lstatSync(t).size)).join(' + ')} MiB; the workload read ${rb ? `${rb.files} files, ${fmtMiB(rb.bytes)} MiB` : '?'}`);
    console.log('| side | pull s | run s | total s | full / side | partial / side | MiB fetched until ready | fetched / read | requests |');
    console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const s of SIDES_WANTED) {
      if (!rs.some((r) => r.side === s)) continue;
      const total = med(s, (r) => r.totalS);
      const fetched = med(s, (r) => r.pullBytes + r.runBytes);
      console.log(`| ${SIDE_LABEL[s]} | ${med(s, (r) => r.pullS).toFixed(2)} | ${med(s, (r) => r.runS).toFixed(2)} | ${total.toFixed(2)} | ${Number.isNaN(full) ? '–' : `${(full / total).toFixed(2)}×`} | ${Number.isNaN(partial) ? '–' : `${(partial / total).toFixed(2)}×`} | ${fmtMiB(fetched)} | ${rb && rb.bytes > 0 ? `${(fetched / rb.bytes).toFixed(2)}×` : '–'} | ${med(s, (r) => r.requests).toFixed(0)} |`);
    }
    for (const r of rs.filter((x) => !x.ok)) {
      console.log(`  FAIL ${SIDE_LABEL[r.side]}, run ${r.run}: ${r.problem}`);
      ok = false;
    }
  }
  return ok;
}

/** A grouped bar chart (SVG) of the median total seconds per workload and side, for docs/benchmarks.md. */
function chartSvg(all: SideResult[], workloads: string[]): string {
  const sides = SIDES_WANTED;
  const colors: Record<Side, string> = { full: '#8c8c8c', partial: '#c9a227', plain: '#2b6cb0', nobg: '#63b3ed', hinted: '#2f855a', warm: '#9f7aea' };
  const med = (w: string, s: Side): number => median(all.filter((r) => r.workload === w && r.side === s).map((r) => r.totalS));
  const max = Math.max(1, ...workloads.flatMap((w) => sides.map((s) => med(w, s))).filter((x) => Number.isFinite(x)));
  const barW = 18;
  const groupW = sides.length * barW + 30;
  const left = 50;
  const top = 30;
  const h = 260;
  const width = left + workloads.length * groupW + 20;
  const y = (v: number): number => top + h - (v / max) * h;
  const out: string[] = [`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${top + h + 90}" font-family="sans-serif" font-size="11">`,
    `<text x="${left}" y="16" font-size="13">Cold start, pull + run to ready (s, median of ${RUNS}); ${MBIT} Mbit/s, ${2 * LATENCY_MS} ms RTT</text>`];
  for (let t = 0; t <= max; t += max > 60 ? 20 : 10) {
    out.push(`<line x1="${left}" x2="${width - 10}" y1="${y(t)}" y2="${y(t)}" stroke="#e2e2e2"/><text x="${left - 6}" y="${y(t) + 4}" text-anchor="end">${t}</text>`);
  }
  workloads.forEach((w, g) => {
    const x0 = left + 10 + g * groupW;
    sides.forEach((s, i) => {
      const v = med(w, s);
      if (!Number.isFinite(v)) return;
      out.push(`<rect x="${x0 + i * barW}" y="${y(v).toFixed(1)}" width="${barW - 3}" height="${(top + h - y(v)).toFixed(1)}" fill="${colors[s]}"><title>${SIDE_LABEL[s]}: ${v.toFixed(2)} s</title></rect>`);
      out.push(`<text x="${x0 + i * barW + (barW - 3) / 2}" y="${(y(v) - 3).toFixed(1)}" text-anchor="middle" font-size="8">${v < 10 ? v.toFixed(1) : v.toFixed(0)}</text>`);
    });
    out.push(`<text x="${x0 + (sides.length * barW) / 2}" y="${top + h + 16}" text-anchor="middle" font-size="12">${w}</text>`);
  });
  sides.forEach((s, i) => {
    const lx = left + (i % 3) * 210;
    const ly = top + h + 36 + Math.floor(i / 3) * 18;
    out.push(`<rect x="${lx}" y="${ly - 9}" width="10" height="10" fill="${colors[s]}"/><text x="${lx + 14}" y="${ly}">${SIDE_LABEL[s]}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------------------

async function requireTools(): Promise<string | undefined> {
  if (process.getuid?.() !== 0 || !existsSync('/dev/fuse')) return 'bench:realworld needs root and /dev/fuse (it mounts tocfs, runs podman and debootstrap)';
  for (const tool of ['podman', 'skopeo', 'docker-registry', 'debootstrap', 'tar', 'unshare', 'nsenter']) {
    try {
      await execFileP('sh', ['-c', `command -v ${tool}`]);
    } catch {
      return `bench:realworld needs ${tool} (apt-get install podman skopeo docker-registry debootstrap; npm test installs them as root)`;
    }
  }
  return undefined;
}

async function main(): Promise<number> {
  const missing = await requireTools();
  if (missing) {
    console.error(missing);
    return 2;
  }
  say(`bench:realworld: workloads ${WORKLOAD_NAMES.join(', ')}; sides ${SIDES_WANTED.join(', ')}; ${TOCFS_TOML ? `tocfs config + ${JSON.stringify(TOCFS_TOML)}; ` : ''}${RUNS} run(s); ${MBIT} Mbit/s, ${LATENCY_MS} ms each way; cache ${CACHE_DIR}`);
  mkdirSync(join(CACHE_DIR, 'registry', 'storage'), { recursive: true });
  const bench = startBenchRun('bench:realworld', TIMEOUT_S);
  const { work, cleanups } = bench;
  try {
    const root5 = await debian13Root();
    const chroot = await Debian13Chroot.start(root5, [work]);
    cleanups.push(() => chroot.stop());
    const registry = await startRegistry({ storageDir: join(CACHE_DIR, 'registry', 'storage') });
    cleanups.push(() => registry.stop());
    const pushed: PushedWorkload[] = [];
    for (const name of WORKLOAD_NAMES) {
      const w = WORKLOADS.find((x) => x.name === name)!;
      const layers = await workloadLayers({ dir: CACHE_DIR, mirror: MIRROR, say }, w);
      pushed.push(await pushWorkload(registry, chroot, work, w, layers));
    }
    say('images ready in the registry');
    const proxy = await startLinkProxy(Number(registry.host.split(':')[1]), LATENCY_MS, MBIT);
    cleanups.push(() => proxy.stop());
    const digestOfBase = (await execFileP('skopeo', ['inspect', '--tls-verify=false', `docker://${registry.host}/${pushed[0]!.zstd}`])).stdout;
    const firstLayer = (JSON.parse(digestOfBase) as { Layers: string[] }).Layers[0]!;
    const calibration = await calibrate(proxy, { repo: pushed[0]!.zstd.split(':')[0]!, digest: firstLayer, size: 4 * MiB });
    say(calibration);
    const ctx: Ctx = { work, registry, proxy, chroot };
    const all: SideResult[] = [];
    const reads = new Map<string, string>();
    for (let run = 1; run <= RUNS; run++) {
      for (const w of pushed) all.push(...await runWorkload(ctx, w, run, reads));
    }
    if (process.env.BENCH_JSON) writeFileSync(process.env.BENCH_JSON, JSON.stringify({ mbit: MBIT, latencyMs: LATENCY_MS, runs: RUNS, results: all }, null, 2));
    if (process.env.BENCH_CHART) {
      try {
        writeFileSync(process.env.BENCH_CHART, chartSvg(all, WORKLOAD_NAMES));
      } catch (err) {
        console.error(`bench:realworld: no chart: ${(err as Error).message}`);
      }
    }
    if (LOG_DIR) {
      writeFileSync(join(LOG_DIR, 'requests.jsonl'), proxy.exchanges.map((e) => JSON.stringify(e)).join('\n') + '\n');
      for (const r of all) {
        const tag = `${r.workload}.${r.side}.${r.run}`;
        const lines = [`${tag} pull`, ...describePhase(proxy.exchanges.filter((e) => e.phase === `${tag}:pull`), r.pullS), `${tag} run`, ...describePhase(proxy.exchanges.filter((e) => e.phase === `${tag}:run`), r.runS)];
        writeFileSync(join(LOG_DIR, 'phases.txt'), lines.join('\n') + '\n', { flag: 'a' });
      }
    }
    const ok = report(all, pushed, reads, calibration);
    console.log(`\nwall time ${elapsed()}`);
    return ok ? 0 : 1;
  } finally {
    await bench.finish();
  }
}

// Exit explicitly: after a 30-minute run a handle left by a child's pipes once kept the process alive for minutes.
main().then((code) => process.exit(code), (err: unknown) => {
  console.error(err);
  process.exit(1);
});
