// OCI / Docker schema2 manifests, indexes and manifest lists: media types, strict parsing into typed
// objects, platform selection, and image configs.
import { isDigest, type Digest } from '../util/index.js';
import { ManifestError, PlatformNotFoundError } from './errors.js';

export const MediaType = Object.freeze({
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  OciConfig: 'application/vnd.oci.image.config.v1+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DockerConfig: 'application/vnd.docker.container.image.v1+json',
});

const MANIFEST_TYPES = new Set<string>([MediaType.OciManifest, MediaType.DockerManifest]);
const INDEX_TYPES = new Set<string>([MediaType.OciIndex, MediaType.DockerManifestList]);

/** What the client accepts when fetching manifests (schema1 is deliberately absent). */
export const MANIFEST_ACCEPT = [MediaType.OciIndex, MediaType.DockerManifestList, MediaType.OciManifest, MediaType.DockerManifest].join(', ');

/** Largest manifest the client reads (the limit containers/image and distribution use). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
}

export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  annotations?: Record<string, string>;
  urls?: string[];
  platform?: Platform;
  artifactType?: string;
}

export interface ImageManifest {
  kind: 'manifest';
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
  subject?: Descriptor;
}

export interface ImageIndex {
  kind: 'index';
  mediaType: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
}

export type Manifest = ImageManifest | ImageIndex;

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function stringRecord(v: unknown, where: string): Record<string, string> | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v) || Object.values(v).some((x) => typeof x !== 'string')) {
    throw new ManifestError(`${where}: annotations must be an object of strings`);
  }
  return v as Record<string, string>;
}

function parsePlatform(v: unknown, where: string): Platform | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v) || typeof v.os !== 'string' || typeof v.architecture !== 'string') {
    throw new ManifestError(`${where}: platform needs string "os" and "architecture"`);
  }
  const p: Platform = { os: v.os, architecture: v.architecture };
  if (typeof v.variant === 'string' && v.variant !== '') p.variant = v.variant;
  if (typeof v['os.version'] === 'string') p['os.version'] = v['os.version'];
  if (Array.isArray(v['os.features'])) p['os.features'] = v['os.features'].filter((f): f is string => typeof f === 'string');
  return p;
}

export function parseDescriptor(v: unknown, where: string): Descriptor {
  if (!isObject(v)) throw new ManifestError(`${where}: a descriptor must be an object`);
  if (typeof v.mediaType !== 'string' || v.mediaType === '') throw new ManifestError(`${where}: descriptor without "mediaType"`);
  if (!isDigest(v.digest)) {
    throw new ManifestError(`${where}: digest ${JSON.stringify(v.digest)} is not a sha256 digest (the only algorithm tocfs supports)`);
  }
  if (typeof v.size !== 'number' || !Number.isSafeInteger(v.size) || v.size < 0) {
    throw new ManifestError(`${where}: size ${JSON.stringify(v.size)} must be a non-negative integer`);
  }
  const d: Descriptor = { mediaType: v.mediaType, digest: v.digest, size: v.size };
  const annotations = stringRecord(v.annotations, where);
  if (annotations) d.annotations = annotations;
  if (Array.isArray(v.urls)) d.urls = v.urls.filter((u): u is string => typeof u === 'string');
  const platform = parsePlatform(v.platform, where);
  if (platform) d.platform = platform;
  if (typeof v.artifactType === 'string') d.artifactType = v.artifactType;
  return d;
}

/**
 * Parse a manifest or index. The type comes from the document's `mediaType`, else the Content-Type, else the
 * shape (`manifests` vs `layers`); a document whose `mediaType` contradicts the Content-Type is rejected.
 */
export function parseManifest(bytes: Uint8Array, contentType: string | undefined, what: string): Manifest {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch (err) {
    throw new ManifestError(`${what}: not valid JSON`, { cause: err });
  }
  if (!isObject(doc)) throw new ManifestError(`${what}: not a JSON object`);
  if (doc.schemaVersion !== 2) {
    throw new ManifestError(`${what}: schemaVersion ${JSON.stringify(doc.schemaVersion)} is not supported (only 2; ` +
      'Docker schema1 images must be converted, e.g. by pushing them again with a current tool)');
  }
  const header = contentType?.split(';')[0]?.trim();
  const declared = typeof doc.mediaType === 'string' && doc.mediaType !== '' ? doc.mediaType : undefined;
  if (declared && header && header !== declared && (MANIFEST_TYPES.has(header) || INDEX_TYPES.has(header))) {
    throw new ManifestError(`${what}: the document says mediaType ${declared} but the registry sent Content-Type ${header}`);
  }
  let mediaType = declared ?? (header && (MANIFEST_TYPES.has(header) || INDEX_TYPES.has(header)) ? header : undefined);
  if (!mediaType) mediaType = Array.isArray(doc.manifests) ? MediaType.OciIndex : MediaType.OciManifest;
  const annotations = stringRecord(doc.annotations, what);
  if (INDEX_TYPES.has(mediaType)) {
    if (!Array.isArray(doc.manifests)) throw new ManifestError(`${what}: an index needs a "manifests" array`);
    const manifests = doc.manifests.map((m, i) => parseDescriptor(m, `${what}: manifests[${i}]`));
    return { kind: 'index', mediaType, manifests, ...(annotations ? { annotations } : {}) };
  }
  if (!MANIFEST_TYPES.has(mediaType)) throw new ManifestError(`${what}: unsupported manifest media type ${mediaType}`);
  if (!Array.isArray(doc.layers)) throw new ManifestError(`${what}: an image manifest needs a "layers" array`);
  const m: ImageManifest = {
    kind: 'manifest',
    mediaType,
    config: parseDescriptor(doc.config, `${what}: config`),
    layers: doc.layers.map((l, i) => parseDescriptor(l, `${what}: layers[${i}]`)),
  };
  if (annotations) m.annotations = annotations;
  if (doc.subject !== undefined) m.subject = parseDescriptor(doc.subject, `${what}: subject`);
  return m;
}

