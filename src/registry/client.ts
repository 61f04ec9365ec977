// The facade the rest of tocfs uses. One RegistryClient per daemon: it owns the connection pools, the token
// cache, the redirect cache and a small digest-keyed manifest cache, and is safe to use from many concurrent
// callers (token fetches, pings and manifest fetches by digest are shared while in flight).
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LRUCache } from 'lru-cache';
import { isDigest, sha256Digest, writeStateFile, type Digest } from '../util/index.js';
import { Authenticator } from './auth.js';
import { BlobReader, type BlobReaderOptions, type BlobReaderStats } from './blob-reader.js';
import { RegistryBlobSource } from './blob-source.js';
import { CredentialResolver, CredentialStore, type CredentialLookupOptions } from './credentials.js';
import { DigestMismatchError, ManifestError, RegistryNotFoundError } from './errors.js';
import { awaitShared, DEFAULT_RETRY_POLICY, header, HttpTransport, readLimited, silentLogger, type Limits, type RegistryLogger,
  type RetryPolicy, type Timeouts } from './http.js';
import { hostPlatform, MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, parseImageConfig, parseManifest, selectPlatform, type Descriptor,
  type ImageConfig, type ImageIndex, type ImageManifest, type Manifest, type Platform } from './manifest.js';
import { Pusher, type BlobData, type PushBlobOptions, type PushBlobResult } from './push.js';
import { manifestSelector, parseReference, type ImageReference } from './reference.js';
import { DEFAULT_REGISTRIES_CONF, loadRegistriesConf, RegistriesConf, type Endpoint, type RegistriesConfPaths } from './registries-conf.js';
import { RegistrySession, shouldTryNextEndpoint, unexpectedStatus } from './session.js';

export interface RegistryClientOptions {
  /** A parsed registries.conf; otherwise it is read (once) from `registriesConfPaths` or the system paths. */
  registriesConf?: RegistriesConf;
  registriesConfPaths?: RegistriesConfPaths;
  /** In-memory credentials (the ALS auth helper channel); they win over auth files. */
  credentialStore?: CredentialStore;
  credentialLookup?: CredentialLookupOptions;
  retry?: Partial<RetryPolicy>;
  timeouts?: Partial<Timeouts>;
  /**
   * Bound of a read or lookup whose caller gives no `deadline` (ms, default 30 s): connect, TLS, headers, body,
   * shared pings and tokens, retries and backoff all fit in it (the daemon passes its fetch_timeout).
   */
  fetchTimeoutMs?: number;
  /** Connections per origin (default 16). */
  connectionsPerOrigin?: number;
  blobReader?: Partial<BlobReaderOptions>;
  /** Platform chosen from indexes (default: this host, linux/<arch>[/variant]). */
  platform?: Platform;
  /** Largest image config read (default 8 MiB). */
  maxConfigBytes?: number;
  /**
   * Keep image configs here by digest (`<dir>/<hex>`, checked against the digest when read back): a restarted
   * daemon resolving an image it served before saves the config's round trip (a warm `podman pull` waits for it).
   */
  configCacheDir?: string;
  logger?: RegistryLogger;
  userAgent?: string;
  /** Clock for token expiry (tests). */
  now?: () => number;
}

export interface FetchedManifest<M extends Manifest = Manifest> {
  digest: Digest;
  mediaType: string;
  /** The exact bytes, as the digest covers them. */
  bytes: Buffer;
  manifest: M;
  /** Where it came from (a mirror or the primary). */
  endpoint: Endpoint;
}

export interface ResolvedImage {
  reference: ImageReference;
  /** The index or manifest list the reference pointed at, if it was one. */
  index?: FetchedManifest<ImageIndex>;
  /** Instances of the index matching the platform, best first ([] when the reference is a plain manifest). */
  candidates: Descriptor[];
  /** The image manifest chosen (the first candidate, or the reference's own manifest). */
  manifest: FetchedManifest<ImageManifest>;
  config: ImageConfig;
  configBytes: Buffer;
}

