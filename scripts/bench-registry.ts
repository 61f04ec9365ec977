// Range-read throughput of the registry client against a local docker-registry, next to a bare undici
// `Pool.request` loop fetching the same byte ranges in the same run. Prints a table with the ratio
// (client / bare; goal ≥ 0.9). Bounded: 6 cases × 2 contenders × SLICES slices of SLICE_MS (about 45 s).
//
//   npm run bench:registry            (or: node dist/scripts/bench-registry.js [--quick])
import { randomBytes } from 'node:crypto';
import { Pool } from 'undici';
import { sha256Digest } from '../src/util/index.js';
import { parseRegistriesConf, RegistriesConf, RegistryClient, type BlobSource, type ByteRange } from '../src/registry/index.js';
import { startRegistry } from '../test/helpers/registry-server.js';

const BLOB_SIZE = 64 * 1024 * 1024;
const SLICES = 20;
const CONCURRENCY = 8;
const CONNECTIONS = 16;
const quick = process.argv.includes('--quick');
/** Each contender runs SLICES slices of this length, interleaved with the other's (load drift cancels out). */
const SLICE_MS = quick ? 100 : 200;

interface Case {
  name: string;
  rangeSize: number;
  rangesPerRequest: number;
  requests: number;
}

const CASES: Case[] = [
  { name: '4 KiB', rangeSize: 4096, rangesPerRequest: 1, requests: 2000 },
  { name: '64 KiB', rangeSize: 64 * 1024, rangesPerRequest: 1, requests: 2000 },
  { name: '1 MiB', rangeSize: 1024 * 1024, rangesPerRequest: 1, requests: 500 },
  { name: '8 MiB', rangeSize: 8 * 1024 * 1024, rangesPerRequest: 1, requests: 100 },
  { name: '16 × 4 KiB multi', rangeSize: 4096, rangesPerRequest: 16, requests: 1000 },
  { name: '16 × 64 KiB multi', rangeSize: 64 * 1024, rangesPerRequest: 16, requests: 500 },
];

/** Deterministic pseudo-random, non-overlapping, sorted range sets (the same list for both contenders; a
 * slice takes the next sets from its contender's cursor, wrapping around). */
function rangeSets(c: Case): ByteRange[][] {
  let seed = 12345 + c.rangeSize + c.rangesPerRequest;
  const rnd = (): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed / 2 ** 31; };
  const sets: ByteRange[][] = [];
  const slot = Math.floor(BLOB_SIZE / c.rangesPerRequest);
  for (let i = 0; i < c.requests; i++) {
    const set: ByteRange[] = [];
    for (let k = 0; k < c.rangesPerRequest; k++) {
      // One range per slot with a gap, so ranges never touch and the client cannot merge them.
      const room = slot - c.rangeSize - 4096;
      const start = k * slot + 4096 + Math.floor(rnd() * room / 4096) * 4096;
      set.push({ start, end: start + c.rangeSize });
    }
    sets.push(set);
  }
  return sets;
}

interface Result {
  bytes: number;
  requests: number;
  ms: number;
  /** CPU time of this process (the client side only: the registry is another process). */
  cpuUs: number;
}

