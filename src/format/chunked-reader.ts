import { constants } from 'node:buffer';
import { createHash } from 'node:crypto';
import { sha256Digest, type Digest } from '../util/index.js';
import {
  checkSections, parseChunkedAnnotations, MAX_TOC_SIZE, type BlobSection, type ChunkedAnnotations,
} from './annotations.js';
import { formatError, type FormatErrorCode } from './errors.js';
import { buildLayerToc, LIMITS, type LayerChunk, type LayerFile, type LayerToc } from './layer-toc.js';
import { decodeToc, firstMetadataDifference, type TocEntry } from './metadata.js';
import { decodeTarSplit, headersFromTarSplit, rebuildTar, tarSizeFromTarSplit, type TarSplitEntry } from './tarsplit.js';
import { decompressFrames } from './zstd.js';

/**
 * Random access to one compressed blob. This is the only way the format code touches layer bytes, so the same
 * logic serves a local file, a registry blob, or a cache.
 */
export interface BlobReader {
  readonly size: number;
  /** Bytes [start, end) of the blob; fewer bytes is an error of the reader. */
  read(start: number, end: number): Promise<Buffer>;
}

/** A zstd:chunked layer whose TOC (and tar-split) were fetched, authenticated, parsed and validated. */
export interface ChunkedLayer {
  annotations: ChunkedAnnotations;
  toc: LayerToc;
  /** The decompressed TOC JSON, as authenticated. */
  tocJson: string;
  tarSplit?: TarSplitEntry[];
  /** Exact size of the uncompressed tar, known only with a tar-split. */
  diffSize?: number;
}

/** c/storage streams tar-splits without a limit; we cap them so a hostile annotation cannot exhaust memory. */
export const MAX_TARSPLIT_SIZE = 1 << 30;
/** The decompressed tar-split becomes one JS string: beyond V8's string limit that would throw a plain Error. */
const MAX_TARSPLIT_TEXT = Math.min(MAX_TARSPLIT_SIZE, constants.MAX_STRING_LENGTH);
/** Largest gap between TOC and tar-split that is still fetched with a single read. */
const ADJACENT_GAP = 1 << 16;

function sectionsOf(a: ChunkedAnnotations): { start: number; end: number } {
  const end = a.tarSplit ? Math.max(a.toc.offset + a.toc.compressed, a.tarSplit.offset + a.tarSplit.compressed) : a.toc.offset + a.toc.compressed;
  const start = a.tarSplit ? Math.min(a.toc.offset, a.tarSplit.offset) : a.toc.offset;
  return { start, end };
}

function slice(all: Buffer, base: number, s: BlobSection): Buffer {
  return all.subarray(s.offset - base, s.offset - base + s.compressed);
}

/** The compressed TOC and tar-split of a layer, as read from its blob (not verified yet). */
export interface LayerSections {
  annotations: ChunkedAnnotations;
  tocZ: Buffer;
  tarSplitZ?: Buffer;
}

/**
 * Read the TOC and tar-split sections a layer's annotations describe: one read covers both (writers put them next
 * to each other). This is the I/O half of opening a layer; layerFromSections is the CPU half (the daemon runs it in
 * a worker thread).
 */
export async function readLayerSections(blob: BlobReader, annotations: Readonly<Record<string, string>>): Promise<LayerSections> {
  const a = parseChunkedAnnotations(annotations);
  checkSections(a, blob.size);
  if (a.tarSplit && a.tarSplit.compressed > MAX_TARSPLIT_SIZE) {
    throw formatError('TOC_TOO_LARGE', `tar-split of ${a.tarSplit.compressed} compressed bytes exceeds the ${MAX_TARSPLIT_SIZE}-byte limit`);
  }
  // Annotations that place the sections far apart would make a single read fetch (and hold) the blob in between,
  // so such sections are read one by one.
  const span = sectionsOf(a);
  const adjacent = span.end - span.start <= a.toc.compressed + (a.tarSplit?.compressed ?? 0) + ADJACENT_GAP;
  const bytes = adjacent ? await blob.read(span.start, span.end) : undefined;
  const section = async (s: BlobSection) => (bytes ? slice(bytes, span.start, s) : blob.read(s.offset, s.offset + s.compressed));
  const tocZ = await section(a.toc);
  return { annotations: a, tocZ, ...(a.tarSplit ? { tarSplitZ: await section(a.tarSplit) } : {}) };
}

/**
 * Open a layer from its descriptor annotations: the TOC must hash to the annotated digest before it is even
 * decompressed, the tar-split to the TOC's tarSplitDigest, and both must describe the same files (c/storage's
 * ensureTOCMatchesTarSplit).
 */
