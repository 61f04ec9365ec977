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
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { createConnection, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { request as httpRequest, Agent } from 'node:http';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parseRegistriesConf, RegistriesConf, RegistryClient } from '../src/registry/index.js';
import { CLI } from '../test/helpers/cli.js';
import { startDaemon, type DaemonHandle } from '../test/helpers/daemon.js';
import { buildImage, pushImage, type BuiltImage } from '../test/helpers/image-builder.js';
import { Podman } from '../test/helpers/podman.js';
import { startRegistry, type RegistryServer } from '../test/helpers/registry-server.js';

const execFileP = promisify(execFile);

// ---------------------------------------------------------------------------------------------------------
// Parameters

function envNumber(name: string, fallback: number, check: (v: number) => boolean, what: string): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const v = Number(raw);
  if (!Number.isFinite(v) || !check(v)) {
    console.error(`bench:coldstart: ${name}=${JSON.stringify(raw)} is not ${what}`);
    process.exit(2);
  }
  return v;
}

const IMAGE_MIB = envNumber('BENCH_IMAGE_MIB', 256, (v) => v >= 16 && v <= 4096, 'a size in MiB between 16 and 4096');
const LATENCY_MS = envNumber('BENCH_LATENCY_MS', 20, (v) => v >= 0 && v <= 1000, 'a one-way latency in ms between 0 and 1000');
const MBIT = envNumber('BENCH_MBIT', 100, (v) => v >= 0, 'a bandwidth in Mbit/s (0 = no cap)');
const READ_FRACTION = envNumber('BENCH_READ_FRACTION', 0.1, (v) => v > 0 && v <= 1, 'a fraction in (0, 1]');
/** Parallel readers in the container (xargs -P); 1 is a plain sequential reader, like most program starts. */
const READERS = envNumber('BENCH_READERS', 1, (v) => Number.isInteger(v) && v >= 1 && v <= 64, 'a reader count between 1 and 64');
const RUNS = envNumber('BENCH_RUNS', 1, (v) => Number.isInteger(v) && v >= 1 && v <= 10, 'a run count between 1 and 10');
const TIMEOUT_S = envNumber('BENCH_TIMEOUT_S', 900, (v) => v >= 60, 'a timeout of at least 60 s');
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
// The shaped link: a TCP proxy with a bandwidth cap shared by all connections and a one-way delay

/** One direction of the link: a FIFO serialisation queue at `bytesPerMs`, shared by every connection. */
class LinkDirection {
  private freeAt = 0;
  constructor(private readonly bytesPerMs: number) {}

  /** Queue `n` bytes that are ready at `now`; returns when their last byte has left the sender (ms). */
  transmit(n: number, now: number): number {
    if (this.bytesPerMs <= 0) return now;
    const start = Math.max(now, this.freeAt);
    this.freeAt = start + n / this.bytesPerMs;
    return this.freeAt;
  }
}

/** One HTTP request/response as seen by the proxy (no pipelining: one exchange at a time per connection). */
interface Exchange {
  phase: string;
  conn: number;
  method: string;
  path: string;
  range: string | undefined;
  /** performance.now() when the request reached the proxy (= left the client) and when the response's last byte reached the client. */
  sentAt: number;
  doneAt: number | undefined;
  status: number | undefined;
  /** Response bytes delivered to the client, headers included. */
  bytes: number;
}

interface PhaseCounters {
  name: string;
  /** Bytes delivered registry → client (what the client "downloaded"). */
  down: number;
  up: number;
  connections: number;
}

/** Pieces small enough that connections sharing the link interleave (1.3 ms each at 100 Mbit/s). */
const PIECE = 16 * 1024;
/** A client that does not read stops the proxy reading from the other side (Node buffers beyond this). */
const MAX_WRITABLE = 1 * MiB;

/**
 * Data of one connection in one direction: serialised on the shared link direction, then delivered `latency`
 * later, in order. The source is paused while more than `maxQueued` bytes are queued (a bounded buffer, like a
 * TCP window), so one greedy connection cannot reserve the link for seconds ahead of the others.
 */
class DelayLine {
  private readonly queue: { data: Buffer; at: number }[] = [];
  private queued = 0;
  private timer: NodeJS.Timeout | undefined;
  private ended = false;

