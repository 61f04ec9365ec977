// Starts Debian's docker-registry (CNCF distribution 2.8.2, found on PATH) on a free loopback port for tests and
// benchmarks.
//
//   const reg = await startRegistry({ auth: 'htpasswd' });
//   ... talk to reg.url (http://127.0.0.1:PORT) / reg.host ...
//   await reg.stop();
//
// Each registry gets its own temp directory (storage, config, log, auth files), removed by stop().
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { request } from 'undici';
import { startTokenServer, type TokenServer, type TokenServerOptions } from './token-server.js';
import { requireTool } from './tools.js';

const run = promisify(execFile);

import { CredentialStore, RegistryClient, RegistriesConf, parseRegistriesConf } from '../../src/registry/index.js';

export type RegistryAuthMode = 'none' | 'htpasswd' | 'token';

export interface RegistryServerOptions {
  /** Default 'none'. */
  auth?: RegistryAuthMode;
  /** Accounts for 'htpasswd' and 'token' (default { user: 'pass' }). */
  users?: Readonly<Record<string, string>>;
  /** Extra token-server settings for auth 'token'. */
  token?: Pick<TokenServerOptions, 'anonymousActions' | 'tokenField' | 'expiresIn'>;
  /** Milliseconds to wait for the registry to answer /v2/ (default 15000). */
  startTimeoutMs?: number;
  /** Keep the blobs in this directory, which stop() leaves in place (benchmarks reuse pushed images across runs). */
  storageDir?: string;
}

export interface RegistryServer {
  /** "127.0.0.1:PORT", as used in image references. */
  host: string;
  /** "http://127.0.0.1:PORT" */
  url: string;
  auth: RegistryAuthMode;
  users: Readonly<Record<string, string>>;
  /** The running token server (auth 'token' only). */
  tokenServer?: TokenServer;
  /** Storage root of the registry (blobs live under docker/registry/v2/blobs). */
  storageDir: string;
  /** Registry stderr/stdout so far (for diagnosing a failing test). */
  log(): Promise<string>;
  stop(): Promise<void>;
}

/** A loopback TCP port that was free a moment ago. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function configYaml(rootDir: string, port: number, authBlock: string): string {
  return [
    'version: 0.1',
    'log:',
    '  level: warn',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${rootDir}`,
    '  delete:',
    '    enabled: true',
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    'http:',
    `  addr: 127.0.0.1:${port}`,
    '  secret: tocfs-test-secret',
    authBlock,
  ].join('\n') + '\n';
}

async function waitReady(url: string, child: ChildProcess, timeoutMs: number): Promise<void> {
  // A child that could not be started reports it as an 'error' event; unheard, that event would crash mocha.
  let spawnError: Error | undefined;
  child.once('error', (err) => { spawnError = err; });
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (spawnError) throw new Error(`docker-registry could not be started: ${spawnError.message}`);
    if (child.exitCode !== null || child.signalCode !== null) throw new Error('docker-registry exited during start');
    try {
      const res = await request(`${url}/v2/`, { headersTimeout: 1000, bodyTimeout: 1000 });
      await res.body.dump();
      if (res.statusCode === 200 || res.statusCode === 401) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`docker-registry did not answer ${url}/v2/ within ${timeoutMs} ms`);
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  process.kill(child.pid, 'SIGTERM');
  const timer = setTimeout(() => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
  }, 3000);
  await exited;
  clearTimeout(timer);
}

async function startOnce(opts: RegistryServerOptions, dir: string, binary: string): Promise<RegistryServer> {
  const auth = opts.auth ?? 'none';
  const users = opts.users ?? { user: 'pass' };
  const port = await freePort();
  const storageDir = opts.storageDir ?? join(dir, 'storage');
  let tokenServer: TokenServer | undefined;
  let authBlock = '';
  if (auth === 'htpasswd') {
    const htpasswd = requireTool('htpasswd');
    const lines: string[] = [];
    for (const [u, p] of Object.entries(users)) {
      const { stdout } = await run(htpasswd, ['-Bbn', u, p]);
      lines.push(stdout.trim());
    }
    const htpasswdPath = join(dir, 'htpasswd');
    await writeFile(htpasswdPath, lines.join('\n') + '\n');
    authBlock = `auth:\n  htpasswd:\n    realm: tocfs-test\n    path: ${htpasswdPath}`;
  } else if (auth === 'token') {
    tokenServer = await startTokenServer({
      dir, service: 'tocfs-test-registry', issuer: 'tocfs-test-issuer', users, ...opts.token,
    });
    authBlock = [
      'auth:', '  token:', `    realm: ${tokenServer.realm}`, `    service: ${tokenServer.service}`,
      `    issuer: ${tokenServer.issuer}`, `    rootcertbundle: ${tokenServer.certPath}`,
    ].join('\n');
  }
  const configPath = join(dir, 'config.yml');
  await writeFile(configPath, configYaml(storageDir, port, authBlock));
  const logPath = join(dir, 'registry.log');
  const logFd = openSync(logPath, 'a');
  const child = spawn(binary, ['serve', configPath], { stdio: ['ignore', logFd, logFd] });
  closeSync(logFd);
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitReady(url, child, opts.startTimeoutMs ?? 15000);
  } catch (err) {
    await stopChild(child);
    await tokenServer?.stop();
    const log = await readFile(logPath, 'utf8').catch(() => '');
    throw new Error(`${(err as Error).message}\n${log.slice(-2000)}`);
  }
  return {
    host: `127.0.0.1:${port}`,
    url,
    auth,
    users,
    tokenServer,
    storageDir,
    log: () => readFile(logPath, 'utf8'),
    stop: async () => {
      await stopChild(child);
      await tokenServer?.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Start a registry; retries a couple of times in case another process grabbed the free port first. */
export async function startRegistry(opts: RegistryServerOptions = {}): Promise<RegistryServer> {
  // Checked once, up front: a missing registry fails the caller's hook with what to install, and is not retried.
  const binary = requireTool('docker-registry');
  if (opts.auth === 'htpasswd') requireTool('htpasswd');
  if (opts.auth === 'token') requireTool('openssl');
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const dir = await mkdtemp(join(tmpdir(), 'tocfs-registry-'));
    try {
      return await startOnce(opts, dir, binary);
    } catch (err) {
      lastError = err;
      await rm(dir, { recursive: true, force: true });
    }
  }
  throw lastError;
}

/** A registry client that talks plain HTTP to the given loopback registries (as registries.conf `insecure`). */
export function loopbackClient(hosts: string | readonly string[], credentialStore = new CredentialStore()): RegistryClient {
  const text = (typeof hosts === 'string' ? [hosts] : hosts).map((h) => `[[registry]]\nlocation = "${h}"\ninsecure = true\n`).join('\n');
  return new RegistryClient({ registriesConf: new RegistriesConf(parseRegistriesConf(text, 'test registries')), credentialStore });
}
