import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable, Transform } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { DecompressStream } from 'zstd-napi';
import {
  ANNOTATION_PREFETCH, checkSections, cleanAbsPath, formatPrefetchHint, layerKind, parseChunkedAnnotations,
  tocFromBytes, writeZstdChunked, type ChunkedAnnotations, type LayerFileType,
} from '../format/index.js';
import { parseDigest, sha256Digest, TocfsError, type Digest } from '../util/index.js';
import { hostArch, OciLayout, type BlobWriter } from './oci-layout.js';
import {
  MEDIA_DOCKER_CONFIG, MEDIA_LAYER_TAR, MEDIA_LAYER_ZSTD, MEDIA_OCI_CONFIG, MEDIA_OCI_MANIFEST,
  type Descriptor, type ImageConfig, type ImageManifest,
} from './oci-types.js';

export class ConvertError extends TocfsError {}

/** Where an image comes from or goes to. */
export type ImageLocation =
  | { transport: 'oci'; dir: string; tag?: string }
  | { transport: 'tar'; path: string }
  | { transport: 'docker'; ref: string };

/** Parse `oci:<dir>[:<tag>]`, `docker://<ref>`, or a path to a layer tar. */
export function parseImageLocation(s: string): ImageLocation {
  if (s.startsWith('oci:')) {
    const rest = s.slice(4);
    const colon = rest.lastIndexOf(':');
    if (colon > 0 && !rest.slice(colon + 1).includes('/')) {
      return { transport: 'oci', dir: rest.slice(0, colon), tag: rest.slice(colon + 1) };
    }
    if (rest === '') throw new ConvertError('BAD_LOCATION', `"${s}": oci: needs a directory, as in oci:/path/to/layout[:tag]`);
    return { transport: 'oci', dir: rest };
  }
  if (s.startsWith('docker://')) return { transport: 'docker', ref: s.slice('docker://'.length) };
  if (/^[a-z-]+:/.test(s) && !s.startsWith('/') && !s.startsWith('.')) {
    throw new ConvertError('BAD_LOCATION', `"${s}": unknown transport; use oci:<dir>[:<tag>], docker://<ref>, or a tar file path`);
  }
  return { transport: 'tar', path: s };
}

/** Reading side of a conversion. */
export interface ImageSource {
  readonly name: string;
  getImage(): Promise<{ manifest: ImageManifest; configRaw: Buffer }>;
  /** The blob's bytes; the converter checks them against `desc.digest`. */
  openBlob(desc: Descriptor): AsyncIterable<Uint8Array>;
}

/** Writing side of a conversion. */
export interface ImageDestination {
  readonly name: string;
  createBlobWriter(): Promise<BlobWriter>;
  putBlob(data: Buffer): Promise<Digest>;
  /** Store the manifest and name it; returns the manifest's digest. */
  putManifest(raw: Buffer, mediaType: string): Promise<Digest>;
}

export interface LayerProgress {
  layer: number;
  layers: number;
  digest: string;
  /** Bytes of the source blob read so far, and its size. */
  read: number;
  total: number;
}

export interface ConvertOptions {
  level?: number;
  /**
   * Paths a container of the image reads first (absolute, in that order): each becomes part of the prefetch hint
   * of the topmost layer that has it as a regular file (format/prefetch.ts). Replaces hints the source had.
   */
  prefetch?: readonly string[];
  onProgress?: (p: LayerProgress) => void;
}

export interface ConvertedLayer {
  from: Digest;
  to: Digest;
  size: number;
  diffID: Digest;
  tocDigest: string;
  /** False when the layer already was zstd:chunked and was copied as it is. */
  converted: boolean;
}

export interface ConvertReport {
  manifestDigest: Digest;
  configDigest: Digest;
  layers: ConvertedLayer[];
  /** With `prefetch`: paths hinted per layer, and the paths no layer has as a regular file. */
  prefetch?: { hinted: number[]; missing: string[] };
}

