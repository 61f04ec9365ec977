// Shared helpers of the registry tests: a client that talks plain HTTP to loopback registries, random
// content, and an image pusher.
import { randomBytes } from 'node:crypto';
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { sha256Digest, type Digest } from '../../src/util/index.js';
import { MediaType, parseRegistriesConf, RegistriesConf, RegistryClient, type Descriptor, type RegistryClientOptions }
  from '../../src/registry/index.js';

/** registries.conf entries that mark each loopback host insecure (plain HTTP), plus `extra` TOML. */
export function loopbackConf(hosts: readonly string[], extra = ''): RegistriesConf {
  const text = hosts.map((h) => `[[registry]]\nlocation = "${h}"\ninsecure = true\n`).join('\n') + extra;
  return new RegistriesConf(parseRegistriesConf(text, 'test registries.conf'));
}

export const FAST_RETRY = { maxAttempts: 4, maxTotalMs: 10_000, baseDelayMs: 20, maxDelayMs: 100 };

export function testClient(hosts: readonly string[], opts: RegistryClientOptions = {}): RegistryClient {
  return new RegistryClient({
    registriesConf: loopbackConf(hosts),
    credentialLookup: { authFiles: [] },
    retry: FAST_RETRY,
    timeouts: { connectMs: 2000, headersMs: 5000, bodyIdleMs: 5000 },
    ...opts,
  });
}

export function blob(size: number): Buffer {
  return randomBytes(size);
}

export function descriptorOf(bytes: Uint8Array, mediaType: string): Descriptor {
  return { mediaType, digest: sha256Digest(bytes), size: bytes.byteLength };
}

export interface PushedImage {
  layers: Buffer[];
  layerDescriptors: Descriptor[];
  config: Buffer;
  manifest: Buffer;
  manifestDigest: Digest;
}

/** Push random layers, a config naming them, and an OCI (or Docker) manifest under `tag`. */
export async function pushImage(client: RegistryClient, repo: string, tag: string, layerSizes: readonly number[],
  opts: { docker?: boolean; architecture?: string } = {}): Promise<PushedImage> {
  const layers = layerSizes.map((n) => blob(n));
  const layerType = opts.docker ? 'application/vnd.docker.image.rootfs.diff.tar.gzip' : 'application/vnd.oci.image.layer.v1.tar+zstd';
  const layerDescriptors = layers.map((l) => descriptorOf(l, layerType));
  for (const l of layers) await client.pushBlob(`${repo}:${tag}`, l);
  const config = Buffer.from(JSON.stringify({
    architecture: opts.architecture ?? 'amd64', os: 'linux',
    rootfs: { type: 'layers', diff_ids: layers.map((l) => sha256Digest(l)) },
  }));
  await client.pushBlob(`${repo}:${tag}`, config);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: opts.docker ? MediaType.DockerManifest : MediaType.OciManifest,
    config: descriptorOf(config, opts.docker ? MediaType.DockerConfig : MediaType.OciConfig),
    layers: layerDescriptors,
  }));
  const manifestDigest = await client.pushManifest(`${repo}:${tag}`, manifest, opts.docker ? MediaType.DockerManifest : MediaType.OciManifest);
  return { layers, layerDescriptors, config, manifest, manifestDigest };
}

export async function expectElapsedBelow<T>(ms: number, fn: () => Promise<T>): Promise<{ result: T | undefined; error: unknown; elapsed: number }> {
  const t0 = Date.now();
  let result: T | undefined;
  let error: unknown;
  try {
    result = await fn();
  } catch (err) {
    error = err;
  }
  const elapsed = Date.now() - t0;
  if (elapsed >= ms) throw new Error(`took ${elapsed} ms, limit ${ms} ms`);
  return { result, error, elapsed };
}

export interface BlackHole {
  /** "127.0.0.1:PORT" */
  host: string;
  /** Connections accepted so far. */
  readonly accepted: number;
  stop(): Promise<void>;
}

/** A loopback TCP server that accepts connections and never sends a byte (a black-holed registry or token server);
 * on `port` to take over the address of a server that just stopped. */
export async function startBlackHole(port = 0): Promise<BlackHole> {
  const sockets = new Set<Socket>();
  let accepted = 0;
  const server = createNetServer((s) => {
    accepted++;
    sockets.add(s);
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
    s.resume(); // read and drop whatever the client sends (a TLS hello, a request)
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return {
    host: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    get accepted() { return accepted; },
    stop: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}
