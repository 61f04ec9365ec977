import { createHash } from 'node:crypto';
import type { Digest } from '../util/index.js';
import { Crc64 } from './crc64.js';
import { formatError } from './errors.js';
import { goQuote } from './gojson.js';
import { entryFromHeader, exceedsCount, MAX_TOC_ENTRIES, type TocEntry } from './metadata.js';
import { goClean } from './paths.js';
import { blockPadding, isValidUtf8, readEntryHeader } from './tar.js';

/** One line of tar-split (vbatts/tar-split storage.Entry). */
export type TarSplitEntry =
  | { type: 'segment'; payload: Buffer }
  | { type: 'file'; name: string; nameRaw?: Buffer; size: number; crc: Buffer | null };

const SEGMENT = 2;
const FILE = 1;

/** The JSON line tar-split's packer writes for `e` at `position` (Go's json.Encoder: one object and "\n"). */
export function encodeTarSplitLine(e: TarSplitEntry, position: number): string {
  if (e.type === 'segment') return `{"type":${SEGMENT},"payload":"${e.payload.toString('base64')}","position":${position}}\n`;
  const name = e.nameRaw && !isValidUtf8(e.nameRaw)
    ? `"name_raw":"${e.nameRaw.toString('base64')}"`
    : e.name !== '' ? `"name":${goQuote(e.name)}` : '';
  const size = e.size ? `"size":${e.size},` : '';
  const payload = e.crc === null ? 'null' : `"${e.crc.toString('base64')}"`;
  return `{"type":${FILE},${name ? name + ',' : ''}${size}"payload":${payload},"position":${position}}\n`;
}

/**
 * tar-split's JSON packer: numbers the lines and refuses a second file entry whose cleaned name was already seen
 * (its ErrDuplicatePath), since such a tar cannot be reassembled unambiguously.
 */
export class TarSplitPacker {
  private position = 0;
  private readonly seen = new Set<string>();

  line(e: TarSplitEntry): string {
    if (e.type === 'file') {
      const clean = goClean(e.name);
      if (this.seen.has(clean)) throw formatError('TAR_INVALID', `the tar has two entries for "${e.name}" (duplicate path)`);
      this.seen.add(clean);
    }
    return encodeTarSplitLine(e, this.position++);
  }
}

function tsError(line: number, msg: string): Error {
  return formatError('TARSPLIT_INVALID', `invalid tar-split line ${line}: ${msg}`);
}

/**
 * Most lines a tar-split may have: one header segment and one file entry per tar entry (at most as many as a TOC
 * may have), plus the archive's tail (end blocks and padding, in segments of up to 1 MiB). A line costs ~200 bytes
 * of heap once parsed, so without this a few hundred KiB of compressed "{}" lines would fill a TOC worker's heap
 * for a minute (45 M lines: 75 s and 4 GB of memory before the worker ran out).
 */
const MAX_TARSPLIT_LINES = 2 * MAX_TOC_ENTRIES + 4096;

/** An absent payload: one shared empty buffer rather than one per line. */
const EMPTY = Buffer.alloc(0);

/**
 * Parse decompressed tar-split JSON lines. Positions are ignored, as tar-split's unpacker does. Lines are taken one
 * at a time (no array of every line): memory grows with what is kept, in small steps a heap limit can stop.
 */
export function decodeTarSplit(text: string): TarSplitEntry[] {
  // Counted before any is parsed: refusing 8 M lines takes ~0.1 s this way, ~6 s after parsing them.
  if (hasMoreLines(text, MAX_TARSPLIT_LINES)) {
    throw formatError('TARSPLIT_INVALID', `the tar-split has more than ${MAX_TARSPLIT_LINES} lines (two per tar entry, for at most ` +
      `${MAX_TOC_ENTRIES} entries): not a layer this tool serves; podman pulls it normally`);
  }
  const out: TarSplitEntry[] = [];
  const seen = new Set<string>();
  for (let start = 0; start < text.length;) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    out.push(decodeLine(text.slice(start, end), out.length + 1, seen));
    start = end + 1;
  }
  return out;
}

/** Whether `text` has more than `max` lines: its "\n"s, and a last line without one. */
function hasMoreLines(text: string, max: number): boolean {
  return exceedsCount(text, ['\n'], text === '' || text.endsWith('\n') ? max : max - 1);
}

function decodeLine(l: string, line: number, seen: Set<string>): TarSplitEntry {
  let o: unknown;
  try {
    o = JSON.parse(l);
  } catch {
    throw tsError(line, 'not JSON');
  }
  if (typeof o !== 'object' || o === null) throw tsError(line, 'not an object');
  const r = o as Record<string, unknown>;
  const payload = decodeB64(r.payload, line);
  if (r.type === SEGMENT) return { type: 'segment', payload: payload ?? EMPTY };
  if (r.type !== FILE) throw tsError(line, `unknown type ${JSON.stringify(r.type)}`);
  const size = r.size ?? 0;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw tsError(line, 'bad size');
  let name: string;
  let nameRaw: Buffer | undefined;
  if (typeof r.name === 'string' && r.name !== '') name = r.name;
  else if (r.name_raw !== undefined) {
    nameRaw = decodeB64(r.name_raw, line) ?? EMPTY;
    name = nameRaw.toString('utf8');
  } else name = '';
  if (payload !== null && payload.length !== 8) throw tsError(line, `"${name}": CRC-64 must be 8 bytes`);
  const clean = goClean(name);
  if (seen.has(clean)) throw tsError(line, `duplicate path "${name}"`);
  seen.add(clean);
  return { type: 'file', name, ...(nameRaw ? { nameRaw } : {}), size, crc: payload };
}