/** Convert every layer of an image to zstd:chunked; the config (and so the DiffIDs and image ID) is unchanged. */
export async function convertImage(src: ImageSource, dst: ImageDestination, opts: ConvertOptions = {}): Promise<ConvertReport> {
  const { manifest, configRaw } = await src.getImage();
  const config = JSON.parse(configRaw.toString('utf8')) as ImageConfig;
  const diffIDs = config.rootfs?.diff_ids ?? [];
  if (diffIDs.length !== manifest.layers.length) {
    throw new ConvertError('IMAGE_INVALID', `${src.name}: the config lists ${diffIDs.length} DiffIDs for ${manifest.layers.length} layers`);
  }
  const layers: ConvertedLayer[] = [];
  const newLayers: Descriptor[] = [];
  const files: LayerEntries[] = [];
  for (const [i, desc] of manifest.layers.entries()) {
    const progress = (read: number) => opts.onProgress?.({ layer: i + 1, layers: manifest.layers.length, digest: desc.digest, read, total: desc.size });
    const done = layerKind(desc.annotations) === 'zstd:chunked'
      ? await copyLayer(src, dst, desc, progress, opts.prefetch !== undefined)
      : await convertLayer(src, dst, desc, opts.level, progress);
    files.push(layerEntries(done.files));
    if (done.layer.diffID !== diffIDs[i]) {
      throw new ConvertError('DIFFID_MISMATCH', `${src.name}: layer ${i + 1} (${desc.digest}) uncompresses to ${done.layer.diffID}, but the config says ${diffIDs[i]}`);
    }
    layers.push(done.layer);
    newLayers.push(done.descriptor);
  }
  const prefetch = opts.prefetch ? placeHints(opts.prefetch, files, newLayers) : undefined;
  const configDigest = await dst.putBlob(configRaw);
  const out: ImageManifest = {
    schemaVersion: 2,
    mediaType: MEDIA_OCI_MANIFEST,
    config: { mediaType: manifest.config.mediaType === MEDIA_DOCKER_CONFIG ? MEDIA_OCI_CONFIG : manifest.config.mediaType, digest: configDigest, size: configRaw.length },
    layers: newLayers,
    ...(manifest.annotations ? { annotations: manifest.annotations } : {}),
  };
  const manifestDigest = await dst.putManifest(Buffer.from(JSON.stringify(out)), MEDIA_OCI_MANIFEST);
  return { manifestDigest, configDigest, layers, ...(prefetch ? { prefetch } : {}) };
}

/** What a layer holds at each path, as far as an overlay mount of the image sees it. */
interface LayerEntries {
  types: Map<string, LayerFileType>;
  /** Paths a whiteout (`.wh.<name>`) of this layer hides in lower layers. */
  whiteouts: Set<string>;
  /** Directories an opaque whiteout (`.wh..wh..opq`) of this layer empties of lower layers' content. */
  opaque: Set<string>;
}

function layerEntries(files: readonly { path: string; type: LayerFileType }[]): LayerEntries {
  const out: LayerEntries = { types: new Map(), whiteouts: new Set(), opaque: new Set() };
  for (const f of files) {
    const slash = f.path.lastIndexOf('/');
    const dir = f.path.slice(0, slash) || '/';
    const name = f.path.slice(slash + 1);
    if (name === '.wh..wh..opq') out.opaque.add(dir);
    else if (name.startsWith('.wh.')) out.whiteouts.add(`${dir === '/' ? '' : dir}/${name.slice(4)}`);
    else out.types.set(f.path, f.type);
  }
  return out;
}

/** Whether `layer` decides what a container sees at `path`: it has the path, or hides lower layers' copy. */
function decides(layer: LayerEntries, path: string): boolean {
  if (layer.types.has(path) || layer.whiteouts.has(path)) return true;
  for (let dir = path.slice(0, path.lastIndexOf('/')) || '/'; ; dir = dir.slice(0, dir.lastIndexOf('/')) || '/') {
    const t = layer.types.get(dir);
    if (layer.opaque.has(dir) || layer.whiteouts.has(dir) || (t !== undefined && t !== 'dir')) return true;
    if (dir === '/') return false;
  }
}

/**
 * Give each path to the layer whose copy a container reads (the topmost one that has the path or hides it) if that
 * copy is a regular file, and write the layers' prefetch hints; order is kept within each layer.
 */
