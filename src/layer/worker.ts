// The worker-thread side of layer/work.ts: every task here grows with its input (TOC size, chunk size, layer size)
// and so must never run on the thread serving FUSE. Loaded by URL from work.ts; not imported by anything.
import { createHash } from 'node:crypto';
import {
  closeSync, existsSync, ftruncateSync, fstatSync, mkdirSync, openSync, readSync, renameSync, rmSync, writeFileSync, writeSync,
} from 'node:fs';
import { threadId, type MessagePort } from 'node:worker_threads';
import { readFile, rm, stat, utimes } from 'node:fs/promises';
import {
  checkTarSplitFacts, cleanAbsPath, decodeTarSplit, decompressFrames, layerFromSections, rebuildTar, tarSplitFacts, tocFromBytes,
  verifyChunkBytes, zerosDigest, type ChunkedAnnotations, type ChunkSpec, type LayerSections, type LayerToc, type TarSplitFacts,
} from '../format/index.js';
import { serveTasks, sha256Digest, TocfsError, transferable, writeStateFile, type TaskContext, type TaskResult } from '../util/index.js';
import type { AssembleResult } from './assembled.js';
import { verifiedChunkFile } from './chunk-file.js';
import { assembledFilePath, chunkFilePath } from './disk-cache.js';
import { planTreeIndex, writeTreeIndex, type TreePlan } from './tree-build.js';
import { nodeAt } from './proof.js';
import { adoptTreeIndex, indexFileBytes, openTreeIndex } from './tree-index.js';
import { LayerTree } from './tree.js';

/** Where a layer's verified tree index and tar-split are kept (per TOC digest). */
export interface IndexFiles {
  index: string;
  tarSplit: string;
}

/** The decompressed tar-split is one JS string: keep it under V8's limit. */
const MAX_TARSPLIT_TEXT = (1 << 29) - 24;
const PIECE = 1 << 20;
/**
 * The proof asks whether to pause (a busy filesystem) after this many bytes. It runs at nice 19 on its own thread,
 * so the kernel already serves FUSE first; the pauses only bound the main-thread work it causes (chunks it must
 * fetch), and per-chunk pauses made a 64 MiB proof beside a busy container take hours.
 */
const PACE_BYTES = 8 << 20;
const ZERO = Buffer.alloc(PIECE);

const asBuffer = (u: Uint8Array): Buffer => Buffer.from(u.buffer, u.byteOffset, u.length);

/**
 * Verify, decompress, parse and cross-check a layer's TOC and tar-split, build its tree index, and keep both on disk
 * (tar-split first: an index file on disk always has its tar-split). Returns the index's shared buffer.
 *
 * With `port`, a second task (tarSplitFacts, below) reads the tar-split on another worker meanwhile and posts what
 * the cross-check needs there: podman waits for this while the TOC and the tar-split of a 30k-file layer take
 * ~0.35 s and ~0.55 s of CPU. Waiting on the port yields this worker, so the pair also completes on a single one.
 */
async function openToc(input: { sections: LayerSections; files?: IndexFiles; port?: MessagePort }): Promise<TaskResult> {
  const s = input.sections;
  const sections: LayerSections = {
    annotations: s.annotations, tocZ: asBuffer(s.tocZ), ...(s.tarSplitZ ? { tarSplitZ: asBuffer(s.tarSplitZ) } : {}),
  };
  const facts = input.port ? factsFrom(input.port) : undefined;
  // Not awaited when the TOC fails first: closing the port then rejects it, which must not crash this worker.
  facts?.catch(() => {});
  let toc: LayerToc;
  let plan: TreePlan | undefined;
  let diffSize: number | undefined;
  try {
    if (facts) {
      toc = tocFromBytes(sections.tocZ, sections.annotations).toc;
      if (toc.tarSplitDigest !== undefined && sections.tarSplitZ) {
        // The tree's plan needs the TOC alone: it fills the wait for the tar-split. Nothing leaves this task unless
        // the check below passes.
        plan = planTreeIndex(toc);
        diffSize = checkTarSplitFacts(toc, sections.annotations, await facts);
      }
    } else {
      const layer = await layerFromSections(sections);
      toc = layer.toc;
      diffSize = layer.tarSplit ? layer.diffSize : undefined;
    }
  } finally {
    input.port?.close();
  }
  if (diffSize === undefined || !toc.tarSplitDigest || !sections.tarSplitZ) {
    throw new TocfsError('NO_TARSPLIT', 'the layer has no tar-split (written before c/storage 1.54?): its exact tar cannot be proven, so podman pulls it normally');
  }
  const index = writeTreeIndex(plan ?? planTreeIndex(toc), { tocDigest: toc.tocDigest, diffSize, tarSplitDigest: toc.tarSplitDigest });
  let saved = false;
  if (input.files) {
    try {
      await writeStateFile(input.files.tarSplit, sections.tarSplitZ);
      await writeStateFile(input.files.index, indexFileBytes(index));
      saved = true;
    } catch {
      // Only costs a TOC fetch after the next restart; the proof then reports the missing tar-split.
    }
  }
  return { value: { buffer: index.buffer, saved } };
}

