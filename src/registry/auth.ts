// Registry authentication: learn the challenge of each registry (ping /v2/ or a 401), then answer it with
// Basic credentials or a bearer token from the realm (docker token protocol, or the OAuth2 refresh-token
// grant for identity tokens). Tokens are cached per registry and scope set until they expire; concurrent
// requests for the same scope share one token fetch.
import { LRUCache } from 'lru-cache';
import { RegistryAuthError } from './errors.js';
import { awaitShared, DEFAULT_FETCH_TIMEOUT_MS, discard, HttpTransport, readLimited, redactUrl, TransientError, withRetries, type Operation,
  type RegistryLogger, type RetryPolicy } from './http.js';
import type { CredentialResolver, FoundCredentials } from './credentials.js';
import type { Endpoint } from './registries-conf.js';

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parse a WWW-Authenticate value (RFC 7235: one or more challenges, auth-params with quoted strings). */
export function parseWwwAuthenticate(value: string): Challenge[] {
  const challenges: Challenge[] = [];
  let i = 0;
  const n = value.length;
  const skipSpace = (): void => { while (i < n && (value[i] === ' ' || value[i] === '\t')) i++; };
  const readToken = (): string => {
    const start = i;
    while (i < n && /[!#$%&'*+\-.^_`|~0-9A-Za-z]/.test(value[i]!)) i++;
    return value.slice(start, i);
  };
  while (i < n) {
    skipSpace();
    while (i < n && value[i] === ',') { i++; skipSpace(); }
    const scheme = readToken();
    if (scheme === '') break;
    const challenge: Challenge = { scheme: scheme.toLowerCase(), params: {} };
    challenges.push(challenge);
    for (;;) {
      skipSpace();
      const save = i;
      const key = readToken();
      skipSpace();
      if (key === '' || value[i] !== '=') { i = save; break; }
      i++;
      skipSpace();
      let val = '';
      if (value[i] === '"') {
        i++;
        while (i < n && value[i] !== '"') {
          if (value[i] === '\\' && i + 1 < n) i++;
          val += value[i];
          i++;
        }
        i++;
      } else {
        const start = i;
        while (i < n && value[i] !== ',' && value[i] !== ' ') i++;
        val = value.slice(start, i);
      }
      challenge.params[key.toLowerCase()] = val;
      skipSpace();
      if (value[i] === ',') i++;
    }
  }
  return challenges;
}

export function repositoryScope(repository: string, actions: readonly string[]): string {
  return `repository:${repository}:${actions.join(',')}`;
}

interface CachedToken {
  value: string;
  expiresAt: number;
}

/** The registry's answer to a ping: no auth needed, or a challenge to meet. */
type HostAuth = { kind: 'none' } | { kind: 'basic' } | { kind: 'bearer'; realm: URL; service: string | undefined };

export interface AuthenticatorOptions {
  retry: RetryPolicy;
  logger: RegistryLogger;
  /** Clock (tests move it to expire tokens). */
  now?: () => number;
  /** Bound of a token fetch (default DEFAULT_FETCH_TIMEOUT_MS). */
  fetchTimeoutMs?: number;
}

const MIN_TOKEN_LIFETIME_S = 60;
const TOKEN_EXPIRY_MARGIN_MS = 5_000;
const TOKEN_RESPONSE_LIMIT = 1 << 20;
const BASIC_HEADER_REUSE_MS = 60_000;

export class Authenticator {
  readonly #http: HttpTransport;
  readonly #credentials: CredentialResolver;
  readonly #opts: AuthenticatorOptions;
  readonly #hosts = new Map<string, HostAuth>();
  /** Bounded: one entry per registry and scope set (repository) in use. */
  readonly #tokens = new LRUCache<string, CachedToken>({ max: 10_000 });
  readonly #inflight = new Map<string, Promise<CachedToken>>();

  constructor(http: HttpTransport, credentials: CredentialResolver, opts: AuthenticatorOptions) {
    this.#http = http;
    this.#credentials = credentials;
    this.#opts = opts;
  }

  #now(): number {
    return this.#opts.now ? this.#opts.now() : Date.now();
  }

  knowsHost(origin: string): boolean {
    return this.#hosts.has(origin);
  }

  /** Record what a 401 (or the ping) said. Returns false if the header offers nothing we can use. */
  learn(origin: string, wwwAuthenticate: string | undefined, base: URL): boolean {
    if (wwwAuthenticate === undefined) {
      this.#hosts.set(origin, { kind: 'none' });
      return false;
    }
    const challenges = parseWwwAuthenticate(wwwAuthenticate);
    const bearer = challenges.find((c) => c.scheme === 'bearer' && c.params.realm);
    if (bearer) {
      let realm: URL;
      try {
        realm = new URL(bearer.params.realm!, base);
      } catch {
        throw new RegistryAuthError(`${origin} announced a token realm that is not a URL: ${JSON.stringify(bearer.params.realm)}`);
      }
      this.#hosts.set(origin, { kind: 'bearer', realm, service: bearer.params.service });
      return true;
    }
    if (challenges.some((c) => c.scheme === 'basic')) {
      this.#hosts.set(origin, { kind: 'basic' });
      return true;
    }
    return false;
  }

  /** Cache key of a Basic header (scopes undefined) or a token; includes the credential store's generation so
   * that new credentials from the auth helper take effect at once. */
  #key(origin: string, scopes: readonly string[] | undefined, ep: Endpoint): string {
    const gen = this.#credentials.store.generation;
    return scopes === undefined ? `${gen} ${origin} basic ${ep.reference.domain}/${ep.reference.path}`
      : `${gen} ${origin} ${[...scopes].sort().join(' ')}`;
  }

  /** Forget what was cached for a request (after the registry rejected it with 401). */
  invalidate(origin: string, ep: Endpoint, scopes: readonly string[]): void {
    this.#tokens.delete(this.#key(origin, scopes, ep));
    this.#tokens.delete(this.#key(origin, undefined, ep));
  }

  /** The Authorization value for a request, or undefined when the host needs none (or is not known yet).
   * Credentials are looked up only when a token must be fetched (or a Basic header built), never per request. */
  async authorization(origin: string, ep: Endpoint, scopes: readonly string[], op: Operation): Promise<string | undefined> {
    const host = this.#hosts.get(origin);
    if (!host || host.kind === 'none') return undefined;
    const key = this.#key(origin, host.kind === 'basic' ? undefined : scopes, ep);
    const cached = this.#tokens.get(key);
    if (cached && cached.expiresAt > this.#now()) return cached.value;
    let pending = this.#inflight.get(key);
    if (!pending) {
      // Shared by every waiting request, so it runs without any one caller's signal.
      pending = host.kind === 'basic' ? this.#basic(ep) : this.#bearer(host.realm, host.service, scopes, ep);
      this.#inflight.set(key, pending);
      pending.then((t) => this.#tokens.set(key, t), () => undefined).finally(() => this.#inflight.delete(key));
    }
    return (await awaitShared(pending, { ...op, what: `${op.what}: authenticating to ${ep.apiHost}` })).value;
  }

  async #basic(ep: Endpoint): Promise<CachedToken> {
    const found = await this.#credentials.lookup(ep.reference.domain, ep.reference.path);
    if (!found) {
      throw new RegistryAuthError(`${ep.reference.domain} requires a user name and password and none was found ` +
        `(searched: daemon credentials, ${this.#credentials.authFiles().join(', ')}); log in with \`podman login ${ep.reference.domain}\``);
    }
    if (found.credentials.identityToken !== undefined) {
      throw new RegistryAuthError(`${ep.reference.domain} asks for Basic auth but ${found.source} holds an identity token`);
    }
    const value = `Basic ${Buffer.from(`${found.credentials.username}:${found.credentials.password}`).toString('base64')}`;
    // Re-read the sources now and then, so a new login or a helper update is picked up.
    return { value, expiresAt: this.#now() + BASIC_HEADER_REUSE_MS };
  }

  async #bearer(realm: URL, service: string | undefined, scopes: readonly string[], ep: Endpoint): Promise<CachedToken> {
    const found = await this.#credentials.lookup(ep.reference.domain, ep.reference.path);
    const token = await this.#fetchToken(realm, service, scopes, found, ep);
    return { value: `Bearer ${token.value}`, expiresAt: token.expiresAt };
  }

  async #fetchToken(realm: URL, service: string | undefined, scopes: readonly string[], found: FoundCredentials | undefined,
    ep: Endpoint): Promise<CachedToken> {
    const what = `getting a token for ${ep.reference.name} from ${redactUrl(realm)}`;
    const creds = found?.credentials;
    // Shared by every request waiting for this token: bounded by the fetch timeout, not by one caller's limits.
    const timeoutMs = this.#opts.fetchTimeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS;
    const op = { what, host: realm.host, limits: { deadline: Date.now() + timeoutMs }, timeoutMs };
    return withRetries({ op, policy: this.#opts.retry, logger: this.#opts.logger }, async (ctx) => {
      const url = new URL(realm);
      let method: 'GET' | 'POST' = 'GET';
      const headers: Record<string, string> = {};
      let body: string | undefined;
      if (creds?.identityToken !== undefined) {
        // OAuth2 refresh-token grant, as docker and containers/image do for identity tokens.
        method = 'POST';
        const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: creds.identityToken, client_id: 'tocfs' });
        if (service !== undefined) form.set('service', service);
        form.set('scope', scopes.join(' '));
        body = form.toString();
        headers['content-type'] = 'application/x-www-form-urlencoded';
      } else {
        if (service !== undefined) url.searchParams.set('service', service);
        for (const s of scopes) url.searchParams.append('scope', s);
        if (creds) headers.authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
      }
      const res = await this.#http.send(url, { method, headers, body, signal: ctx.signal, deadline: ctx.deadline });
      if (res.statusCode >= 500 || res.statusCode === 429) {
        await discard(res);
        throw new TransientError(`token server answered ${res.statusCode}`);
      }
      if (res.statusCode === 401 || res.statusCode === 403) {
        await discard(res);
        throw new RegistryAuthError(`the token server ${redactUrl(realm)} rejected ` +
          (found ? `the credentials from ${found.source}` : 'an anonymous request') + ` for ${ep.reference.name} (HTTP ${res.statusCode})` +
          (found ? '; log in again' : `; log in with \`podman login ${ep.reference.domain}\``));
      }
      if (res.statusCode !== 200) {
        await discard(res);
        throw new RegistryAuthError(`the token server ${redactUrl(realm)} answered HTTP ${res.statusCode} for ${ep.reference.name}`);
      }
      const text = await readLimited(res.body, TOKEN_RESPONSE_LIMIT,
        () => new RegistryAuthError(`the token server ${redactUrl(realm)} sent more than 1 MiB`));
      return this.#parseTokenResponse(text, realm);
    });
  }

  #parseTokenResponse(text: Buffer, realm: URL): CachedToken {
    let doc: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      doc = JSON.parse(text.toString('utf8')) as typeof doc;
    } catch {
      throw new RegistryAuthError(`the token server ${redactUrl(realm)} did not answer JSON`);
    }
    const value = typeof doc.token === 'string' && doc.token !== '' ? doc.token
      : typeof doc.access_token === 'string' && doc.access_token !== '' ? doc.access_token : undefined;
    if (value === undefined) throw new RegistryAuthError(`the token server ${redactUrl(realm)} answered without "token" or "access_token"`);
    const lifetime = typeof doc.expires_in === 'number' && doc.expires_in > MIN_TOKEN_LIFETIME_S ? doc.expires_in : MIN_TOKEN_LIFETIME_S;
    return { value, expiresAt: this.#now() + lifetime * 1000 - TOKEN_EXPIRY_MARGIN_MS };
  }
}

