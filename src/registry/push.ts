// Pushing: blob existence checks, cross-repository mounts, monolithic (POST + PUT) and chunked (PATCH)
// uploads, and manifest PUTs. An upload that fails transiently is restarted from the POST (a half-sent PATCH
// cannot be resumed reliably), within the retry policy.
import type { Readable } from 'node:stream';
import { createReadStream } from 'node:fs';
import { sha256Digest, type Digest } from '../util/index.js';
import { DigestMismatchError, RegistryHttpError } from './errors.js';
import { discard, header, withRetries, type AttemptContext } from './http.js';
import type { Endpoint } from './registries-conf.js';
import { unexpectedStatus, type CallOptions, type RegistrySession } from './session.js';

/** Blob content to push: bytes in memory, or a file with known digest and size. */
export type BlobData = Uint8Array | { path: string; size: number; digest: Digest };

export interface PushBlobOptions {
  /** Try to mount the blob from this repository of the same registry first (`?mount=&from=`). */
  mountFrom?: string;
  /** Upload in PATCH chunks of this many bytes; without it the blob goes in one PUT. */
  chunkSize?: number;
  signal?: AbortSignal;
}

export interface PushBlobResult {
  digest: Digest;
  size: number;
  /** What happened: it was there already, mounted from another repository, or uploaded. */
  outcome: 'exists' | 'mounted' | 'uploaded';
}

function describe(data: BlobData): { digest: Digest; size: number } {
  if (data instanceof Uint8Array) return { digest: sha256Digest(data), size: data.byteLength };
  return { digest: data.digest, size: data.size };
}

function slice(data: BlobData, start: number, end: number): () => Uint8Array | Readable {
  if (data instanceof Uint8Array) return () => data.subarray(start, end);
  // createReadStream's `end` is inclusive; an empty slice is sent as an empty buffer.
  return () => (end > start ? createReadStream(data.path, { start, end: end - 1 }) : Buffer.alloc(0));
}

export class Pusher {
  readonly #session: RegistrySession;

  constructor(session: RegistrySession) {
    this.#session = session;
  }

