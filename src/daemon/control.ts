import { chmod, rm } from 'node:fs/promises';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { CredentialStore } from '../registry/index.js';
import type { LayerReads, LayerStatus, ResolveFailure } from '../store/index.js';
import { TocfsError } from '../util/index.js';

/** What `tocfs status` shows. */
export interface DaemonStatus {
  pid: number;
  mountpoint: string;
  startedAt: string;
  layers: LayerStatus[];
  cache: {
    memory: { bytes: number; maxBytes: number; hits: number; misses: number };
    disk?: { dir: string; bytes: number; maxBytes: number; chunks: number; hits: number; misses: number; evictions: number; corrupt: number };
  };
  registryErrors: ResolveFailure[];
  /** `resent`: requests a dead server had read, answered by this one. */
  fuse: { requests: number; errors: number; inFlight: number; resent?: number };
  /**
   * FUSE passthrough: whether it is on (else why not), opens it served, backing files registered now, and the
   * complete files assembled for it (on disk, part of the disk cache's bytes).
   */
  passthrough?: {
    on: boolean;
    why?: string;
    opens: number;
    active: number;
    files: number;
    bytes: number;
    assembled: number;
    reused: number;
    failed: number;
    running: number;
  };
  /** Worker threads doing TOCs, big chunks and proofs off the FUSE thread (`crashes`: tasks lost to a dead worker). */
  workers?: { running: number; tasks: number; crashes: number };
}

export interface ControlDeps {
  status(): DaemonStatus;
  /** First-read order per layer (GET /reads, for `tocfs reads`). */
  reads?(): LayerReads[];
  credentials: CredentialStore;
  /** Called after credentials arrived (lookups that failed for lack of them may now succeed). */
  onCredentials?: () => void;
  logger: Logger;
}

const MAX_BODY = 1 << 20;

/**
 * The control socket: a small HTTP API on a Unix socket only root can open (mode 0600). GET /status for
 * `tocfs status`; GET /reads for `tocfs reads`; POST /credentials for `tocfs auth-helper` (podman's JSON, forwarded as is).
 */
export async function startControl(path: string, deps: ControlDeps): Promise<Server> {
  await rm(path, { force: true }); // a socket left by a dead daemon
  const server = createServer((req, res) => {
    handle(req, res, deps).catch((err: unknown) => reply(res, 500, { error: (err as Error).message }));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  await chmod(path, 0o600);
  server.unref();
  return server;
}

function reply(res: ServerResponse, code: number, body: unknown): void {
  res.writeHead(code, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

async function handle(req: IncomingMessage, res: ServerResponse, deps: ControlDeps): Promise<void> {
  if (req.method === 'GET' && req.url === '/status') return reply(res, 200, deps.status());
  if (req.method === 'GET' && req.url === '/reads' && deps.reads) return reply(res, 200, deps.reads());
  if (req.method === 'POST' && req.url === '/credentials') {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req) {
      size += (c as Buffer).length;
      if (size > MAX_BODY) return reply(res, 413, { error: 'credentials document too large' });
      chunks.push(c as Buffer);
    }
    const accepted = applyCredentials(Buffer.concat(chunks).toString('utf8'), deps.credentials);
    // Keys name images, never secrets: safe to log.
    deps.logger.info({ keys: accepted }, 'credentials received from the auth helper');
    if (accepted.length) deps.onCredentials?.();
    return reply(res, 200, { accepted });
  }
  return reply(res, 404, { error: `no ${req.method} ${req.url}` });
}

/**
 * podman's auth-helper document: `{"<repo>[:tag|@digest]": {"username", "password", "identityToken"}}`.
 * Returns the keys taken.
 */
export function applyCredentials(json: string, store: CredentialStore): string[] {
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch {
    throw new TocfsError('BAD_CREDENTIALS', 'the auth helper input is not JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new TocfsError('BAD_CREDENTIALS', 'the auth helper input is not a JSON object');
  const taken: string[] = [];
  for (const [key, v] of Object.entries(doc)) {
    if (typeof v !== 'object' || v === null) continue;
    const { username, password, identityToken } = v as Record<string, unknown>;
    if (typeof identityToken === 'string' && identityToken !== '') {
      store.set(key, { identityToken, ...(typeof username === 'string' ? { username } : {}) });
    } else if (typeof username === 'string' && typeof password === 'string' && (username !== '' || password !== '')) {
      store.set(key, { username, password });
    } else {
      continue; // anonymous: nothing to remember
    }
    taken.push(key);
  }
  return taken;
}

/** Client side: one request to the control socket. */
export function callControl(path: string, method: 'GET' | 'POST', url: string, body?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: path, method, path: url, headers: body ? { 'content-type': 'application/json' } : {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', (err: NodeJS.ErrnoException) => reject(new TocfsError('NO_DAEMON', `cannot reach the tocfs daemon at ${path} (${err.code ?? err.message}): is "tocfs mount" running, and are you root?`)));
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
    req.end(body);
  });
}