/** One time slice: CONCURRENCY workers take range sets from `cursor` on until the slice is over. */
async function runSlice(sets: ByteRange[][], cursor: { next: number }, total: Result, fetchOne: (set: ByteRange[]) => Promise<number>): Promise<void> {
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const worker = async (): Promise<void> => {
    while (performance.now() - t0 < SLICE_MS) {
      const set = sets[cursor.next++ % sets.length]!;
      const n = await fetchOne(set); // (not `total.bytes += await …`: that reads total.bytes before the await)
      total.bytes += n;
      total.requests++;
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  total.ms += performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  total.cpuUs += cpu.user + cpu.system;
}

async function main(): Promise<void> {
  const started = Date.now();
  const reg = await startRegistry();
  const conf = new RegistriesConf(parseRegistriesConf(`[[registry]]\nlocation = "${reg.host}"\ninsecure = true\n`, 'bench'));
  const client = new RegistryClient({ registriesConf: conf, credentialLookup: { authFiles: [] }, connectionsPerOrigin: CONNECTIONS });
  const bare = new Pool(reg.url, { connections: CONNECTIONS, pipelining: 1 });
  try {
    const ref = `${reg.host}/bench/blob`;
    const data = randomBytes(BLOB_SIZE);
    const digest = sha256Digest(data);
    await client.pushBlob(ref, data, { chunkSize: 32 * 1024 * 1024 });
    const source: BlobSource = await client.getBlobSource(ref, { digest, size: BLOB_SIZE });
    const path = `/v2/bench/blob/blobs/${digest}`;

    const viaClient = async (set: ByteRange[]): Promise<number> => {
      const bufs = await source.readRanges(set);
      return bufs.reduce((n, b) => n + b.length, 0);
    };
    const viaBare = async (set: ByteRange[]): Promise<number> => {
      const range = `bytes=${set.map((r) => `${r.start}-${r.end - 1}`).join(',')}`;
      const res = await bare.request({ path, method: 'GET', headers: { range } });
      const parts: Buffer[] = [];
      for await (const chunk of res.body as AsyncIterable<Buffer>) parts.push(chunk);
      const body = Buffer.concat(parts);
      if (res.statusCode !== 206) throw new Error(`bare request got ${res.statusCode}`);
      // Count payload bytes, not multipart framing, so both columns measure the same thing.
      return set.length === 1 ? body.length : set.reduce((n, r) => n + r.end - r.start, 0);
    };

    // Sanity: the client returns the right bytes.
    const check = rangeSets(CASES[4]!)[0]!;
    const got = await source.readRanges(check);
    check.forEach((r, i) => { if (!got[i]!.equals(data.subarray(r.start, r.end))) throw new Error('client returned wrong bytes'); });

    const rows: string[][] = [];
    for (const c of CASES) {
      const sets = rangeSets(c);
      const warm: Result = { bytes: 0, requests: 0, ms: 0, cpuUs: 0 };
      await runSlice(sets, { next: 0 }, warm, viaClient);
      await runSlice(sets, { next: 0 }, warm, viaBare);
      // The machine is small and shared: alternate short slices of the two contenders so that load changes
      // hit both alike, and compare the totals.
      const cl: Result = { bytes: 0, requests: 0, ms: 0, cpuUs: 0 };
      const br: Result = { bytes: 0, requests: 0, ms: 0, cpuUs: 0 };
      const clientCursor = { next: 0 };
      const bareCursor = { next: 0 };
      for (let i = 0; i < SLICES; i++) {
        if (i % 2 === 0) {
          await runSlice(sets, bareCursor, br, viaBare);
          await runSlice(sets, clientCursor, cl, viaClient);
        } else {
          await runSlice(sets, clientCursor, cl, viaClient);
          await runSlice(sets, bareCursor, br, viaBare);
        }
      }
      const rate = (r: Result): number => r.bytes / (r.ms / 1000);
      const mib = (r: Result): string => (rate(r) / 1024 / 1024).toFixed(1);
      const rps = (r: Result): string => (r.requests / (r.ms / 1000)).toFixed(0);
      const cpuPerReq = (r: Result): string => `${(r.cpuUs / Math.max(1, r.requests)).toFixed(0)} µs`;
      rows.push([c.name, `${mib(cl)} MiB/s`, `${rps(cl)}/s`, `${mib(br)} MiB/s`, `${rps(br)}/s`, (rate(cl) / rate(br)).toFixed(2),
        cpuPerReq(cl), cpuPerReq(br)]);
    }
    const header = ['ranges per request', 'client', 'client req', 'bare undici', 'bare req', 'ratio', 'client CPU/req', 'bare CPU/req'];
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
    const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
    console.log(`registry range reads: ${BLOB_SIZE / 1024 / 1024} MiB blob in docker-registry on 127.0.0.1, concurrency ${CONCURRENCY}, ` +
      `${CONNECTIONS} connections, ${SLICES} alternating slices of ${SLICE_MS} ms each per contender; ratio = client / bare (goal ≥ 0.9)`);
    console.log(line(header));
    console.log(line(widths.map((w) => '-'.repeat(w))));
    for (const r of rows) console.log(line(r));
    console.log(`client stats: ${JSON.stringify(client.blobStats)}; total ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } finally {
    await bare.close();
    await client.close();
    await reg.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