/**
 * What the tarSplitFacts task posts on `port`; rejects if its worker ends without posting (TARSPLIT_UNANSWERED:
 * LayerWork.openToc then reports why that task ended).
 */
function factsFrom(port: MessagePort): Promise<TarSplitFacts> {
  return new Promise((resolve, reject) => {
    port.once('message', (m: TarSplitFacts) => resolve(m));
    port.once('close', () => reject(new TocfsError('TARSPLIT_UNANSWERED', 'the worker reading the tar-split ended before it answered')));
  });
}

/** The tar-split half of openToc, posted on `port` (unverified: openToc checks its digest against the TOC first). */
async function tarSplitFactsTask(input: { annotations: ChunkedAnnotations; tarSplitZ: Uint8Array; port: MessagePort }): Promise<TaskResult> {
  input.port.postMessage(await tarSplitFacts(input.tarSplitZ, input.annotations));
  return { value: undefined };
}

/** A tree index kept by an earlier run, checked (size, checksum, TOC digest, tar-split present); undefined if unusable. */
async function loadIndex(input: { files: IndexFiles; tocDigest: string }): Promise<TaskResult> {
  let bytes: Buffer;
  try {
    bytes = await readFile(input.files.index);
    await stat(input.files.tarSplit);
  } catch {
    return { value: undefined };
  }
  try {
    const index = openTreeIndex(bytes, input.files.index);
    if (index.meta.tocDigest !== input.tocDigest) throw new Error(`names TOC ${index.meta.tocDigest}`);
    // In use: `tocfs gc` keeps trees by when they were last loaded.
    const now = new Date();
    await utimes(input.files.index, now, now).catch(() => {});
    return { value: index.buffer };
  } catch {
    // Torn or from another version: rebuilt from the TOC (and written again).
    await rm(input.files.index, { force: true }).catch(() => {});
    return { value: undefined };
  }
}

function verifyChunk(input: { where: string; spec: ChunkSpec; compressed: Uint8Array }): TaskResult {
  const data = verifyChunkBytes(input.where, input.spec, asBuffer(input.compressed));
  return { value: data, transfer: transferable(data) };
}

/** Numbers this worker's temporary file names (chunk files, assembled files). */
let tmpSeq = 0;
/** Subdirectories of disk caches this worker knows exist. */
const knownDirs = new Set<string>();

/**
 * Write verified chunks into a disk cache (see DiskCache.put): each through a temporary file renamed into place, no
 * fsync. `data` holds them back to back. Returns, per chunk, undefined or why it could not be written.
 */
function writeChunkFiles(input: { dir: string; hexes: string[]; lengths: number[]; data: Uint8Array }): TaskResult {
  let offset = 0;
  const errors = input.hexes.map((hex, k) => {
    const bytes = input.data.subarray(offset, offset + input.lengths[k]!);
    offset += input.lengths[k]!;
    try {
      writeChunkFile(input.dir, hex, bytes);
      return undefined;
    } catch (err) {
      return (err as Error).message;
    }
  });
  return { value: errors };
}

function writeChunkFile(dir: string, hex: string, bytes: Uint8Array, retry = true): void {
  const final = chunkFilePath(dir, hex);
  const sub = final.slice(0, final.lastIndexOf('/'));
  const tmp = `${sub}/.tmp-${process.pid}-${threadId}-${tmpSeq++}`;
  try {
    if (!knownDirs.has(sub)) {
      mkdirSync(sub, { recursive: true, mode: 0o700 });
      knownDirs.add(sub);
    }
    writeFileSync(tmp, bytes, { mode: 0o600 });
    renameSync(tmp, final);
  } catch (err) {
    rmSync(tmp, { force: true });
    // The subdirectory was removed behind our back (by hand): create it again, once.
    if (retry && (err as NodeJS.ErrnoException).code === 'ENOENT' && knownDirs.delete(sub)) return writeChunkFile(dir, hex, bytes, false);
    throw err;
  }
}