export async function openChunkedLayer(blob: BlobReader, annotations: Readonly<Record<string, string>>): Promise<ChunkedLayer> {
  return layerFromSections(await readLayerSections(blob, annotations));
}

/** Verify, decompress (bounded by the declared sizes), parse and cross-check a layer's TOC and tar-split. */
export async function layerFromSections(sections: LayerSections): Promise<ChunkedLayer> {
  const a = sections.annotations;
  const { toc, tocJson } = tocFromBytes(sections.tocZ, a);
  const layer: ChunkedLayer = { annotations: a, toc, tocJson };
  if (toc.tarSplitDigest === undefined) return layer;
  if (!a.tarSplit || !sections.tarSplitZ) throw noTarSplitSection();
  const tsZ = sections.tarSplitZ;
  checkTarSplitDigest(toc, a, sha256Digest(tsZ));
  const tarSplit = decodeTarSplitSection(tsZ, a.tarSplit);
  await ensureTocMatchesTarSplit(toc, tarSplit);
  layer.tarSplit = tarSplit;
  layer.diffSize = tarSizeFromTarSplit(tarSplit);
  return layer;
}

/**
 * What the TOC cross-check needs from a layer's tar-split, worked out without the TOC, so that it can run on a
 * second thread while the TOC is decoded (openToc in layer/worker.ts: a 30k-file layer's tar-split takes longer than
 * its TOC). Nothing in it may be believed before `digest` matches the TOC's tarSplitDigest (checkTarSplitFacts).
 */
export interface TarSplitFacts {
  /** sha256 of the compressed section. */
  digest: Digest;
  /** The tar headers it records (headersFromTarSplit), absent when it could not be read. */
  headers?: TocEntry[];
  /** Size of the uncompressed tar. */
  diffSize?: number;
  /** Why it could not be read: reported only once the digest is known to match, as layerFromSections does. */
  error?: { code: string; message: string };
}

export async function tarSplitFacts(tsZ: Uint8Array, a: ChunkedAnnotations): Promise<TarSplitFacts> {
  const digest = sha256Digest(tsZ);
  try {
    if (!a.tarSplit) throw noTarSplitSection();
    const tarSplit = decodeTarSplitSection(tsZ, a.tarSplit);
    return { digest, headers: await headersFromTarSplit(tarSplit), diffSize: tarSizeFromTarSplit(tarSplit) };
  } catch (err) {
    const e = err as Error & { code?: unknown };
    return { digest, error: { code: typeof e.code === 'string' ? e.code : 'TARSPLIT_INVALID', message: e.message } };
  }
}

/**
 * The second half of layerFromSections for a tar-split read apart (tarSplitFacts): the same checks in the same
 * order, with the same errors. Returns the uncompressed tar size.
 */
export function checkTarSplitFacts(toc: LayerToc, a: ChunkedAnnotations, facts: TarSplitFacts): number {
  if (toc.tarSplitDigest === undefined) throw formatError('TARSPLIT_INVALID', 'the TOC names no tar-split digest');
  if (!a.tarSplit) throw noTarSplitSection();
  checkTarSplitDigest(toc, a, facts.digest);
  if (facts.error || !facts.headers || facts.diffSize === undefined) {
    throw formatError((facts.error?.code ?? 'TARSPLIT_INVALID') as FormatErrorCode, facts.error?.message ?? 'the tar-split could not be read');
  }
  ensureTocMatchesHeaders(toc, facts.headers);
  return facts.diffSize;
}

/** The entries of a compressed tar-split section, decompressed no further than its annotation declares. */
function decodeTarSplitSection(tsZ: Uint8Array, section: BlobSection): TarSplitEntry[] {
  return decodeTarSplit(decompressFrames(tsZ, declaredBound(section.uncompressed, MAX_TARSPLIT_TEXT), 'tar-split').toString('utf8'));
}

function noTarSplitSection(): Error {
  return formatError('ANNOTATION_INVALID', 'the TOC requires a tar-split, but the tarsplit-position annotation does not describe one');
}

function checkTarSplitDigest(toc: LayerToc, a: ChunkedAnnotations, actual: Digest): void {
  if (actual !== toc.tarSplitDigest) {
    const at = a.tarSplit ? ` at [${a.tarSplit.offset}, ${a.tarSplit.offset + a.tarSplit.compressed})` : '';
    throw formatError('DIGEST_MISMATCH', `tar-split digest mismatch: the TOC says ${toc.tarSplitDigest}, the bytes${at} hash to ${actual}`);
  }
}

/**
 * How far a section may decompress: what its annotation declares (0 means "not declared"), never more than the
 * hard limit. A TOC declared as 4 KiB that expands further is refused at 4 KiB, not at the 150 MiB limit.
 */
