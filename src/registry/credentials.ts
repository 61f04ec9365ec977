// Where registry credentials come from, in priority order:
//   1. the in-memory CredentialStore (fed by podman's ALS auth helper through the daemon),
//   2. auth files, as containers/image reads them: $REGISTRY_AUTH_FILE if set (and then only it), otherwise
//      /run/containers/<uid>/auth.json (root) or $XDG_RUNTIME_DIR/containers/auth.json, then
//      $XDG_CONFIG_HOME/containers/auth.json (~/.config/...), then $DOCKER_CONFIG/config.json or
//      ~/.docker/config.json. In each file: credHelpers[host], then `auths` (most specific key first:
//      host/ns/repo ... host, then normalised legacy keys such as https://index.docker.io/v1/), then credsStore.
// Secrets never appear in errors or logs.
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { isErrnoException } from '../util/index.js';
import { RegistryAuthError, RegistryConfigError } from './errors.js';
import { DOCKER_HUB_DOMAIN } from './reference.js';

export type Credentials =
  | { readonly username: string; readonly password: string; readonly identityToken?: undefined }
  /** An OAuth2 refresh token (docker's `identitytoken`), exchanged at the token endpoint. */
  | { readonly identityToken: string; readonly username?: string; readonly password?: undefined };

/** Describes where credentials were found (no secret), for logs and error messages. */
export interface FoundCredentials {
  credentials: Credentials;
  source: string;
}

/** Credentials handed to the daemon at run time (podman's auth helper); they take priority over files. */
export class CredentialStore {
  readonly #byKey = new Map<string, Credentials>();
  #generation = 0;

  /** Bumped on every change, so cached tokens obtained with older credentials are not reused. */
  get generation(): number {
    return this.#generation;
  }

  /** `key` is a registry host (`quay.io`), a repository (`quay.io/ns/repo`), or a reference with a tag or
   * digest, which is dropped (podman's helper sends `<repo>:tag` keys). */
  set(key: string, credentials: Credentials): void {
    this.#byKey.set(normaliseStoreKey(key), credentials);
    this.#generation++;
  }