  constructor(
    private readonly src: Socket,
    private readonly dst: Socket,
    private readonly link: LinkDirection,
    private readonly latencyMs: number,
    /** Nothing is delivered before this time (ms): models the TCP handshake of a new connection. */
    private readonly notBefore: number,
    private readonly maxQueued: number,
    private readonly onDeliver: (data: Buffer) => void,
  ) {
    src.on('data', (d: Buffer) => this.accept(d));
    src.on('end', () => { this.ended = true; this.pump(); });
    dst.on('drain', () => this.resumeIfRoom());
  }

  private accept(d: Buffer): void {
    const now = performance.now();
    for (let o = 0; o < d.length; o += PIECE) {
      const piece = d.subarray(o, Math.min(d.length, o + PIECE));
      const sent = this.link.transmit(piece.length, now);
      this.queue.push({ data: piece, at: Math.max(sent, this.notBefore) + this.latencyMs });
      this.queued += piece.length;
    }
    if (this.queued > this.maxQueued) this.src.pause();
    this.pump();
  }

  private pump(): void {
    if (this.timer) return;
    const now = performance.now();
    while (this.queue.length > 0 && this.queue[0]!.at <= now + 0.25) {
      const { data } = this.queue.shift()!;
      this.queued -= data.length;
      if (this.dst.destroyed) continue;
      this.onDeliver(data);
      this.dst.write(data);
    }
    if (this.queue.length > 0) {
      this.timer = setTimeout(() => { this.timer = undefined; this.pump(); }, Math.max(1, Math.ceil(this.queue[0]!.at - now)));
    } else if (this.ended && !this.dst.destroyed) {
      this.dst.end();
    }
    this.resumeIfRoom();
  }

  private resumeIfRoom(): void {
    if (this.src.destroyed || this.ended) return;
    if (this.queued <= this.maxQueued && this.dst.writableLength < MAX_WRITABLE) this.src.resume();
    else this.src.pause();
  }
}

/** Splits a client's byte stream into request heads (GET/HEAD carry no body; the benchmark never pushes through the proxy). */
class RequestHeads {
  private buf = '';
  constructor(private readonly onHead: (method: string, path: string, headers: Map<string, string>) => void) {}

  push(d: Buffer): void {
    this.buf += d.toString('latin1');
    for (let i = this.buf.indexOf('\r\n\r\n'); i >= 0; i = this.buf.indexOf('\r\n\r\n')) {
      const lines = this.buf.slice(0, i).split('\r\n');
      this.buf = this.buf.slice(i + 4);
      const m = /^([A-Z]+) (\S+) HTTP\/1\.[01]$/.exec(lines[0] ?? '');
      if (!m) continue;
      this.onHead(m[1]!, m[2]!, headerMap(lines.slice(1)));
    }
    if (this.buf.length > MiB) this.buf = ''; // a request body: not ours to parse
  }
}

function headerMap(lines: string[]): Map<string, string> {
  const h = new Map<string, string>();
  for (const l of lines) {
    const c = l.indexOf(':');
    if (c > 0) h.set(l.slice(0, c).trim().toLowerCase(), l.slice(c + 1).trim());
  }
  return h;
}

/**
 * Follows the responses of one connection as they are delivered to the client, so each exchange gets its
 * byte count and completion time. Bodies are framed by Content-Length; a response without one (chunked) is
 * closed when the client sends its next request (HTTP/1.1 clients here never pipeline).
 */
class ResponseTracker {
  private head = '';
  private bodyLeft = 0;
  private mode: 'head' | 'body' | 'unframed' = 'head';
  private current: Exchange | undefined;
  readonly pending: Exchange[] = [];

  deliver(d: Buffer, now: number): void {
    let o = 0;
    while (o < d.length) {
      if (this.mode === 'head') {
        const before = this.head.length;
        this.head += d.toString('latin1', o);
        const end = this.head.indexOf('\r\n\r\n');
        if (end < 0) return; // counted once the head is complete
        const headLen = end + 4;
        o += headLen - before;
        const lines = this.head.slice(0, end).split('\r\n');
        this.head = '';
        this.startResponse(lines, headLen, now);
      } else if (this.mode === 'body') {
        const n = Math.min(this.bodyLeft, d.length - o);
        this.bodyLeft -= n;
        o += n;
        if (this.current) this.current.bytes += n;
        if (this.bodyLeft === 0) this.finish(now);
      } else {
        if (this.current) {
          this.current.bytes += d.length - o;
          this.current.doneAt = now;
        }
        return;
      }
    }
  }

