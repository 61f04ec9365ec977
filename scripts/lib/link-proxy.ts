// The shaped link of the cold-start benchmarks (bench:coldstart, bench:realworld): a TCP proxy in front of a
// loopback registry that models a link, with one FIFO serialisation queue per direction at a bandwidth cap shared by
// every connection, then a one-way delay per direction (an HTTP round trip costs 2 × that, plus one round trip for
// each new TCP connection). It counts bytes per phase and follows each HTTP exchange (method, path, Range, size,
// latency), so a report can say where a phase's wire time went.
import { request as httpRequest, Agent } from 'node:http';
import { createConnection, createServer, type AddressInfo, type Server, type Socket } from 'node:net';

const MiB = 1 << 20;
const fmtMiB = (b: number): string => (b / MiB).toFixed(1);

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
export interface Exchange {
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

export interface PhaseCounters {
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

export interface LinkProxy {
  host: string;
  exchanges: Exchange[];
  /** Start counting into a new phase; returns its counters. */
  phase(name: string): PhaseCounters;
  stop(): Promise<void>;
}

/** Start the shaped-link proxy in front of `upstreamPort` on 127.0.0.1. */
export async function startLinkProxy(upstreamPort: number, latencyMs: number, mbit: number): Promise<LinkProxy> {
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
// Reading the exchanges

export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
}

/** Bytes a Range header asks for ("bytes=a-b,c-d"). */
export function rangeBytes(range: string): number {
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
export function describePhase(exchanges: Exchange[], phaseS: number): string[] {
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

/** Calibration: the proxy really adds the latency and the cap it was asked for (a 4 MiB range of `ref`). */
export async function calibrate(proxy: LinkProxy, ref: { repo: string; digest: string; size: number }): Promise<string> {
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