  delete(key: string): void {
    if (this.#byKey.delete(normaliseStoreKey(key))) this.#generation++;
  }

  clear(): void {
    this.#byKey.clear();
    this.#generation++;
  }

  /** Most specific entry first: host/a/b, host/a, host. */
  lookup(domain: string, repository: string): Credentials | undefined {
    for (const key of candidateKeys(domain, repository)) {
      const c = this.#byKey.get(key);
      if (c) return c;
    }
    return undefined;
  }
}

function normaliseStoreKey(key: string): string {
  let k = key.replace(/^https?:\/\//, '');
  const at = k.indexOf('@');
  if (at >= 0) k = k.slice(0, at);
  const colon = k.lastIndexOf(':');
  if (colon > k.lastIndexOf('/') && k.includes('/')) k = k.slice(0, colon);
  k = k.replace(/\/+$/, '');
  if (k === 'index.docker.io' || k.startsWith('index.docker.io/')) k = DOCKER_HUB_DOMAIN + k.slice('index.docker.io'.length);
  return k;
}

/** host/a/b/c → [host/a/b/c, host/a/b, host/a, host] */
function candidateKeys(domain: string, repository: string): string[] {
  const keys: string[] = [];
  let key = `${domain}/${repository}`;
  for (;;) {
    keys.push(key);
    const slash = key.lastIndexOf('/');
    if (slash < 0) break;
    key = key.slice(0, slash);
  }
  return keys;
}

/** How containers/image normalises a key found in an auth file before comparing it with a host. */
function normaliseFileKey(key: string): string {
  let k = key;
  if (k.startsWith('http://') || k.startsWith('https://')) {
    k = k.replace(/^https?:\/\//, '');
    const slash = k.indexOf('/');
    if (slash >= 0) k = k.slice(0, slash);
  }
  if (k === 'index.docker.io' || k === 'registry-1.docker.io') return DOCKER_HUB_DOMAIN;
  return k;
}

export interface CredentialLookupOptions {
  /** Replaces the default auth-file list (tests). */
  authFiles?: readonly string[];
  /** Environment used for the default list (default process.env). */
  env?: NodeJS.ProcessEnv;
  homeDir?: string;
  uid?: number;
  /** Directory prepended to PATH for docker-credential-* helpers (tests). */
  helperPath?: string;
  /** Milliseconds a credential helper may run (default 10000). */
  helperTimeoutMs?: number;
}

/** The auth files containers/image would read, in order. */
export function defaultAuthFiles(env: NodeJS.ProcessEnv = process.env, homeDir = homedir(),
  uid = process.getuid?.() ?? 0): string[] {
  if (env.REGISTRY_AUTH_FILE) return [env.REGISTRY_AUTH_FILE];
  const files: string[] = [];
  if (uid === 0) files.push(`/run/containers/${uid}/auth.json`);
  else if (env.XDG_RUNTIME_DIR) files.push(join(env.XDG_RUNTIME_DIR, 'containers', 'auth.json'));
  files.push(join(env.XDG_CONFIG_HOME || join(homeDir, '.config'), 'containers', 'auth.json'));
  files.push(env.DOCKER_CONFIG ? join(env.DOCKER_CONFIG, 'config.json') : join(homeDir, '.docker', 'config.json'));
  return files;
}

interface AuthFile {
  auths?: Record<string, { auth?: string; identitytoken?: string } | undefined>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

async function readAuthFile(path: string): Promise<AuthFile | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if (isErrnoException(err) && (err.code === 'ENOENT' || err.code === 'ENOTDIR' || err.code === 'EACCES')) return undefined;
    throw new RegistryConfigError(`cannot read auth file ${path}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not a JSON object');
    return parsed as AuthFile;
  } catch (err) {
    throw new RegistryConfigError(`auth file ${path} is not valid JSON (${(err as Error).message}); fix or remove it`, { cause: err });
  }
}

function decodeAuthEntry(entry: { auth?: string; identitytoken?: string }, path: string, key: string): Credentials | undefined {
  if (entry.identitytoken) return { identityToken: entry.identitytoken };
  if (!entry.auth) return undefined;
  const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) {
    throw new RegistryConfigError(`auth file ${path}: entry "${key}" has an "auth" value that is not base64 of user:password`);
  }
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** Run `docker-credential-<helper> get` with the server on stdin (the docker credential helper protocol). */
export async function runCredentialHelper(helper: string, server: string, opts: CredentialLookupOptions = {}): Promise<Credentials | undefined> {
  if (!/^[A-Za-z0-9._-]+$/.test(helper)) throw new RegistryConfigError(`credential helper name "${helper}" is not a plain name`);
  const program = `docker-credential-${helper}`;
  const env = { ...(opts.env ?? process.env) };
  if (opts.helperPath) env.PATH = `${opts.helperPath}:${env.PATH ?? ''}`;
  const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(program, ['get'], { env, stdio: ['pipe', 'pipe', 'pipe'], timeout: opts.helperTimeoutMs ?? 10000 });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', (e) => reject(new RegistryAuthError(`cannot run credential helper ${program} for ${server}: ${e.message}; ` +
      'install it or remove it from credHelpers/credsStore', { cause: e })));
    child.on('close', (c) => resolve({ code: c, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') }));
    child.stdin.on('error', () => undefined);
    child.stdin.end(server);
  });
  if (code !== 0) {
    if (/credentials not found/i.test(stdout + stderr)) return undefined;
    // The helper's own message is not a secret; keep it short.
    throw new RegistryAuthError(`credential helper ${program} failed for ${server} (exit ${code}): ${(stderr || stdout).trim().slice(0, 200)}`);
  }
  let parsed: { Username?: unknown; Secret?: unknown };
  try {
    parsed = JSON.parse(stdout) as typeof parsed;
  } catch {
    throw new RegistryAuthError(`credential helper ${program} printed something that is not JSON for ${server}`);
  }
  if (typeof parsed.Secret !== 'string' || typeof parsed.Username !== 'string') {
    throw new RegistryAuthError(`credential helper ${program} answered without Username/Secret for ${server}`);
  }
  // docker's convention: the user name "<token>" marks an identity (refresh) token.
  if (parsed.Username === '<token>') return { identityToken: parsed.Secret };
  return { username: parsed.Username, password: parsed.Secret };
}

async function lookupInFile(path: string, file: AuthFile, domain: string, repository: string,
  opts: CredentialLookupOptions): Promise<FoundCredentials | undefined> {
  const helper = file.credHelpers?.[domain];
  if (helper) {
    const c = await runCredentialHelper(helper, domain, opts);
    return c ? { credentials: c, source: `credential helper docker-credential-${helper} (from ${path})` } : undefined;
  }
  const auths = file.auths ?? {};
  for (const key of candidateKeys(domain, repository)) {
    const entry = auths[key];
    const c = entry ? decodeAuthEntry(entry, path, key) : undefined;
    if (c) return { credentials: c, source: `${path} (key "${key}")` };
  }
  for (const [key, entry] of Object.entries(auths)) {
    if (!entry || normaliseFileKey(key) !== domain) continue;
    const c = decodeAuthEntry(entry, path, key);
    if (c) return { credentials: c, source: `${path} (key "${key}")` };
  }
  if (file.credsStore) {
    const c = await runCredentialHelper(file.credsStore, domain, opts);
    if (c) return { credentials: c, source: `credential store docker-credential-${file.credsStore} (from ${path})` };
  }
  return undefined;
}

/** Resolves credentials for a registry host and repository from the store and the auth files. */
export class CredentialResolver {
  readonly store: CredentialStore;
  readonly #opts: CredentialLookupOptions;

  constructor(store = new CredentialStore(), opts: CredentialLookupOptions = {}) {
    this.store = store;
    this.#opts = opts;
  }

  /** The auth files searched, in order (for messages). */
  authFiles(): string[] {
    return [...(this.#opts.authFiles ?? defaultAuthFiles(this.#opts.env, this.#opts.homeDir, this.#opts.uid))];
  }

  /** `domain` is the registry host as in references (docker.io, not registry-1.docker.io). */
  async lookup(domain: string, repository: string): Promise<FoundCredentials | undefined> {
    const mem = this.store.lookup(domain, repository);
    if (mem) return { credentials: mem, source: 'credentials passed to the daemon (auth helper)' };
    for (const path of this.authFiles()) {
      const file = await readAuthFile(path);
      if (!file) continue;
      const found = await lookupInFile(path, file, domain, repository, this.#opts);
      if (found) return found;
    }
    return undefined;
  }
}