  private startResponse(lines: string[], headLen: number, now: number): void {
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1] ?? NaN);
    if (status >= 100 && status < 200) return; // an interim response; the real one follows
    this.current = this.pending.shift();
    if (this.current) {
      this.current.status = status;
      this.current.bytes += headLen;
    }
    const len = headerMap(lines.slice(1)).get('content-length');
    if (this.current?.method === 'HEAD' || status === 204 || status === 304 || len === '0') {
      this.finish(now);
    } else if (len !== undefined && /^\d+$/.test(len)) {
      this.mode = 'body';
      this.bodyLeft = Number(len);
    } else {
      this.mode = 'unframed';
      if (this.current) this.current.doneAt = now;
    }
  }

  private finish(now: number): void {
    if (this.current) this.current.doneAt = now;
    this.current = undefined;
    this.mode = 'head';
  }

  /** The client sent a new request: an unframed response before it is over. */
  requestSent(): void {
    if (this.mode === 'unframed') {
      this.current = undefined;
      this.mode = 'head';
    }
  }
}

interface LinkProxy {
  host: string;
  exchanges: Exchange[];
  /** Start counting into a new phase; returns its counters. */
  phase(name: string): PhaseCounters;
  stop(): Promise<void>;
}

/** Start the shaped-link proxy in front of `upstreamPort` on 127.0.0.1. */
async function startLinkProxy(upstreamPort: number, latencyMs: number, mbit: number): Promise<LinkProxy> {
  const bytesPerMs = mbit > 0 ? (mbit * 1e6) / 8 / 1000 : 0;
  const down = new LinkDirection(bytesPerMs);
  const up = new LinkDirection(bytesPerMs);
  // Room for two bandwidth-delay products per connection: one connection alone still fills the link.
  const maxQueued = bytesPerMs > 0 ? Math.max(256 * 1024, Math.ceil(2 * bytesPerMs * (latencyMs + 1))) : 4 * MiB;
  const exchanges: Exchange[] = [];
  let counters: PhaseCounters = { name: 'idle', down: 0, up: 0, connections: 0 };
  const sockets = new Set<Socket>();
  let nextConn = 0;

  const server: Server = createServer({ allowHalfOpen: true }, (client) => {
    const conn = nextConn++;
    counters.connections++;
    const accepted = performance.now();
    const upstream = createConnection({ host: '127.0.0.1', port: upstreamPort, allowHalfOpen: true });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.setNoDelay(true);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => { client.destroy(); upstream.destroy(); });
    }
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    const responses = new ResponseTracker();
    const heads = new RequestHeads((method, path, headers) => {
      responses.requestSent();
      const ex: Exchange = {
        phase: counters.name, conn, method, path, range: headers.get('range'),
        sentAt: performance.now(), doneAt: undefined, status: undefined, bytes: 0,
      };
      exchanges.push(ex);
      responses.pending.push(ex);
    });
    client.on('data', (d: Buffer) => heads.push(d));
    // Client → registry: the handshake's round trip first (SYN, SYN-ACK), then the data's one-way delay.
    new DelayLine(client, upstream, up, latencyMs, accepted + 2 * latencyMs, maxQueued, (d) => { counters.up += d.length; });
    new DelayLine(upstream, client, down, latencyMs, 0, maxQueued, (d) => {
      counters.down += d.length;
      responses.deliver(d, performance.now());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    host: `127.0.0.1:${port}`,
    exchanges,
    phase(name) {
      counters = { name, down: 0, up: 0, connections: 0 };
      return counters;
    },
    stop: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}

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

async function dropCaches(): Promise<void> {
  await execFileP('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches'], { timeout: 120_000 });
}

function alsLayerCount(p: Podman): number {
  const dir = join(p.graphroot, 'overlay');
  if (!existsSync(dir)) return 0;
  return readdirSync(dir).filter((d) => existsSync(join(dir, d, 'additionallayer'))).length;
}

async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; s: number }> {
  const t = performance.now();
  const value = await fn();
  return { value, s: (performance.now() - t) / 1000 };
}