function placeHints(paths: readonly string[], files: LayerEntries[], layers: Descriptor[]): { hinted: number[]; missing: string[] } {
  const perLayer: string[][] = layers.map(() => []);
  const missing: string[] = [];
  for (const raw of paths) {
    const path = cleanAbsPath(raw);
    const top = files.findLastIndex((l) => decides(l, path));
    if (top >= 0 && files[top]!.types.get(path) === 'reg') perLayer[top]!.push(path);
    else missing.push(raw);
  }
  layers.forEach((desc, i) => {
    const annotations = { ...desc.annotations };
    delete annotations[ANNOTATION_PREFETCH];
    if (perLayer[i]!.length > 0) annotations[ANNOTATION_PREFETCH] = formatPrefetchHint(perLayer[i]!);
    desc.annotations = annotations;
  });
  return { hinted: perLayer.map((l) => new Set(l).size), missing };
}

/** Hash a compressed stream as it passes, so the source blob is verified against its descriptor. */
function verifying(src: AsyncIterable<Uint8Array>, desc: Descriptor, name: string, onRead: (n: number) => void): AsyncIterable<Uint8Array> {
  return (async function* () {
    const h = createHash('sha256');
    let n = 0;
    for await (const b of src) {
      h.update(b);
      n += b.length;
      onRead(n);
      yield b;
    }
    const d = `sha256:${h.digest('hex')}`;
    if (d !== desc.digest || n !== desc.size) {
      throw new ConvertError('BLOB_CORRUPT', `${name}: blob ${desc.digest} (${desc.size} bytes) read as ${d} (${n} bytes)`);
    }
  })();
}

/** Decompress gzip or zstd, recognised by magic bytes rather than trusting the media type. */
async function* uncompressed(src: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  const it = src[Symbol.asyncIterator]();
  const first = await it.next();
  if (first.done) return;
  const head = Buffer.from(first.value);
  const rest = (async function* () {
    yield head;
    for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
  })();
  let decoder: Transform | undefined;
  if (head[0] === 0x1f && head[1] === 0x8b) decoder = createGunzip();
  else if (head.readUInt32LE(0) === 0xfd2fb528) decoder = new DecompressStream();
  if (!decoder) {
    yield* rest;
    return;
  }
  yield* Readable.from(rest).pipe(decoder);
}

async function convertLayer(src: ImageSource, dst: ImageDestination, desc: Descriptor, level: number | undefined, onRead: (n: number) => void) {
  const writer = await dst.createBlobWriter();
  try {
    const tar = uncompressed(verifying(src.openBlob(desc), desc, src.name, onRead));
    const result = await writeZstdChunked(tar, (b) => writer.write(b), level === undefined ? {} : { level });
    const { digest, size } = await writer.commit();
    return {
      layer: { from: desc.digest, to: digest, size, diffID: result.diffID, tocDigest: result.tocDigest, converted: true },
      descriptor: { mediaType: MEDIA_LAYER_ZSTD, digest, size, annotations: result.annotations } as Descriptor,
      files: result.files,
    };
  } catch (err) {
    await writer.abort();
    throw err;
  }
}

async function copyLayer(src: ImageSource, dst: ImageDestination, desc: Descriptor, onRead: (n: number) => void, wantFiles: boolean) {
  const writer = await dst.createBlobWriter();
  const diff = createHash('sha256');
  try {
    // The TOC passes by anyway: keep its bytes when the layer's file list is wanted (for prefetch hints).
    const a = wantFiles ? chunkedAnnotations(desc, src.name) : undefined;
    const tocZ = a ? Buffer.alloc(a.toc.compressed) : undefined;
    const blob = verifying(src.openBlob(desc), desc, src.name, onRead);
    const [tee1, tee2] = teeCopy(a && tocZ ? capture(blob, a.toc.offset, tocZ) : blob, writer);
    for await (const b of uncompressed(tee1)) diff.update(b);
    await tee2;
    const { digest, size } = await writer.commit();
    const tocDigest = desc.annotations?.['io.github.containers.zstd-chunked.manifest-checksum'] ?? '';
    const files = a && tocZ ? layerFiles(desc, tocZ, a, src.name) : [];
    return {
      layer: { from: desc.digest, to: digest, size, diffID: `sha256:${diff.digest('hex')}` as Digest, tocDigest, converted: false },
      descriptor: { ...desc } as Descriptor,
      files,
    };
  } catch (err) {
    await writer.abort();
    throw err;
  }
}