function readChunkFile(input: { path: string; hex: string }): TaskResult {
  const data = verifiedChunkFile(input.path, input.hex);
  if (data === 'missing') return { value: { missing: true } };
  if (data === 'corrupt') return { value: { corrupt: true } };
  return { value: { data }, transfer: transferable(data) };
}

/** SHA-256 (hex) of a whole file, read in pieces; undefined if it cannot be read or is not `size` bytes. */
function hashFile(path: string, size: number): string | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return undefined;
  }
  try {
    if (fstatSync(fd).size !== size) return undefined;
    const h = createHash('sha256');
    const buf = Buffer.allocUnsafe(PIECE * 8);
    for (let at = 0; at < size;) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, size - at), at);
      if (n <= 0) return undefined;
      h.update(buf.subarray(0, n));
      at += n;
    }
    return h.digest('hex');
  } finally {
    closeSync(fd);
  }
}

/**
 * Write the complete content of regular file `node` to `<cacheDir>/files/<hex>` for FUSE passthrough, from verified
 * chunks only: each chunk file is hashed against its TOC digest as it is read, zero chunks are checked against the
 * digest of their zeros, chunks must tile the file exactly, and the whole content must hash to the TOC's file digest
 * `hex` before the temporary file is renamed into place. A copy already there (an earlier run's) is hashed in full
 * instead: this process serves no byte of it unchecked. No fsync: every process checks a copy before its first use.
 */
function assembleFile(input: { buffer: SharedArrayBuffer; node: number; cacheDir: string; hex: string }): TaskResult {
  const tree = new LayerTree(adoptTreeIndex(input.buffer));
  const { node, cacheDir, hex } = input;
  const size = tree.sizeOf(node);
  const dest = assembledFilePath(cacheDir, hex);
  const done = (r: AssembleResult): TaskResult => ({ value: r });
  if (existsSync(dest)) {
    if (hashFile(dest, size) === hex) return done({ state: 'reused', bytes: size });
    rmSync(dest, { force: true }); // torn by a crash, or damaged: made again below
  }
  const count = tree.chunkCount(node);
  let missing = 0;
  for (let i = 0; i < count; i++) {
    const c = tree.chunk(node, i);
    if (!c.zeros && !existsSync(chunkFilePath(cacheDir, c.digest.slice(7)))) missing++;
  }
  if (missing > 0) return done({ state: 'missing', missing });
  const tmp = assembledFilePath(cacheDir, `.tmp-${process.pid}-${threadId}-${tmpSeq++}`);
  const fd = openSync(tmp, 'wx', 0o600);
  let result: AssembleResult | undefined;
  try {
    const whole = createHash('sha256');
    let at = 0;
    for (let i = 0; i < count && !result; i++) {
      const c = tree.chunk(node, i);
      if (c.fileOffset !== at) {
        result = { state: 'mismatch', why: `chunk ${i} starts at ${c.fileOffset}, not where the previous one ended (${at})` };
      } else if (c.zeros) {
        if (zerosDigest(c.size) !== c.digest) result = { state: 'mismatch', why: `zeros chunk ${i}'s digest ${c.digest} is not that of ${c.size} zero bytes` };
        for (let left = c.size; left > 0 && !result; left -= PIECE) whole.update(ZERO.subarray(0, Math.min(left, PIECE)));
      } else {
        const data = verifiedChunkFile(chunkFilePath(cacheDir, c.digest.slice(7)), c.digest.slice(7));
        if (data === 'missing') result = { state: 'missing', missing: 1 };
        else if (data === 'corrupt' || data.length !== c.size) result = { state: 'corrupt', digest: c.digest };
        else {
          for (let off = 0; off < data.length;) off += writeSync(fd, data, off, data.length - off, c.fileOffset + off);
          whole.update(data);
        }
      }
      at += c.size;
    }
    if (!result && at !== size) result = { state: 'mismatch', why: `its chunks cover ${at} bytes of ${size}` };
    if (!result) {
      ftruncateSync(fd, size); // a trailing hole
      const actual = whole.digest('hex');
      if (actual !== hex) result = { state: 'mismatch', why: `its verified chunks hash to sha256:${actual}, not to the file digest sha256:${hex} the TOC names` };
    }
  } finally {
    closeSync(fd);
    if (result) rmSync(tmp, { force: true });
  }
  if (result) return done(result);
  renameSync(tmp, dest);
  return done({ state: 'assembled', bytes: size });
}

