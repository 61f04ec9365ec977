// Benchmark of src/fuse against tmpfs, in the same run: `npm run bench:fuse` (root, /dev/fuse).
// A MemFs (test/fuse/memfs.ts) is served through the layer by test/fuse/server.js in a child process; the same
// tree is written to a tmpfs mounted here. Every measurement runs real tools (ls, dd) as child processes.
//   listing:  ls -lR over 50 000 entries, cold (echo 3 > drop_caches before each run)
//   read:     dd bs=1M of a 1 GiB file served from memory, cold (caches dropped) and warm (second read: page cache, KEEP_CACHE)
//   parallel: 8 dd readers of 128 MiB files at once, cold
// Prints a table with each FUSE number as a ratio to tmpfs.
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { cleanupDir, hasFuse, startServer } from '../test/fuse/harness.js';
import { prng } from '../test/fuse/server.js';

const execFileP = promisify(execFile);
const ENTRIES = Number(process.env.BENCH_ENTRIES ?? 50_000);
const BIG = Number(process.env.BENCH_BIG_MIB ?? 1024) * (1 << 20);
const RUNS = Number(process.env.BENCH_RUNS ?? 3);

async function sh(script: string): Promise<number> {
  const t0 = process.hrtime.bigint();
  await execFileP('sh', ['-c', script], { maxBuffer: 1 << 20, timeout: 300_000 });
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

const dropCaches = (): Promise<number> => sh('sync; echo 3 > /proc/sys/vm/drop_caches');

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** The same tree as the bench MemFs (test/fuse/server.ts buildBench), on a real filesystem. */
function writeTree(root: string): void {
  mkdirSync(join(root, 'tree'));
  let made = 1;
  for (let d = 0; made < ENTRIES; d++) {
    const dir = join(root, 'tree', `d${d}`);
    mkdirSync(dir);
    made++;
    for (let i = 0; i < 999 && made < ENTRIES; i++, made++) {
      if (i % 10 === 9) symlinkSync(`f${i - 1}`, join(dir, `l${i}`));
      else writeFileSync(join(dir, `f${i}`), 'x');
    }
  }
  const pattern = prng(1 << 20, 99);
  const writePattern = (path: string, size: number): void => {
    const fd = openSync(path, 'w');
    for (let off = 0; off < size; off += pattern.length) writeSync(fd, pattern, 0, Math.min(pattern.length, size - off));
    closeSync(fd);
  };
  writePattern(join(root, 'big.bin'), BIG);
  for (let i = 0; i < 8; i++) writePattern(join(root, `par${i}.bin`), BIG / 8);
}

interface Row {
  what: string;
  tmpfs: string;
  fuse: string;
  ratio: string;
  goal: string;
}

const ls = (root: string): Promise<number> => sh(`ls -lR "${root}/tree" > /dev/null`);
const dd = (root: string): Promise<number> => sh(`dd if="${root}/big.bin" of=/dev/null bs=1M status=none`);
const par = (root: string): Promise<number> =>
  sh(Array.from({ length: 8 }, (_, k) => `dd if="${root}/par${k}.bin" of=/dev/null bs=1M status=none &`).join(' ') + ' wait');

/** Runs of tmpfs and FUSE alternate, so a change of machine load hits both sides alike. */
class Samples {
  readonly m = new Map<string, number[]>();
  add(k: string, v: number): void {
    this.m.set(k, [...(this.m.get(k) ?? []), v]);
  }
  med(k: string): number {
    return median(this.m.get(k) ?? [NaN]);
  }
}

async function main(): Promise<void> {
  if (!hasFuse()) {
    console.log('bench:fuse needs root and /dev/fuse; skipped');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'tocfs-bench-fuse-'));
  const tmpfs = join(dir, 'tmpfs');
  const fuse = join(dir, 'fuse');
  mkdirSync(tmpfs);
  mkdirSync(fuse);
  let server: Awaited<ReturnType<typeof startServer>> | undefined;
  try {
    await execFileP('mount', ['-t', 'tmpfs', '-o', `size=${Math.ceil((BIG * 2) / (1 << 20)) + 512}m`, 'bench', tmpfs]);
    const t0 = Date.now();
    writeTree(tmpfs);
    console.log(`tmpfs tree written in ${Date.now() - t0} ms (${ENTRIES} entries, ${BIG >> 20} MiB file, 8 × ${BIG >> 23} MiB files)`);
    server = await startServer({ mountPoint: fuse, tree: 'bench', entries: ENTRIES, bigFileBytes: BIG, session: { transport: process.env.BENCH_TRANSPORT === 'pool' ? 'pool' : 'epoll' } });
    const neg = server.ready.negotiated as { minor: number };
    console.log(`FUSE mounted: protocol 7.${neg.minor}, transport ${String((neg as { transport?: string }).transport)}, ${RUNS} runs each, medians; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
    const configure = async (xattrPolicy: string): Promise<void> => {
      const n = server!.messages.length;
      server!.child.send({ cmd: 'config', xattrPolicy });
      await server!.waitFor((m) => m.type === 'configured', 10_000, n);
    };
    const S = new Samples();
    let getxattrs = 0;
    for (let i = 0; i < RUNS; i++) {
      await dropCaches();
      S.add('ls.tmpfs.cold', await ls(tmpfs));
      S.add('ls.tmpfs.warm', await ls(tmpfs));
      await configure('enodata');
      const before = ((await server.stats()).session as { byOp: Record<string, number> }).byOp.GETXATTR ?? 0;
      await dropCaches();
      S.add('ls.fuse.cold', await ls(fuse));
      getxattrs = (((await server.stats()).session as { byOp: Record<string, number> }).byOp.GETXATTR ?? 0) - before;
      S.add('ls.fuse.warm', await ls(fuse));
      await configure('eopnotsupp');
      await dropCaches();
      S.add('ls.fuse2.cold', await ls(fuse));
      S.add('ls.fuse2.warm', await ls(fuse));
    }
    for (let i = 0; i < RUNS; i++) {
      for (const [name, root] of [['tmpfs', tmpfs], ['fuse', fuse]] as const) {
        await dropCaches();
        S.add(`read.${name}.cold`, await dd(root));
        S.add(`read.${name}.warm`, await dd(root)); // the second read: page cache (KEEP_CACHE on FUSE)
        await dropCaches();
        S.add(`par.${name}`, await par(root));
      }
    }
    // More warm samples, alternating: a memory-bandwidth number is the most sensitive to the neighbours' load.
    await dd(fuse); // the loop above ended with drop_caches: load the page cache again first
    for (let i = 0; i < 2 * RUNS; i++) {
      S.add('read.tmpfs.warm', await dd(tmpfs));
      S.add('read.fuse.warm', await dd(fuse));
    }
    const tl = { cold: S.med('ls.tmpfs.cold'), warm: S.med('ls.tmpfs.warm') };
    const fl = { cold: S.med('ls.fuse.cold'), warm: S.med('ls.fuse.warm') };
    const fl2 = { cold: S.med('ls.fuse2.cold'), warm: S.med('ls.fuse2.warm') };
    const t = { readCold: S.med('read.tmpfs.cold'), readWarm: S.med('read.tmpfs.warm'), par: S.med('par.tmpfs') };
    const f = { readCold: S.med('read.fuse.cold'), readWarm: S.med('read.fuse.warm'), par: S.med('par.fuse') };
    const gib = BIG / (1 << 30);
    const lsRow = (what: string, a: number, b: number, goal: string): Row => ({
      what, tmpfs: `${a.toFixed(3)} s`, fuse: `${b.toFixed(3)} s`, ratio: `${(b / a).toFixed(2)}× time`, goal,
    });
    const mbs = (bytes: number, s: number): string => `${(bytes / (1 << 20) / s).toFixed(0)} MiB/s`;
    const rows: Row[] = [
      lsRow(`ls -lR, ${ENTRIES} entries, cold; fs answers ENODATA (2 GETXATTR per entry)`, tl.cold, fl.cold, '≤ 3× time'),
      lsRow(`ls -lR, ${ENTRIES} entries, warm; ENODATA`, tl.warm, fl.warm, ''),
      lsRow(`ls -lR, ${ENTRIES} entries, cold; fs answers EOPNOTSUPP for absent namespaces`, tl.cold, fl2.cold, '≤ 3× time'),
      lsRow(`ls -lR, ${ENTRIES} entries, warm; EOPNOTSUPP`, tl.warm, fl2.warm, ''),
      { what: `sequential read ${gib} GiB, cold`, tmpfs: mbs(BIG, t.readCold), fuse: mbs(BIG, f.readCold), ratio: `${(t.readCold / f.readCold).toFixed(2)}× throughput`, goal: '' },
      { what: `sequential re-read ${gib} GiB, warm`, tmpfs: mbs(BIG, t.readWarm), fuse: mbs(BIG, f.readWarm), ratio: `${(t.readWarm / f.readWarm).toFixed(2)}× throughput`, goal: '≥ 0.9×' },
      { what: `8 parallel readers × ${BIG >> 23} MiB, cold`, tmpfs: mbs(BIG, t.par), fuse: mbs(BIG, f.par), ratio: `${(t.par / f.par).toFixed(2)}× throughput`, goal: '' },
    ];
    console.log('\n| operation | tmpfs | tocfs FUSE | FUSE vs tmpfs | goal |\n| --- | --- | --- | --- | --- |');
    for (const r of rows) console.log(`| ${r.what} | ${r.tmpfs} | ${r.fuse} | ${r.ratio} | ${r.goal} |`);
    console.log(`\nGETXATTR requests in one cold ENODATA listing: ${getxattrs}; load average now ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
    const st = await server.stats();
    const memfs = st.memfs as { maxReadSize: number; reads: number; readdirCalls: number };
    const byOp = (st.session as { byOp: Record<string, number> }).byOp;
    console.log(`\nFUSE requests: ${Object.entries(byOp).map(([k, v]) => `${k} ${v}`).join(', ')}; largest READ ${memfs.maxReadSize} bytes`);
  } finally {
    await server?.close();
    await cleanupDir(dir);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