function declaredBound(declared: number, limit: number): number {
  return declared > 0 ? Math.min(declared, limit) : limit;
}

/**
 * The TOC from its compressed bytes (the TOC section the annotations describe): they must hash to the annotated
 * digest before they are even decompressed; then decoded and validated.
 */
export function tocFromBytes(tocZ: Buffer, a: ChunkedAnnotations): { toc: LayerToc; tocJson: string } {
  const actual = sha256Digest(tocZ);
  if (actual !== a.tocDigest) {
    throw formatError('DIGEST_MISMATCH', `TOC digest mismatch: the annotation says ${a.tocDigest}, the bytes at [${a.toc.offset}, ${a.toc.offset + a.toc.compressed}) hash to ${actual}`);
  }
  const tocJson = decompressFrames(tocZ, declaredBound(a.toc.uncompressed, MAX_TOC_SIZE), 'TOC').toString('utf8');
  return { toc: buildLayerToc(decodeToc(tocJson), a.tocDigest, a.toc.offset - 8), tocJson };
}

/** Every tar header in the tar-split has a TOC entry with the same metadata, and vice versa. */
export async function ensureTocMatchesTarSplit(toc: LayerToc, tarSplit: readonly TarSplitEntry[]): Promise<void> {
  ensureTocMatchesHeaders(toc, await headersFromTarSplit(tarSplit));
}

function ensureTocMatchesHeaders(toc: LayerToc, headers: readonly TocEntry[]): void {
  const byName = new Map<string, TocEntry>();
  for (const f of toc.files) byName.set(f.name, f.entry);
  for (const h of headers) {
    const t = byName.get(h.name);
    if (!t) throw formatError('TARSPLIT_MISMATCH', `tar-split has an entry for "${h.name}" that the TOC lacks`);
    const diff = firstMetadataDifference(t, h);
    if (diff) throw formatError('TARSPLIT_MISMATCH', `TOC and tar-split disagree on "${h.name}": ${diff}`);
    byName.delete(h.name);
  }
  if (byName.size > 0) {
    throw formatError('TARSPLIT_MISMATCH', `the TOC has ${byName.size} entries the tar-split lacks, e.g. "${byName.keys().next().value}"`);
  }
}

const zeroDigests = new Map<number, Digest>();
const ZERO_PIECE = Buffer.alloc(1 << 20);
const CHECKPOINT = 256 << 20;
/** Hash states after every 256 MiB of zeros: a new size costs at most 256 MiB of hashing beyond what was done. */
const zeroCheckpoints = [createHash('sha256')];

function feedZeros(h: ReturnType<typeof createHash>, n: number): void {
  for (let left = n; left > 0; left -= ZERO_PIECE.length) h.update(ZERO_PIECE.subarray(0, Math.min(left, ZERO_PIECE.length)));
}

/**
 * sha256 of `size` zero bytes, memoised. Sizes beyond LIMITS.maxZeroChunk are refused (buildLayerToc refuses such
 * TOCs already): a "zeros" chunk declaring a terabyte must not cost minutes of hashing. A hole of 1 GiB still costs
 * ~0.5 s of CPU the first time: the daemon asks a worker thread (layer/work.ts), never its FUSE thread.
 */
export function zerosDigest(size: number): Digest {
  let d = zeroDigests.get(size);
  if (d) return d;
  if (!(size >= 0) || size > LIMITS.maxZeroChunk) {
    throw formatError('TOC_INVALID', `a zeros chunk of ${size} bytes exceeds the ${LIMITS.maxZeroChunk}-byte limit`);
  }
  const k = Math.floor(size / CHECKPOINT);
  while (zeroCheckpoints.length <= k) {
    const h = zeroCheckpoints[zeroCheckpoints.length - 1]!.copy();
    feedZeros(h, CHECKPOINT);
    zeroCheckpoints.push(h);
  }
  const h = zeroCheckpoints[k]!.copy();
  feedZeros(h, size - k * CHECKPOINT);
  d = `sha256:${h.digest('hex')}`;
  if (zeroDigests.size < 1024) zeroDigests.set(size, d);
  return d;
}

/** What verifying a chunk needs to know about it. */
export interface ChunkSpec {
  size: number;
  digest: Digest;
  zeros: boolean;
}

function chunkWhere(file: LayerFile, chunk: LayerChunk): string {
  return `"${file.name}" chunk at file offset ${chunk.fileOffset} (blob [${chunk.start}, ${chunk.end}))`;
}

