// An HTTP proxy run inside the test process in front of a registry (or any loopback server). Every request is
// recorded; a rule decides per request whether to forward it untouched or inject a fault: an error status,
// a connection reset, a stall (before headers or mid-body), a truncated body, a redirect, or a changed
// Range header. The Host header is kept, so the registry's absolute Locations point back at the proxy.
import { createServer, request as httpRequest, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';

export type Fault =
  | { kind: 'status'; status: number; retryAfter?: string }
  /** Close the connection without answering. */
  | { kind: 'reset' }
  /** Never answer. */
  | { kind: 'stall' }
  /** Forward headers and `afterBytes` of the body, then go silent (connection stays open). */
  | { kind: 'stall-body'; afterBytes: number }
  /** Forward headers and `afterBytes` of the body, then close the connection. */
  | { kind: 'truncate'; afterBytes: number }
  /** Answer with a redirect to `location` (absolute, or a base the request path is appended to). */
  | { kind: 'redirect'; location: string; appendPath?: boolean; status?: number }
  /** Forward, but replace these response headers. */
  | { kind: 'set-headers'; headers: Record<string, string> }
  /** Drop the Range header (the upstream answers 200 with the whole body). */
  | { kind: 'ignore-range' }
  /** Answer 416 (or `status`) to a Range header with several ranges; single ranges pass. */
  | { kind: 'refuse-multirange'; status?: number }
  /** Forward after `ms` (a slow registry: requests stay in flight). */
  | { kind: 'delay'; ms: number };

export interface RecordedRequest {
  method: string;
  path: string;
  range: string | undefined;
  authorization: boolean;
  fault: Fault['kind'] | undefined;
}

export type FaultRule = (req: IncomingMessage, recorded: readonly RecordedRequest[]) => Fault | undefined;

export interface FaultProxy {
  host: string;
  url: string;
  readonly requests: RecordedRequest[];
  /** Replace the rule (undefined: forward everything). */
  setRule(rule: FaultRule | undefined): void;
  /** Requests so far whose method and path match. */
  count(method: string, path: RegExp): number;
  clear(): void;
  stop(): Promise<void>;
}

/** Rule helper: apply `fault` to the first `times` requests matching method and path (then forward). */
export function faultFirst(times: number, method: string, path: RegExp, fault: Fault): FaultRule {
  let applied = 0;
  return (req) => {
    if (req.method !== method || !path.test(req.url ?? '')) return undefined;
    if (applied >= times) return undefined;
    applied++;
    return fault;
  };
}

export const BLOB_PATH = /^\/v2\/.+\/blobs\/sha256:[0-9a-f]{64}$/;

export interface FaultProxyOptions {
  /** Serve HTTPS with this key and certificate (PEM) instead of plain HTTP. */
  tls?: { key: string | Buffer; cert: string | Buffer };
}

export async function startFaultProxy(upstream: string, opts: FaultProxyOptions = {}): Promise<FaultProxy> {
  const up = new URL(upstream);
  const requests: RecordedRequest[] = [];
  let rule: FaultRule | undefined;
  const sockets = new Set<Socket>();

  const forward = (req: IncomingMessage, res: ServerResponse, fault: Fault | undefined): void => {
    const headers = { ...req.headers };
    if (fault?.kind === 'ignore-range') delete headers.range;
    const upReq = httpRequest({ host: up.hostname, port: up.port, method: req.method, path: req.url, headers }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, fault?.kind === 'set-headers' ? { ...upRes.headers, ...fault.headers } : upRes.headers);
      if (fault?.kind !== 'truncate' && fault?.kind !== 'stall-body') {
        upRes.pipe(res);
        return;
      }
      let sent = 0;
      upRes.on('data', (chunk: Buffer) => {
        if (sent >= fault.afterBytes) return;
        const take = chunk.subarray(0, fault.afterBytes - sent);
        sent += take.length;
        res.write(take);
        if (sent >= fault.afterBytes) {
          upRes.destroy();
          if (fault.kind === 'truncate') res.socket?.destroy();
        }
      });
      upRes.on('end', () => {
        if (sent < fault.afterBytes) res.end();
      });
    });
    upReq.on('error', () => res.socket?.destroy());
    req.pipe(upReq);
  };

  const handler: RequestListener = (req, res) => {
    const fault = rule?.(req, requests);
    requests.push({
      method: req.method ?? '', path: req.url ?? '', range: req.headers.range, authorization: req.headers.authorization !== undefined,
      fault: fault?.kind,
    });
    switch (fault?.kind) {
      case 'status':
        req.resume();
        res.writeHead(fault.status, fault.retryAfter ? { 'retry-after': fault.retryAfter, 'content-length': '0' } : { 'content-length': '0' });
        res.end();
        return;
      case 'reset':
        req.socket.destroy();
        return;
      case 'stall':
        req.resume();
        return;
      case 'redirect': {
        req.resume();
        const location = fault.appendPath ? fault.location.replace(/\/$/, '') + (req.url ?? '') : fault.location;
        res.writeHead(fault.status ?? 307, { location, 'content-length': '0' });
        res.end();
        return;
      }
      case 'refuse-multirange':
        if (req.headers.range?.includes(',')) {
          req.resume();
          res.writeHead(fault.status ?? 416, { 'content-length': '0' });
          res.end();
          return;
        }
        forward(req, res, undefined);
        return;
      case 'delay':
        setTimeout(() => forward(req, res, undefined), fault.ms);
        return;
      default:
        forward(req, res, fault);
    }
  };
  const server: Server = opts.tls ? createTlsServer({ key: opts.tls.key, cert: opts.tls.cert }, handler) : createServer(handler);
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    host: `127.0.0.1:${port}`,
    url: `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    requests,
    setRule: (r) => { rule = r; },
    count: (method, path) => requests.filter((r) => r.method === method && path.test(r.path)).length,
    clear: () => { requests.length = 0; },
    stop: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}