/** Bounds of one call. Reads and lookups fail with RegistryTimeoutError at `deadline` (or after the client's
 * fetchTimeoutMs when there is none); an aborted `signal` ends them with RegistryAbortedError (or
 * RegistryTimeoutError if its reason is a TimeoutError, as from AbortSignal.timeout). */
export interface CallSignal {
  signal?: AbortSignal;
  /** Absolute time (Date.now() ms) by which the whole call, retries included, must be over. Pushes ignore it. */
  deadline?: number;
}

const DEFAULT_MAX_CONFIG_BYTES = 8 * 1024 * 1024;

export class RegistryClient {
  readonly credentials: CredentialStore;
  readonly platform: Platform;
  readonly #http: HttpTransport;
  readonly #session: RegistrySession;
  readonly #reader: BlobReader;
  readonly #pusher: Pusher;
  readonly #logger: RegistryLogger;
  readonly #maxConfigBytes: number;
  readonly #configCacheDir: string | undefined;
  readonly #opts: RegistryClientOptions;
  #conf: Promise<RegistriesConf> | undefined;
  readonly #manifests = new LRUCache<string, FetchedManifest>({
    maxSize: 64 * 1024 * 1024, sizeCalculation: (m) => Math.max(1, m.bytes.length),
  });
  readonly #inflight = new Map<string, Promise<FetchedManifest>>();

  constructor(opts: RegistryClientOptions = {}) {
    this.#opts = opts;
    this.#logger = opts.logger ?? silentLogger;
    this.credentials = opts.credentialStore ?? new CredentialStore();
    this.platform = opts.platform ?? hostPlatform();
    this.#maxConfigBytes = opts.maxConfigBytes ?? DEFAULT_MAX_CONFIG_BYTES;
    this.#configCacheDir = opts.configCacheDir;
    // A longer fetch timeout than the policy's total would be cut short by the policy: let it have its time.
    const retry = { ...DEFAULT_RETRY_POLICY, maxTotalMs: Math.max(DEFAULT_RETRY_POLICY.maxTotalMs, opts.fetchTimeoutMs ?? 0), ...opts.retry };
    this.#http = new HttpTransport({ connections: opts.connectionsPerOrigin, timeouts: opts.timeouts, userAgent: opts.userAgent });
    const resolver = new CredentialResolver(this.credentials, opts.credentialLookup);
    const auth = new Authenticator(this.#http, resolver, {
      retry, logger: this.#logger, now: opts.now, ...(opts.fetchTimeoutMs !== undefined ? { fetchTimeoutMs: opts.fetchTimeoutMs } : {}),
    });
    this.#session = new RegistrySession(this.#http, auth, retry, this.#logger, {
      ...(opts.fetchTimeoutMs !== undefined ? { fetchTimeoutMs: opts.fetchTimeoutMs } : {}),
      registriesConfName: opts.registriesConf ? 'registries.conf' : opts.registriesConfPaths?.path ?? DEFAULT_REGISTRIES_CONF,
    });
    this.#reader = new BlobReader(this.#session, opts.blobReader);
    this.#pusher = new Pusher(this.#session);
    if (opts.registriesConf) this.#conf = Promise.resolve(opts.registriesConf);
  }

  /** Counters of the blob reader (requests, multi-range requests, fallbacks, redirects). */
  get blobStats(): Readonly<BlobReaderStats> {
    return this.#reader.stats;
  }

  #registriesConf(): Promise<RegistriesConf> {
    if (!this.#conf) {
      this.#conf = loadRegistriesConf(this.#opts.registriesConfPaths);
      this.#conf.catch(() => { this.#conf = undefined; });
    }
    return this.#conf;
  }

  #ref(ref: ImageReference | string): ImageReference {
    return typeof ref === 'string' ? parseReference(ref) : ref;
  }

  /** Pull endpoints of a reference: eligible mirrors in order, then the primary. */
  async pullEndpoints(ref: ImageReference | string): Promise<Endpoint[]> {
    return (await this.#registriesConf()).pullEndpoints(this.#ref(ref));
  }

  /**
   * Contact the registry of `ref` ahead of use (its /v2/ ping: scheme and auth challenge learned, a connection
   * opened), so that a lookup soon after does not pay for it. Never throws.
   */
  async warmUp(ref: ImageReference | string): Promise<void> {
    try {
      const [ep] = await this.pullEndpoints(ref);
      if (ep) await this.#session.base(ep, this.#session.limits());
    } catch (err) {
      this.#logger.debug({ ref: typeof ref === 'string' ? ref : ref.string, error: (err as Error).message }, 'registry warm-up failed (the first lookup contacts it)');
    }
  }

  async pushEndpoint(ref: ImageReference | string): Promise<Endpoint> {
    return (await this.#registriesConf()).pushEndpoint(this.#ref(ref));
  }

  /** Try each endpoint in order; a failure that another endpoint might not have moves on to the next. */
  async #onEndpoints<T>(endpoints: readonly Endpoint[], fn: (ep: Endpoint) => Promise<T>): Promise<T> {
    const errors: unknown[] = [];
    for (const [i, ep] of endpoints.entries()) {
      try {
        return await fn(ep);
      } catch (err) {
        errors.push(err);
        if (i + 1 >= endpoints.length || !shouldTryNextEndpoint(err)) throw err;
        this.#logger.warn({ endpoint: ep.apiHost, error: (err as Error).message }, 'mirror failed, trying the next endpoint');
      }
    }
    throw errors[errors.length - 1];
  }

  /** Fetch a manifest or index by the reference's digest (or tag), verified and size-limited. */
  async fetchManifest(ref: ImageReference | string, opts: CallSignal = {}): Promise<FetchedManifest> {
    const r = this.#ref(ref);
    const limits = this.#session.limits(opts);
    return this.#fetchManifestFrom(await this.pullEndpoints(r), r, manifestSelector(r), limits);
  }

  async #fetchManifestFrom(endpoints: readonly Endpoint[], ref: ImageReference, selector: string, limits: Limits): Promise<FetchedManifest> {
    const byDigest = selector.startsWith('sha256:');
    if (byDigest) {
      const hit = this.#manifests.get(selector);
      if (hit) return hit;
      const key = `${ref.name}@${selector}`;
      let pending = this.#inflight.get(key);
      if (!pending) {
        // Shared by every caller, so no caller's signal or deadline ends it: the fetch timeout does (a stuck fetch
        // must not be joined by callers long after the registry recovered). Each caller waits within its own limits.
        pending = this.#onEndpoints(endpoints, (ep) => this.#fetchManifestAt(ep, selector, this.#session.limits()));
        this.#inflight.set(key, pending);
        pending.then((m) => this.#manifests.set(m.digest, m), () => undefined).finally(() => this.#inflight.delete(key));
      }
      return awaitShared(pending, this.#session.op(endpoints[0]!, `fetching manifest ${ref.name}@${selector}`, limits));
    }
    return this.#onEndpoints(endpoints, (ep) => this.#fetchManifestAt(ep, selector, limits));
  }

  async #fetchManifestAt(ep: Endpoint, selector: string, limits: Limits): Promise<FetchedManifest> {
    const what = `fetching manifest ${ep.reference.name}${selector.startsWith('sha256:') ? '@' : ':'}${selector}`;
    return this.#session.call(ep, {
      method: 'GET', path: `/v2/${ep.reference.path}/manifests/${selector}`, headers: { accept: MANIFEST_ACCEPT }, actions: ['pull'], what,
    }, limits, async (res) => {
      if (res.statusCode !== 200) throw await unexpectedStatus(res, what);
      const tooLarge = (): Error => new ManifestError(`${what}: larger than the ${MAX_MANIFEST_BYTES}-byte limit for manifests`);
      const declared = Number(header(res.headers, 'content-length'));
      if (Number.isFinite(declared) && declared > MAX_MANIFEST_BYTES) {
        res.body.destroy();
        throw tooLarge();
      }
      const bytes = await readLimited(res.body, MAX_MANIFEST_BYTES, tooLarge);
      const digest = sha256Digest(bytes);
      if (selector.startsWith('sha256:') && digest !== selector) throw new DigestMismatchError(what, selector, digest);
      const announced = header(res.headers, 'docker-content-digest');
      if (announced?.startsWith('sha256:') && announced !== digest) {
        throw new DigestMismatchError(`${what} (Docker-Content-Digest header)`, announced, digest);
      }
      const manifest = parseManifest(bytes, header(res.headers, 'content-type'), what);
      return { digest, mediaType: manifest.mediaType, bytes, manifest, endpoint: ep };
    });
  }

  /**
   * Resolve a reference to an image: manifest (an index resolves to the best instance for the platform; all
   * matching instances are listed in `candidates`) and verified config. One deadline bounds all of it.
   */
  async resolveImage(
    ref: ImageReference | string,
    opts: CallSignal & { platform?: Platform; onManifest?: (manifest: ImageManifest) => void } = {},
  ): Promise<ResolvedImage> {
    const r = this.#ref(ref);
    const limits = this.#session.limits(opts);
    const endpoints = await this.pullEndpoints(r);
    const top = await this.#fetchManifestFrom(endpoints, r, manifestSelector(r), limits);
    let index: FetchedManifest<ImageIndex> | undefined;
    let chosen: FetchedManifest;
    let candidates: Descriptor[] = [];
    if (top.manifest.kind === 'index') {
      index = top as FetchedManifest<ImageIndex>;
      candidates = selectPlatform(index.manifest, opts.platform ?? this.platform, `resolving ${r.string}`);
      // Instances come from where the index came from first (mirrors must be consistent), then the others.
      const from = endpoints.indexOf(top.endpoint);
      const ordered = [...endpoints.slice(from), ...endpoints.slice(0, from)];
      chosen = await this.#fetchManifestFrom(ordered, r, candidates[0]!.digest, limits);
      if (chosen.manifest.kind !== 'manifest') {
        throw new ManifestError(`resolving ${r.string}: index entry ${candidates[0]!.digest} is itself an index (nested indexes are not supported)`);
      }
    } else {
      chosen = top;
    }
    const manifest = chosen as FetchedManifest<ImageManifest>;
    // Callers may start on the layers (their TOCs) while the config is on its way.
    opts.onManifest?.(manifest.manifest);
    const configDescriptor = manifest.manifest.config;
    if (configDescriptor.size > this.#maxConfigBytes) {
      throw new ManifestError(`resolving ${r.string}: config ${configDescriptor.digest} has ${configDescriptor.size} bytes, more than the ${this.#maxConfigBytes}-byte limit`);
    }
    const kept = await this.#keptConfig(configDescriptor);
    const configBytes = kept ?? await this.#fetchBlob(r, endpoints, configDescriptor, limits);
    const config = parseImageConfig(configBytes, `config ${configDescriptor.digest} of ${r.string}`);
    if (!kept) this.#keepConfig(configDescriptor, configBytes);
    return { reference: r, ...(index ? { index } : {}), candidates, manifest, config, configBytes };
  }

  /** Where the config with this digest is kept (undefined without a configCacheDir, or for a digest not sha256). */
  #configPath(digest: string): string | undefined {
    return this.#configCacheDir && isDigest(digest) ? join(this.#configCacheDir, digest.slice(7)) : undefined;
  }

  /** A config kept by an earlier resolve, if it is there and still hashes to its digest. */
  async #keptConfig(d: Pick<Descriptor, 'digest' | 'size'>): Promise<Buffer | undefined> {
    const path = this.#configPath(d.digest);
    if (!path) return undefined;
    try {
      const bytes = await readFile(path);
      return bytes.length === d.size && sha256Digest(bytes) === d.digest ? bytes : undefined;
    } catch {
      return undefined;
    }
  }

  #keepConfig(d: Pick<Descriptor, 'digest' | 'size'>, bytes: Buffer): void {
    const path = this.#configPath(d.digest);
    if (!path) return;
    // Failing only costs the round trip next time.
    void mkdir(this.#configCacheDir!, { recursive: true, mode: 0o700 }).then(() => writeStateFile(path, bytes)).catch(() => {});
  }

  /** A whole blob, verified against the descriptor's digest and size (use for configs and small blobs). */
  async fetchBlob(ref: ImageReference | string, descriptor: Pick<Descriptor, 'digest' | 'size'>, opts: CallSignal = {}): Promise<Buffer> {
    const r = this.#ref(ref);
    const limits = this.#session.limits(opts);
    return this.#fetchBlob(r, await this.pullEndpoints(r), descriptor, limits);
  }

  async #fetchBlob(r: ImageReference, endpoints: readonly Endpoint[], descriptor: Pick<Descriptor, 'digest' | 'size'>,
    limits: Limits): Promise<Buffer> {
    const bytes = await this.#onEndpoints(endpoints, (ep) => this.#reader.readAll(ep, descriptor.digest, descriptor.size, limits));
    const actual = sha256Digest(bytes);
    if (actual !== descriptor.digest) throw new DigestMismatchError(`blob ${descriptor.digest} of ${r.string}`, descriptor.digest, actual);
    return bytes;
  }

  /** Size of a blob (HEAD), or undefined when no endpoint has it. */
  async statBlob(ref: ImageReference | string, digest: Digest, opts: CallSignal = {}): Promise<number | undefined> {
    const r = this.#ref(ref);
    const limits = this.#session.limits(opts);
    const endpoints = await this.pullEndpoints(r);
    for (const [i, ep] of endpoints.entries()) {
      try {
        const size = await this.#reader.stat(ep, digest, limits);
        if (size !== undefined || i + 1 === endpoints.length) return size;
      } catch (err) {
        if (i + 1 >= endpoints.length || !shouldTryNextEndpoint(err)) throw err;
      }
    }
    return undefined;
  }

  /** Random access to a layer blob described by a (verified) manifest. No request is made until a read. */
  async getBlobSource(ref: ImageReference | string, descriptor: Pick<Descriptor, 'digest' | 'size'>): Promise<RegistryBlobSource> {
    return new RegistryBlobSource(this.#reader, await this.pullEndpoints(this.#ref(ref)), descriptor.digest, descriptor.size);
  }

  /** Like getBlobSource for a blob known only by digest: its size comes from a HEAD request. */
  async openBlob(ref: ImageReference | string, digest: Digest, opts: CallSignal = {}): Promise<RegistryBlobSource> {
    const size = await this.statBlob(ref, digest, opts);
    const r = this.#ref(ref);
    if (size === undefined) throw new RegistryNotFoundError(`blob ${digest} of ${r.string} does not exist in the registry`);
    return this.getBlobSource(r, { digest, size });
  }

  async blobExists(ref: ImageReference | string, digest: Digest, opts: CallSignal = {}): Promise<boolean> {
    return this.#pusher.blobExists(await this.pushEndpoint(ref), digest, opts.signal);
  }

  /** Upload a blob unless the repository has it; `mountFrom` names a repository of the same registry to mount from. */
  async pushBlob(ref: ImageReference | string, data: BlobData, opts: PushBlobOptions = {}): Promise<PushBlobResult> {
    return this.#pusher.pushBlob(await this.pushEndpoint(ref), data, opts);
  }

  /** PUT a manifest or index under the reference's tag, or its digest when the reference has one. */
  async pushManifest(ref: ImageReference | string, bytes: Uint8Array, mediaType: string, opts: CallSignal = {}): Promise<Digest> {
    return this.#pusher.pushManifest(await this.pushEndpoint(ref), bytes, mediaType, opts.signal);
  }

  /** Close every pooled connection. */
  async close(): Promise<void> {
    await this.#http.close();
  }
}