function decodeB64(v: unknown, line: number): Buffer | null {
  if (v === null || v === undefined) return null;
  if (typeof v !== 'string' || !isStdBase64(v)) throw tsError(line, 'payload is not base64');
  return Buffer.from(v, 'base64');
}

/** [A-Za-z0-9+/]: the standard base64 alphabet. */
const B64 = new Uint8Array(128);
for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/') B64[c.charCodeAt(0)] = 1;

/**
 * Padded standard base64 (what Go's encoding/json writes for []byte): a length divisible by 4, alphabet
 * characters, then at most two '='. A loop, not a regular expression: every tar-split line goes through it
 * while podman waits for the lookup.
 */
function isStdBase64(v: string): boolean {
  if (v.length % 4 !== 0) return false;
  let end = v.length;
  if (end > 0 && v.charCodeAt(end - 1) === 0x3d) end--;
  if (end > 0 && v.charCodeAt(end - 1) === 0x3d) end--;
  for (let i = 0; i < end; i++) {
    const c = v.charCodeAt(i);
    if (c >= 128 || B64[c] === 0) return false;
  }
  return true;
}

/** Uncompressed tar size: all segment bytes plus all file sizes (c/storage's tarSizeFromTarSplit). */
export function tarSizeFromTarSplit(entries: readonly TarSplitEntry[]): number {
  let n = 0;
  for (const e of entries) n += e.type === 'segment' ? e.payload.length : e.size;
  return n;
}

/**
 * The TOC metadata of every tar header recorded in the tar-split (tar-split's asm.IterateHeaders): each header
 * segment, minus the previous file's padding, is parsed as a tar header.
 */
export async function headersFromTarSplit(entries: readonly TarSplitEntry[]): Promise<TocEntry[]> {
  const out: TocEntry[] = [];
  let pendingPadding = 0;
  // After the end-of-archive blocks come the input's trailing bytes (kept verbatim for the DiffID): they are not
  // headers, and no file may follow them, since tar readers stop at the end marker.
  let ended = false;
  for (const e of entries) {
    if (e.type === 'file') {
      if (ended) throw formatError('TARSPLIT_INVALID', `tar-split has an entry for "${e.name}" after the end-of-archive blocks`);
      pendingPadding += blockPadding(e.size);
      continue;
    }
    if (ended) continue;
    if (e.payload.length < pendingPadding) {
      throw formatError('TARSPLIT_INVALID', `tar-split segment of ${e.payload.length} bytes is shorter than the ${pendingPadding} bytes of padding it must start with`);
    }
    const bytes = e.payload.subarray(pendingPadding);
    pendingPadding = 0;
    try {
      const header = readEntryHeader(bytes, 0);
      if (header) out.push(entryFromHeader(header));
      else ended = true;
    } catch (err) {
      // Name the tar-split, not "the tar": the bytes came from the layer's tar-split, not from an input tar.
      throw formatError('TARSPLIT_INVALID', `tar-split segment ${out.length + 1} holds no valid tar header: ${(err as Error).message}`, err);
    }
  }
  return out;
}

/** Where reassembly gets a file's verified content. */
export type ContentGetter = (name: string, size: number) => AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

export interface RebuiltTar {
  diffID: Digest;
  size: number;
}

/**
 * Rebuild the layer tar from the tar-split and file contents (tar-split's WriteOutputTarStream), checking every
 * file's length and CRC-64, and hash it: the DiffID of the layer. `sink` receives the tar if it wants it.
 */
export async function rebuildTar(
  entries: readonly TarSplitEntry[],
  content: ContentGetter,
  sink?: (chunk: Uint8Array) => void | Promise<void>,
): Promise<RebuiltTar> {
  const hash = createHash('sha256');
  let size = 0;
  const emit = async (b: Uint8Array) => {
    hash.update(b);
    size += b.length;
    if (sink) await sink(b);
  };
  for (const e of entries) {
    if (e.type === 'segment') {
      await emit(e.payload);
      continue;
    }
    if (e.size === 0) continue;
    const crc = new Crc64();
    let got = 0;
    for await (const piece of content(e.name, e.size)) {
      got += piece.length;
      if (got > e.size) break;
      crc.update(piece);
      await emit(piece);
    }
    if (got !== e.size) {
      throw formatError('CRC_MISMATCH', `"${e.name}": content is ${got} bytes, the tar-split says ${e.size}`);
    }
    const actual = crc.digest();
    if (e.crc === null || !actual.equals(e.crc)) {
      throw formatError('CRC_MISMATCH', `"${e.name}": CRC-64 of the content is ${actual.toString('hex')}, the tar-split says ${e.crc?.toString('hex') ?? 'none'}`);
    }
  }
  return { diffID: `sha256:${hash.digest('hex')}`, size };
}