/** A "zeros" chunk's digest must be that of its zeros, or the TOC lies about the file's content. */
function verifyZeros(where: string, chunk: ChunkSpec): void {
  const d = zerosDigest(chunk.size);
  if (d !== chunk.digest) {
    throw formatError('DIGEST_MISMATCH', `${where}: marked zeros, but its digest ${chunk.digest} is not that of ${chunk.size} zero bytes`);
  }
}

/**
 * Turn a chunk's compressed bytes into its verified content; zero chunks need no bytes (pass undefined).
 * `where` names the chunk for a person (file, offsets). Any mismatch is a FormatError; no unverified byte is
 * ever returned.
 */
export function verifyChunkBytes(where: string, chunk: ChunkSpec, compressed: Buffer | undefined): Buffer {
  if (chunk.zeros && compressed === undefined) {
    verifyZeros(where, chunk);
    return Buffer.alloc(chunk.size);
  }
  if (compressed === undefined) throw new TypeError(`${where}: no bytes given for a data chunk`);
  let data: Buffer;
  try {
    data = decompressFrames(compressed, chunk.size, 'the frame', 'prefix');
  } catch (err) {
    throw formatError('DIGEST_MISMATCH', `${where}: cannot decompress: ${(err as Error).message}`, err);
  }
  const actual = sha256Digest(data);
  if (actual !== chunk.digest) {
    throw formatError('DIGEST_MISMATCH', `${where}: content hashes to ${actual}, the TOC says ${chunk.digest}`);
  }
  return data;
}

/** verifyChunkBytes for a chunk of a LayerFile, named by file and offsets. */
export function verifyChunk(file: LayerFile, chunk: LayerChunk, compressed: Buffer | undefined): Buffer {
  const where = chunkWhere(file, chunk);
  return verifyChunkBytes(where, chunk, compressed);
}

/** Read and verify one chunk through a BlobReader. */
export async function readChunk(blob: BlobReader, file: LayerFile, chunk: LayerChunk): Promise<Buffer> {
  if (chunk.zeros) return verifyChunk(file, chunk, undefined);
  return verifyChunk(file, chunk, await blob.read(chunk.start, chunk.end));
}

/**
 * A file's whole content, chunk by chunk, each verified; for chunked files the whole-file digest is checked at
 * the end too (a TOC could pair valid chunks with a wrong file digest).
 */
export async function* readFile(blob: BlobReader, file: LayerFile): AsyncGenerator<Buffer> {
  const whole = file.chunks.length > 1 ? createHash('sha256') : undefined;
  for (const c of file.chunks) {
    if (c.zeros) {
      // Verified once, then handed out in pieces: a hole may be larger than any Buffer can be.
      verifyZeros(chunkWhere(file, c), c);
      for (let left = c.size; left > 0; left -= ZERO_PIECE.length) {
        const piece = Buffer.alloc(Math.min(left, ZERO_PIECE.length));
        whole?.update(piece);
        yield piece;
      }
      continue;
    }
    const data = await readChunk(blob, file, c);
    whole?.update(data);
    yield data;
  }
  if (whole) {
    const d = `sha256:${whole.digest('hex')}`;
    if (d !== file.digest) throw formatError('DIGEST_MISMATCH', `"${file.name}": its chunks verify, but the whole file hashes to ${d}, the TOC says ${file.digest}`);
  }
}

export interface LayerVerification {
  diffID?: Digest;
  diffSize?: number;
  filesRead: number;
  bytesRead: number;
}

/**
 * Read every file through the chunk map, verifying every chunk, and (with a tar-split) rebuild the tar to get
 * the DiffID. This is `tocfs inspect`'s proof that the layer's two views (TOC and tar) agree.
 */
export async function verifyChunkedLayer(blob: BlobReader, layer: ChunkedLayer): Promise<LayerVerification> {
  const byName = new Map<string, LayerFile>();
  for (const f of layer.toc.files) byName.set(f.name, f);
  let filesRead = 0;
  let bytesRead = 0;
  const readAll = async function* (f: LayerFile) {
    filesRead++;
    for await (const b of readFile(blob, f)) {
      bytesRead += b.length;
      yield b;
    }
  };
  if (!layer.tarSplit) {
    for (const f of layer.toc.files) if (f.type === 'reg' && f.size > 0) for await (const _ of readAll(f)) { /* verified */ }
    return { filesRead, bytesRead };
  }
  const rebuilt = await rebuildTar(layer.tarSplit, (name) => {
    const f = byName.get(name);
    if (!f || f.type !== 'reg') throw formatError('TARSPLIT_MISMATCH', `tar-split wants content for "${name}", which is not a regular file in the TOC`);
    return readAll(f);
  });
  return { diffID: rebuilt.diffID, diffSize: rebuilt.size, filesRead, bytesRead };
}