const ARCH_FROM_NODE: Record<string, string> = {
  x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64',
  loong64: 'loong64', mips: 'mips', mipsel: 'mipsle', mips64el: 'mips64le',
};

/** The platform this process runs on, with OCI names (linux/amd64, linux/arm64/v8, linux/arm/v7, ...). */
export function hostPlatform(): Platform {
  const architecture = ARCH_FROM_NODE[process.arch] ?? process.arch;
  const p: Platform = { os: 'linux', architecture };
  if (architecture === 'arm64') p.variant = 'v8';
  if (architecture === 'arm') {
    const v = (process.config.variables as Record<string, unknown>).arm_version;
    p.variant = `v${typeof v === 'string' || typeof v === 'number' ? v : '7'}`;
  }
  return p;
}

/** Variants acceptable for a wanted platform, best first ('' = no variant given). */
function acceptableVariants(want: Platform): string[] {
  const v = want.variant ?? '';
  if (want.architecture === 'arm64') return v === '' || v === 'v8' ? ['v8', ''] : [v, 'v8', ''];
  if (want.architecture === 'arm') {
    const n = Number(v.replace(/^v/, '')) || 7;
    const list: string[] = [];
    for (let i = n; i >= 5; i--) list.push(`v${i}`);
    return [...list, ''];
  }
  if (want.architecture === 'amd64') return v === '' ? ['', 'v1'] : [v, ''];
  return v === '' ? [''] : [v, ''];
}

/**
 * Instances of an index that run on `want`, best first (variant preference, then index order). Entries for
 * other OSes and architectures, and attestation manifests (os "unknown"), are left out.
 */
export function matchPlatform(index: ImageIndex, want: Platform): Descriptor[] {
  const variants = acceptableVariants(want);
  const ranked: { d: Descriptor; rank: number; pos: number }[] = [];
  index.manifests.forEach((d, pos) => {
    if (!d.platform || !MANIFEST_TYPES.has(d.mediaType)) return;
    if (d.platform.os !== want.os || d.platform.architecture !== want.architecture) return;
    const rank = variants.indexOf(d.platform.variant ?? '');
    if (rank >= 0) ranked.push({ d, rank, pos });
  });
  ranked.sort((a, b) => a.rank - b.rank || a.pos - b.pos);
  return ranked.map((r) => r.d);
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/** Like matchPlatform but fails with a list of what the index offers. */
export function selectPlatform(index: ImageIndex, want: Platform, what: string): Descriptor[] {
  const found = matchPlatform(index, want);
  if (found.length === 0) {
    const offered = index.manifests.map((d) => (d.platform ? formatPlatform(d.platform) : '(no platform)')).join(', ');
    throw new PlatformNotFoundError(`${what}: no image for ${formatPlatform(want)} in the index (it has: ${offered || 'nothing'})`);
  }
  return found;
}

/** The parts of an image config tocfs needs; `raw` keeps the rest. */
export interface ImageConfig {
  os?: string;
  architecture?: string;
  variant?: string;
  /** rootfs.diff_ids: the uncompressed digests of the layers, in order. */
  diffIds: Digest[];
  raw: Json;
}

export function parseImageConfig(bytes: Uint8Array, what: string): ImageConfig {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch (err) {
    throw new ManifestError(`${what}: the image config is not valid JSON`, { cause: err });
  }
  if (!isObject(doc)) throw new ManifestError(`${what}: the image config is not a JSON object`);
  const rootfs = doc.rootfs;
  const ids = isObject(rootfs) && Array.isArray(rootfs.diff_ids) ? rootfs.diff_ids : [];
  const diffIds = ids.map((id, i) => {
    if (!isDigest(id)) throw new ManifestError(`${what}: rootfs.diff_ids[${i}] ${JSON.stringify(id)} is not a sha256 digest`);
    return id;
  });
  const c: ImageConfig = { diffIds, raw: doc };
  if (typeof doc.os === 'string') c.os = doc.os;
  if (typeof doc.architecture === 'string') c.architecture = doc.architecture;
  if (typeof doc.variant === 'string') c.variant = doc.variant;
  return c;
}