async function runSide(side: string, tag: string, p: Podman, ref: string, proxy: LinkProxy): Promise<SideResult> {
  const loadBefore = load();
  const pullCounters = proxy.phase(`${tag}:pull`);
  const pull = await timed(() => p.podman(['pull', '-q', ref], 240_000));
  const runCounters = proxy.phase(`${tag}:run`);
  let afterCounters = runCounters;
  const run = await runUntilMarker(p, ref, READ_COMMAND, 240_000, () => { afterCounters = proxy.phase(`${tag}:after`); });
  return {
    side, pullS: pull.s, runS: run.doneS, runExitS: run.exitS, pull: pullCounters, run: runCounters, after: afterCounters,
    output: run.output, alsLayers: alsLayerCount(p), load: loadBefore,
  };
}

/**
 * `podman run` the way this machine needs it (the same as test/helpers/podman.ts: a private mount namespace with
 * a pure cgroup2 /sys/fs/cgroup, no cgroups, no network, explicit ulimits), timed to the workload's done marker
 * on stdout, like peers time "run" to a ready line. Podman 4.3.1 here sometimes waits a fixed 20 s after the
 * container has exited ("Exceeded conmon timeout waiting for container … to exit" in its debug log) before it
 * exits itself; that wait is not the image's cold start, so it is reported separately (runExitS), not timed.
 */
function runUntilMarker(p: Podman, ref: string, command: string[], timeoutMs: number, onDone: () => void): Promise<{ output: string; doneS: number; exitS: number }> {
  const quoted = ['podman', 'run', '--rm', '--cgroups=disabled', '--network=none', '--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024', ref, ...command]
    .map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const script = `mount --make-rprivate / && umount -l /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && exec ${quoted}`;
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn('unshare', ['-m', 'sh', '-c', script], { env: p.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let doneS: number | undefined;
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (doneS === undefined && stdout.includes(`${DONE_MARKER}\n`)) {
        doneS = (performance.now() - t0) / 1000;
        onDone();
      }
    });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('error', (err) => { clearTimeout(timer); reject(err); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const exitS = (performance.now() - t0) / 1000;
      if (doneS === undefined) {
        reject(new Error(`podman run of ${ref} ended (code ${code}, signal ${signal}) without finishing the workload: ${stderr.slice(-2000)}`));
        return;
      }
      resolve({ output: stdout.slice(0, stdout.indexOf(DONE_MARKER)), doneS, exitS });
    });
  });
}

// ---------------------------------------------------------------------------------------------------------
// Reporting

const fmtS = (s: number): string => s.toFixed(2);
const fmtMiB = (b: number): string => (b / MiB).toFixed(1);

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
}

/** Bytes a Range header asks for ("bytes=a-b,c-d"). */
function rangeBytes(range: string): number {
  let n = 0;
  for (const part of range.replace(/^bytes=/, '').split(',')) {
    const m = /^\s*(\d+)-(\d+)\s*$/.exec(part);
    if (m) n += Number(m[2]) - Number(m[1]) + 1;
  }
  return n;
}

function kindOf(e: Exchange): string {
  if (e.path === '/v2/' || e.path === '/v2') return 'ping /v2/';
  if (e.path.includes('/manifests/')) return `${e.method} manifest`;
  if (e.path.includes('/blobs/')) {
    if (e.method === 'HEAD') return 'HEAD blob';
    if (!e.range) return 'GET blob (whole)';
    return e.range.includes(',') ? 'GET blob (multi-range)' : 'GET blob (range)';
  }
  return `${e.method} other`;
}