  #uploadsPath(ep: Endpoint): string {
    return `/v2/${ep.reference.path}/blobs/uploads/`;
  }

  async blobExists(ep: Endpoint, digest: Digest, signal?: AbortSignal): Promise<boolean> {
    const what = `checking blob ${digest} in ${ep.reference.name}`;
    return this.#session.call(ep, { method: 'HEAD', path: `/v2/${ep.reference.path}/blobs/${digest}`, actions: ['pull', 'push'], what },
      { signal }, async (res) => {
        await discard(res);
        // A redirect (to object storage) also means the registry has the blob.
        if (res.statusCode === 200 || (res.statusCode >= 301 && res.statusCode <= 308)) return true;
        if (res.statusCode === 404) return false;
        throw await unexpectedStatus(res, what);
      });
  }

  async pushBlob(ep: Endpoint, data: BlobData, opts: PushBlobOptions = {}): Promise<PushBlobResult> {
    const { digest, size } = describe(data);
    if (await this.blobExists(ep, digest, opts.signal)) return { digest, size, outcome: 'exists' };
    const what = `uploading blob ${digest} (${size} bytes) to ${ep.reference.name}`;
    // Uploads are bounded by the retry policy and the caller's signal, not by the fetch timeout of reads.
    const op = this.#session.op(ep, what, { signal: opts.signal });
    return withRetries({ op, policy: this.#session.retry, logger: this.#session.logger }, async (ctx) => {
      const started = await this.#startUpload(ep, digest, opts.mountFrom, ctx, what);
      if (started === 'mounted') return { digest, size, outcome: 'mounted' as const };
      let location = started;
      if (opts.chunkSize !== undefined && opts.chunkSize > 0) {
        for (let offset = 0; offset < size; offset += opts.chunkSize) {
          const end = Math.min(size, offset + opts.chunkSize);
          location = await this.#patch(ep, location, data, offset, end, ctx, what);
        }
        await this.#finish(ep, location, digest, () => Buffer.alloc(0), 0, ctx, what);
      } else {
        await this.#finish(ep, location, digest, slice(data, 0, size), size, ctx, what);
      }
      return { digest, size, outcome: 'uploaded' as const };
    });
  }

  #send(ep: Endpoint, opts: CallOptions, ctx: AttemptContext) {
    return this.#session.send(ep, opts, ctx);
  }

  /** POST: returns the upload location, or 'mounted' when the registry mounted the blob. */
  async #startUpload(ep: Endpoint, digest: Digest, mountFrom: string | undefined, ctx: AttemptContext, what: string): Promise<URL | 'mounted'> {
    const path = mountFrom ? `${this.#uploadsPath(ep)}?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(mountFrom)}` : this.#uploadsPath(ep);
    const res = await this.#send(ep, {
      method: 'POST', path, headers: { 'content-length': '0' }, actions: ['pull', 'push'],
      extraScopes: mountFrom ? [`repository:${mountFrom}:pull`] : [], what,
    }, ctx);
    if (mountFrom && res.statusCode === 201) {
      await discard(res);
      return 'mounted';
    }
    if (res.statusCode !== 202) throw await unexpectedStatus(res, what);
    await discard(res);
    return this.#location(res.url, header(res.headers, 'location'), what);
  }

  #location(base: URL, location: string | undefined, what: string): URL {
    if (!location) throw new RegistryHttpError(202, `${what}: the registry did not say where to upload (no Location)`);
    return new URL(location, base);
  }

  async #patch(ep: Endpoint, location: URL, data: BlobData, start: number, end: number, ctx: AttemptContext, what: string): Promise<URL> {
    const res = await this.#send(ep, {
      method: 'PATCH', path: location, body: slice(data, start, end), actions: ['pull', 'push'], what,
      headers: { 'content-type': 'application/octet-stream', 'content-range': `${start}-${end - 1}`, 'content-length': String(end - start) },
    }, ctx);
    if (res.statusCode !== 202) throw await unexpectedStatus(res, `${what} (chunk ${start}-${end - 1})`);
    await discard(res);
    return this.#location(res.url, header(res.headers, 'location'), what);
  }

  async #finish(ep: Endpoint, location: URL, digest: Digest, body: () => Uint8Array | Readable, length: number,
    ctx: AttemptContext, what: string): Promise<void> {
    const url = new URL(location);
    url.searchParams.set('digest', digest);
    const res = await this.#send(ep, {
      method: 'PUT', path: url, body, actions: ['pull', 'push'], what,
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(length) },
    }, ctx);
    if (res.statusCode !== 201) throw await unexpectedStatus(res, what);
    await discard(res);
    const stored = header(res.headers, 'docker-content-digest');
    if (stored !== undefined && stored !== digest) throw new DigestMismatchError(what, digest, stored);
  }

  /** PUT a manifest under the endpoint reference's tag (or digest); returns its digest. */
  async pushManifest(ep: Endpoint, bytes: Uint8Array, mediaType: string, signal?: AbortSignal): Promise<Digest> {
    const digest = sha256Digest(bytes);
    const target = ep.reference.digest ?? ep.reference.tag ?? 'latest';
    if (ep.reference.digest !== undefined && ep.reference.digest !== digest) {
      throw new DigestMismatchError(`pushing manifest to ${ep.reference.string}`, ep.reference.digest, digest);
    }
    const what = `pushing manifest ${digest} to ${ep.reference.name}:${target}`;
    return this.#session.call(ep, {
      method: 'PUT', path: `/v2/${ep.reference.path}/manifests/${target}`, body: () => bytes, actions: ['pull', 'push'], what,
      headers: { 'content-type': mediaType, 'content-length': String(bytes.byteLength) },
    }, { signal }, async (res) => {
      if (res.statusCode !== 201) throw await unexpectedStatus(res, what);
      await discard(res);
      const stored = header(res.headers, 'docker-content-digest');
      if (stored !== undefined && stored !== digest) throw new DigestMismatchError(what, digest, stored);
      return digest;
    });
  }
}