/** A kept layer's annotations, its sections checked against the blob's size before any buffer is sized by them. */
function chunkedAnnotations(desc: Descriptor, name: string): ChunkedAnnotations {
  try {
    const a = parseChunkedAnnotations(desc.annotations);
    checkSections(a, desc.size);
    return a;
  } catch (err) {
    throw new ConvertError('LAYER_INVALID', `${name}: layer ${desc.digest}: ${(err as Error).message}`, { cause: err });
  }
}

/** The entries of a kept layer, from its TOC bytes (verified against the annotated digest by tocFromBytes). */
function layerFiles(desc: Descriptor, tocZ: Buffer, a: ChunkedAnnotations, name: string): { path: string; type: LayerFileType }[] {
  try {
    return tocFromBytes(tocZ, a).toc.files.map((f) => ({ path: f.path, type: f.type }));
  } catch (err) {
    throw new ConvertError('LAYER_INVALID', `${name}: layer ${desc.digest}: ${(err as Error).message}`, { cause: err });
  }
}

/** Pass a stream through, copying the bytes at [offset, offset + into.length) into `into`. */
async function* capture(src: AsyncIterable<Uint8Array>, offset: number, into: Buffer): AsyncGenerator<Uint8Array> {
  let pos = 0;
  for await (const b of src) {
    const from = Math.max(offset, pos);
    const to = Math.min(offset + into.length, pos + b.length);
    if (from < to) into.set(b.subarray(from - pos, to - pos), from - offset);
    pos += b.length;
    yield b;
  }
}

/** Pass bytes through while also writing them to `writer`. */
function teeCopy(src: AsyncIterable<Uint8Array>, writer: BlobWriter): [AsyncIterable<Uint8Array>, Promise<void>] {
  let resolve!: () => void;
  const done = new Promise<void>((r) => { resolve = r; });
  const it = (async function* () {
    for await (const b of src) {
      await writer.write(Buffer.from(b));
      yield b;
    }
    resolve();
  })();
  return [it, done];
}

/** An OCI layout as a source. */
export function ociSource(dir: string, tag?: string): ImageSource {
  const layout = new OciLayout(dir);
  return {
    name: `oci:${dir}${tag ? `:${tag}` : ''}`,
    async getImage() {
      const { manifest } = await layout.readImage(tag);
      const configRaw = await layout.readBlob(parseDigest(manifest.config.digest, 'config digest'));
      return { manifest, configRaw };
    },
    openBlob: (desc) => layout.openBlob(desc.digest),
  };
}

/** A single layer tar as an image of one layer, with a minimal deterministic config for this host. */
export function tarSource(path: string): ImageSource {
  return {
    name: path,
    async getImage() {
      const size = (await stat(path)).size;
      const h = createHash('sha256');
      for await (const b of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(b as Buffer);
      const digest = parseDigest(`sha256:${h.digest('hex')}`, path);
      const config: ImageConfig = {
        architecture: hostArch(), os: 'linux',
        config: {},
        rootfs: { type: 'layers', diff_ids: [digest] },
        history: [{ created_by: `tocfs convert ${path}` }],
      };
      const configRaw = Buffer.from(JSON.stringify(config));
      const manifest: ImageManifest = {
        schemaVersion: 2, mediaType: MEDIA_OCI_MANIFEST,
        config: { mediaType: MEDIA_OCI_CONFIG, digest: sha256Digest(configRaw), size: configRaw.length },
        layers: [{ mediaType: MEDIA_LAYER_TAR, digest, size }],
      };
      return { manifest, configRaw };
    },
    openBlob: () => createReadStream(path, { highWaterMark: 1 << 20 }),
  };
}

/** An OCI layout as a destination; the image is named `tag` in index.json. */
export async function ociDestination(dir: string, tag?: string): Promise<ImageDestination> {
  const layout = new OciLayout(dir);
  await layout.init();
  return {
    name: `oci:${dir}${tag ? `:${tag}` : ''}`,
    createBlobWriter: () => layout.createBlobWriter(),
    putBlob: (data) => layout.putBlob(data),
    async putManifest(raw, mediaType) {
      const digest = await layout.putBlob(raw);
      await layout.addToIndex({ mediaType, digest, size: raw.length }, tag);
      return digest;
    },
  };
}