/** Where a phase's time went on the wire: request kinds, sizes, latencies, and how many were in flight. */
function describePhase(exchanges: Exchange[], phaseS: number): string[] {
  const out: string[] = [];
  if (exchanges.length === 0) return ['    (no requests)'];
  const kinds = new Map<string, Exchange[]>();
  for (const e of exchanges) kinds.set(kindOf(e), [...(kinds.get(kindOf(e)) ?? []), e]);
  for (const [k, es] of kinds) {
    const bytes = es.reduce((s, e) => s + e.bytes, 0);
    const lat = es.filter((e) => e.doneAt !== undefined).map((e) => e.doneAt! - e.sentAt);
    out.push(`    ${k}: ${es.length} requests, ${fmtMiB(bytes)} MiB; latency p50 ${percentile(lat, 0.5).toFixed(0)} ms, p90 ${percentile(lat, 0.9).toFixed(0)} ms, max ${percentile(lat, 1).toFixed(0)} ms`);
    const ranged = es.filter((e) => e.range);
    if (ranged.length > 0) {
      const sizes = ranged.map((e) => rangeBytes(e.range!));
      const parts = ranged.map((e) => e.range!.split(',').length);
      out.push(`      asked: ${fmtMiB(sizes.reduce((s, x) => s + x, 0))} MiB in ${parts.reduce((s, x) => s + x, 0)} ranges; per request p50 ${(percentile(sizes, 0.5) / 1024).toFixed(0)} KiB, p90 ${(percentile(sizes, 0.9) / 1024).toFixed(0)} KiB, max ${(percentile(sizes, 1) / 1024).toFixed(0)} KiB`);
    }
  }
  // Time with at least one request outstanding, and the largest number outstanding at once.
  const events: [number, number][] = [];
  for (const e of exchanges) if (e.doneAt !== undefined) events.push([e.sentAt, 1], [e.doneAt, -1]);
  events.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let inflight = 0;
  let maxInflight = 0;
  let busy = 0;
  let since = 0;
  const hist = new Map<number, number>();
  for (const [t, d] of events) {
    if (inflight > 0) {
      busy += t - since;
      hist.set(inflight, (hist.get(inflight) ?? 0) + (t - since));
    }
    since = t;
    inflight += d;
    maxInflight = Math.max(maxInflight, inflight);
  }
  const conc = [...hist.entries()].sort((a, b) => a[0] - b[0]).map(([n, ms]) => `${n}: ${(ms / 1000).toFixed(1)} s`).join(', ');
  out.push(`    wire busy (≥ 1 request outstanding) ${(busy / 1000).toFixed(1)} s of ${phaseS.toFixed(1)} s; max ${maxInflight} in flight; time by requests in flight: ${conc}`);
  return out;
}

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
// Calibration: the proxy really adds the latency and the cap it was asked for

async function calibrate(proxy: LinkProxy, ref: { repo: string; digest: string; size: number }): Promise<string> {
  proxy.phase('calibration');
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const get = (path: string, range?: string): Promise<{ ms: number; bytes: number }> => new Promise((resolve, reject) => {
    const t = performance.now();
    const [host, port] = proxy.host.split(':');
    const req = httpRequest({ host, port: Number(port), path, agent, headers: range ? { range } : {} }, (res) => {
      let bytes = 0;
      res.on('data', (d: Buffer) => { bytes += d.length; });
      res.on('end', () => resolve({ ms: performance.now() - t, bytes }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(60_000, () => req.destroy(new Error('calibration request timed out')));
    req.end();
  });
  const first = await get('/v2/');
  const again = await get('/v2/');
  const n = Math.min(ref.size, 4 * MiB);
  const big = await get(`/v2/${ref.repo}/blobs/${ref.digest}`, `bytes=0-${n - 1}`);
  agent.destroy();
  proxy.phase('idle');
  const mbit = (big.bytes * 8) / 1e6 / ((big.ms - again.ms) / 1000);
  return `measured through the proxy: first request ${first.ms.toFixed(0)} ms (new connection), next ${again.ms.toFixed(0)} ms, ${fmtMiB(big.bytes)} MiB range at ${mbit.toFixed(0)} Mbit/s`;
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
  const work = mkdtempSync(join(tmpdir(), 'tocfs-bench-coldstart-'));
  const cleanups: (() => Promise<void>)[] = [];
  const cleanup = async (): Promise<void> => {
    for (const c of cleanups.reverse()) await c().catch((err: unknown) => console.error(`cleanup: ${(err as Error).message}`));
    cleanups.length = 0;
    rmSync(work, { recursive: true, force: true });
  };
  const watchdog = setTimeout(() => {
    console.error(`bench:coldstart: no result after ${TIMEOUT_S} s; aborting`);
    void cleanup().finally(() => process.exit(1));
  }, TIMEOUT_S * 1000);
  watchdog.unref();
  process.once('SIGINT', () => { void cleanup().finally(() => process.exit(130)); });
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
    clearTimeout(watchdog);
    await cleanup();
  }
}

main().then((code) => { process.exitCode = code; }, (err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
