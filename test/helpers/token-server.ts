// A small bearer-token server for docker-registry's `auth.token` mode, run inside the test process.
// It signs RS256 JWTs whose header carries the signing certificate in `x5c`; distribution 2.8.2 verifies that
// chain against `rootcertbundle` (the same self-signed certificate), then checks iss, aud (= service), exp/nbf
// and the `access` claim.
import { execFile } from 'node:child_process';
import { createPrivateKey, randomUUID, sign, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { requireTool } from './tools.js';

const run = promisify(execFile);

export interface TokenServerOptions {
  /** Directory for the key and certificate (the caller owns and removes it). */
  dir: string;
  service: string;
  issuer: string;
  /** user → password; a request with valid Basic credentials gets every action it asks for. */
  users: Readonly<Record<string, string>>;
  /** Anonymous requests get these actions (default none: the registry then answers 401 again). */
  anonymousActions?: readonly string[];
  /** Which JSON field carries the token (default 'token'). */
  tokenField?: 'token' | 'access_token' | 'both';
  /** Lifetime announced in `expires_in` and written into `exp` (seconds, default 300). */
  expiresIn?: number;
}

export interface TokenRequestRecord {
  method: string;
  user: string | undefined;
  scopes: string[];
  service: string | null;
  grantType: string | undefined;
}

export interface TokenServer {
  realm: string;
  service: string;
  issuer: string;
  /** PEM path of the certificate for the registry's `rootcertbundle`. */
  certPath: string;
  /** Every token request received, in order. */
  readonly requests: TokenRequestRecord[];
  /** Change the lifetime of tokens issued from now on. */
  setExpiresIn(seconds: number): void;
  stop(): Promise<void>;
}

interface AccessEntry {
  type: string;
  name: string;
  actions: string[];
}

function base64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

/** Make an RSA key and a self-signed certificate for it with the openssl CLI. */
async function makeSigningCert(dir: string): Promise<{ key: KeyObject; certPath: string; certDer: string }> {
  const keyPath = join(dir, 'token-key.pem');
  const certPath = join(dir, 'token-cert.pem');
  await run(requireTool('openssl'), [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyPath, '-out', certPath,
    '-days', '2', '-subj', '/CN=tocfs-test-token-issuer',
  ]);
  const pem = await readFile(certPath, 'utf8');
  const certDer = pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
  return { key: createPrivateKey(await readFile(keyPath)), certPath, certDer };
}

function parseScope(scope: string): AccessEntry | undefined {
  // repository:name:actions — the name itself may contain ':' only for a registry with port, which we never
  // use in repository names, so split on the first and last colon.
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first < 0 || last <= first) return undefined;
  return { type: scope.slice(0, first), name: scope.slice(first + 1, last), actions: scope.slice(last + 1).split(',') };
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => resolve(Buffer.concat(parts).toString('utf8')));
    req.on('error', reject);
  });
}

export async function startTokenServer(opts: TokenServerOptions): Promise<TokenServer> {
  const { key, certPath, certDer } = await makeSigningCert(opts.dir);
  const requests: TokenRequestRecord[] = [];
  let expiresIn = opts.expiresIn ?? 300;
  const field = opts.tokenField ?? 'token';

  const issue = (subject: string, access: AccessEntry[]): string => {
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: 'JWT', alg: 'RS256', x5c: [certDer] };
    const claims = {
      iss: opts.issuer, sub: subject, aud: opts.service, exp: now + expiresIn, nbf: now - 5, iat: now,
      jti: randomUUID(), access,
    };
    const signingInput = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
    const signature = sign('sha256', Buffer.from(signingInput), key);
    return `${signingInput}.${base64url(signature)}`;
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://token.invalid');
    let scopes = url.searchParams.getAll('scope');
    let service = url.searchParams.get('service');
    let grantType: string | undefined;
    let user: string | undefined;
    let authenticated = false;
    if (req.method === 'POST') {
      // OAuth2 refresh-token grant (used with identity tokens): the refresh token is "user:password" here.
      const form = new URLSearchParams(await readBody(req));
      grantType = form.get('grant_type') ?? undefined;
      scopes = form.getAll('scope').flatMap((s) => s.split(' ')).filter((s) => s !== '');
      service = form.get('service');
      const refresh = form.get('refresh_token') ?? '';
      const sep = refresh.indexOf(':');
      user = sep > 0 ? refresh.slice(0, sep) : undefined;
      authenticated = user !== undefined && opts.users[user] === refresh.slice(sep + 1);
    } else {
      const auth = req.headers.authorization;
      if (auth?.startsWith('Basic ')) {
        const decoded = Buffer.from(auth.slice(6), 'base64').toString('utf8');
        const sep = decoded.indexOf(':');
        user = decoded.slice(0, sep);
        authenticated = opts.users[user] === decoded.slice(sep + 1);
      }
    }
    requests.push({ method: req.method ?? '', user, scopes, service, grantType });
    if (user !== undefined && !authenticated) {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'bad credentials' }] }));
      return;
    }
    const access: AccessEntry[] = [];
    for (const s of scopes) {
      const entry = parseScope(s);
      if (!entry) continue;
      const actions = authenticated ? entry.actions : entry.actions.filter((a) => opts.anonymousActions?.includes(a));
      if (actions.length > 0) access.push({ ...entry, actions });
    }
    const token = issue(user ?? 'anonymous', access);
    const body: Record<string, unknown> = { expires_in: expiresIn, issued_at: new Date().toISOString() };
    if (field === 'token' || field === 'both') body.token = token;
    if (field === 'access_token' || field === 'both') body.access_token = token;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      res.writeHead(500);
      res.end(String(err));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    realm: `http://127.0.0.1:${port}/token`,
    service: opts.service,
    issuer: opts.issuer,
    certPath,
    requests,
    setExpiresIn: (s) => { expiresIn = s; },
    stop: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