/** What the proof task asks the main thread for. */
export type ProofRequest = { kind: 'pace' } | { kind: 'chunk'; node: number; index: number };

/**
 * The DiffID proof (design.md §5): rebuild the layer's tar from its tar-split and verified contents and hash it.
 * Chunks come from the disk cache (re-verified here) or, when missing, from the main thread, which fetches and
 * verifies them like any read. Before every piece the main thread may hold the proof back (a busy filesystem).
 */
async function prove(input: { buffer: SharedArrayBuffer; tarSplitFile: string; cacheDir?: string }, ctx: TaskContext): Promise<TaskResult> {
  const tree = new LayerTree(adoptTreeIndex(input.buffer));
  const want = tree.meta.tarSplitDigest;
  const tsZ = await readFile(input.tarSplitFile).catch((err: NodeJS.ErrnoException) => {
    throw new TocfsError('TARSPLIT_MISSING', `the tar-split kept at ${input.tarSplitFile} cannot be read (${err.code ?? err.message}); it is fetched again after a restart`);
  });
  if (sha256Digest(tsZ) !== want) {
    await rm(input.tarSplitFile, { force: true }).catch(() => {});
    throw new TocfsError('TARSPLIT_MISSING', `the tar-split kept at ${input.tarSplitFile} does not hash to ${want} (removed; fetched again after a restart)`);
  }
  const tarSplit = decodeTarSplit(decompressFrames(tsZ, MAX_TARSPLIT_TEXT, 'tar-split').toString('utf8'));
  const chunkOf = async (node: number, index: number): Promise<Buffer> => {
    const c = tree.chunk(node, index);
    if (input.cacheDir) {
      const data = verifiedChunkFile(chunkFilePath(input.cacheDir, c.digest.slice(7)), c.digest.slice(7));
      if (typeof data !== 'string') return data;
    }
    return asBuffer(await ctx.request<Uint8Array>({ kind: 'chunk', node, index } satisfies ProofRequest));
  };
  let sincePace = 0;
  const rebuilt = await rebuildTar(tarSplit, (name, size) => {
    const path = cleanAbsPath(name);
    const node = nodeAt(tree, path);
    if (node === undefined) throw new TocfsError('PROOF_FAILED', `the tar-split names "${name}", which is not in the layer tree`);
    return (async function* () {
      let sent = 0;
      for (let i = 0; i < tree.chunkCount(node) && sent < size; i++) {
        if (sincePace >= PACE_BYTES) {
          sincePace = 0;
          await ctx.request({ kind: 'pace' } satisfies ProofRequest);
        }
        const c = tree.chunk(node, i);
        sincePace += c.size;
        if (c.zeros) {
          if (zerosDigest(c.size) !== c.digest) throw new TocfsError('PROOF_FAILED', `"${path}": a zeros chunk's digest ${c.digest} is not that of ${c.size} zero bytes`);
          for (let left = c.size; left > 0; left -= PIECE) yield ZERO.subarray(0, Math.min(left, PIECE));
        } else {
          yield await chunkOf(node, i);
        }
        sent += c.size;
      }
    })();
  });
  return { value: rebuilt };
}

serveTasks({
  openToc: openToc as (input: never) => Promise<TaskResult>,
  tarSplitFacts: tarSplitFactsTask as (input: never) => Promise<TaskResult>,
  loadIndex: loadIndex as (input: never) => Promise<TaskResult>,
  verifyChunk: verifyChunk as (input: never) => TaskResult,
  readChunkFile: readChunkFile as (input: never) => TaskResult,
  writeChunkFiles: writeChunkFiles as (input: never) => TaskResult,
  assembleFile: assembleFile as (input: never) => TaskResult,
  zerosDigest: ((input: { size: number }) => ({ value: zerosDigest(input.size) })) as (input: never) => TaskResult,
  prove: prove as (input: never, ctx: TaskContext) => Promise<TaskResult>,
});
