import { formatError } from './errors.js';

/**
 * Tar reading with the semantics of Go's archive/tar (as forked by tar-split, with raw-byte accounting), because
 * c/storage builds zstd:chunked TOCs and tar-splits from what that reader reports: the same names, sizes, times
 * and the same "raw bytes" (everything that is not file payload). Only what zstd:chunked can carry is accepted.
 */

export const BLOCK = 512;
const MAX_SPECIAL_FILE = 1 << 20; // Go's maxSpecialFileSize: PAX records and GNU long names

/** Seconds and nanoseconds since the Unix epoch, as Go's time.Unix(sec, nsec). */
export interface TarTime {
  sec: number;
  nsec: number;
}

export type TarFormat = 'v7' | 'ustar' | 'pax' | 'gnu' | 'star';

export interface TarHeader {
  /** Type flag after Go's normalisation ('\0' becomes '0', or '5' for names ending in '/'). */
  typeflag: string;
  name: string;
  /** The name's bytes as stored, for tar-split's `name_raw` when they are not valid UTF-8. */
  nameRaw: Buffer;
  linkname: string;
  mode: number;
  uid: number;
  gid: number;
  /** Logical size from the header (PAX `size` wins). Header-only types carry no payload whatever it says. */
  size: number;
  mtime: TarTime;
  atime?: TarTime;
  ctime?: TarTime;
  devmajor: number;
  devminor: number;
  uname: string;
  gname: string;
  /** PAX records of the entry, values as raw bytes (xattr values are binary). */
  pax: Map<string, Buffer>;
}

/** Typeflags c/storage maps to TOC types; anything else makes a layer impossible to convert. */
export const TYPEFLAG_TO_TOC: Readonly<Record<string, TocEntryType>> = {
  '0': 'reg', '1': 'hardlink', '2': 'symlink', '3': 'char', '4': 'block', '5': 'dir', '6': 'fifo',
};
export type TocEntryType = 'reg' | 'hardlink' | 'symlink' | 'char' | 'block' | 'dir' | 'fifo' | 'chunk';

const HEADER_ONLY = new Set(['1', '2', '3', '4', '5', '6']);

/** Bytes of payload that follow the header in the archive (0 for links, dirs, devices, fifos). */
export function payloadSize(h: Pick<TarHeader, 'typeflag' | 'size'>): number {
  return HEADER_ONLY.has(h.typeflag) ? 0 : h.size;
}

export function blockPadding(n: number): number {
  return (BLOCK - (n % BLOCK)) % BLOCK;
}

const utf8 = new TextDecoder('utf-8', { fatal: false });
const utf8Strict = new TextDecoder('utf-8', { fatal: true });

export function isValidUtf8(b: Uint8Array): boolean {
  try {
    utf8Strict.decode(b);
    return true;
  } catch {
    return false;
  }
}

/** Go's parser.parseString: bytes up to the first NUL. */
function cstring(b: Buffer): Buffer {
  const nul = b.indexOf(0);
  return nul < 0 ? b : b.subarray(0, nul);
}

function headerError(what: string, detail: string): Error {
  return formatError('TAR_INVALID', `invalid tar header${what ? ` for "${what}"` : ''}: ${detail}`);
}

/** Go's parseNumeric: base-256 when the high bit is set, else octal with NULs/spaces trimmed. */
export function parseNumeric(b: Buffer, field: string): number {
  return parseNumericAt(b, 0, b.length, field);
}

/**
 * parseNumeric of the field b[start, end), by index: header fields are parsed for every entry of every TOC
 * check, and slicing a Buffer per field cost more than the parsing (~35 µs per header).
 */
function parseNumericAt(b: Buffer, start: number, end: number, field: string): number {
  if (end > start && (b[start]! & 0x80) !== 0) {
    const neg = (b[start]! & 0x40) !== 0;
    let x = 0n;
    for (let i = start; i < end; i++) {
      let c = neg ? b[i]! ^ 0xff : b[i]!;
      if (i === start) c &= 0x7f;
      if (x >> 56n > 0n) throw headerError('', `${field}: base-256 number overflows 64 bits`);
      x = (x << 8n) | BigInt(c);
    }
    if (x >> 63n > 0n) throw headerError('', `${field}: base-256 number overflows 64 bits`);
    const v = neg ? -x - 1n : x;
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw formatError('TAR_UNSUPPORTED', `tar ${field} ${v} is beyond 2^53`);
    }
    return Number(v);
  }
  return parseOctalAt(b, start, end, field);
}

function parseOctalAt(b: Buffer, start: number, end: number, field: string): number {
  let s = start;
  let e = end;
  while (s < e && (b[s] === 0x20 || b[s] === 0)) s++;
  while (e > s && (b[e - 1] === 0x20 || b[e - 1] === 0)) e--;
  if (s === e) return 0;
  // Go's parseString: the digits end at the first NUL.
  const nul = b.indexOf(0, s);
  if (nul >= 0 && nul < e) e = nul;
  let v = 0;
  for (let i = s; i < e; i++) {
    const d = b[i]! - 0x30;
    if (d < 0 || d > 7) {
      throw headerError('', `${field}: ${JSON.stringify(b.toString('latin1', s, e))} is not an octal number`);
    }
    v = v * 8 + d; // exact below 2^53; anything above stays above it and is refused
  }
  if (!Number.isSafeInteger(v)) throw formatError('TAR_UNSUPPORTED', `tar ${field} ${b.toString('latin1', s, e)} (octal) is beyond 2^53`);
  return v;
}

function checksumOk(blk: Buffer): boolean {
  const want = parseOctalAt(blk, 148, 156, 'checksum');
  // Sum with the checksum field counted as spaces; the signed sum differs by 256 per byte above 127.
  let unsigned = 8 * 0x20;
  let high = 0;
  for (let i = 0; i < BLOCK; i++) {
    if (i === 148) i = 156;
    const c = blk[i]!;
    unsigned += c;
    if (c > 127) high++;
  }
  return want === unsigned || want === unsigned - 256 * high;
}

function detectFormat(blk: Buffer): TarFormat | undefined {
  let ok: boolean;
  try {
    ok = checksumOk(blk);
  } catch {
    ok = false;
  }
  if (!ok) return undefined;
  const magic = blk.toString('latin1', 257, 263);
  const version = blk.toString('latin1', 263, 265);
  const trailer = blk.toString('latin1', 508, 512);
  if (magic === 'ustar\0' && trailer === 'tar\0') return 'star';
  if (magic === 'ustar\0') return 'pax';
  if (magic === 'ustar ' && version === ' \0') return 'gnu';
  return 'v7';
}

export function isZeroBlock(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

/** Decode one header block (no PAX merge yet). Exported for tests and for tar-split header iteration. */
export function decodeHeaderBlock(blk: Buffer): TarHeader {
  const format = detectFormat(blk);
  if (format === undefined) throw headerError('', 'bad checksum or not a tar header');
  let nameRaw = Buffer.from(cstring(blk.subarray(0, 100)));
  const h: TarHeader = {
    typeflag: String.fromCharCode(blk[156]!),
    name: '',
    nameRaw,
    linkname: utf8.decode(cstring(blk.subarray(157, 257))),
    size: parseNumericAt(blk, 124, 136, 'size'),
    mode: parseNumericAt(blk, 100, 108, 'mode'),
    uid: parseNumericAt(blk, 108, 116, 'uid'),
    gid: parseNumericAt(blk, 116, 124, 'gid'),
    mtime: { sec: parseNumericAt(blk, 136, 148, 'mtime'), nsec: 0 },
    devmajor: 0,
    devminor: 0,
    uname: '',
    gname: '',
    pax: new Map(),
  };
  if (format !== 'v7') {
    h.uname = utf8.decode(cstring(blk.subarray(265, 297)));
    h.gname = utf8.decode(cstring(blk.subarray(297, 329)));
    h.devmajor = parseNumericAt(blk, 329, 337, 'devmajor');
    h.devminor = parseNumericAt(blk, 337, 345, 'devminor');
    let prefix: Buffer = Buffer.alloc(0);
    if (format === 'pax' || format === 'ustar') {
      prefix = cstring(blk.subarray(345, 500));
    } else if (format === 'star') {
      prefix = cstring(blk.subarray(345, 476));
      h.atime = { sec: parseNumericAt(blk, 476, 488, 'atime'), nsec: 0 };
      h.ctime = { sec: parseNumericAt(blk, 488, 500, 'ctime'), nsec: 0 };
    } else if (format === 'gnu') {
      if (blk[345] !== 0) h.atime = { sec: parseNumericAt(blk, 345, 357, 'atime'), nsec: 0 };
      if (blk[357] !== 0) h.ctime = { sec: parseNumericAt(blk, 357, 369, 'ctime'), nsec: 0 };
    }
    if (prefix.length > 0) nameRaw = Buffer.concat([prefix, Buffer.from('/'), nameRaw]);
  }
  h.nameRaw = nameRaw;
  h.name = utf8.decode(nameRaw);
  return h;
}

/** Parse PAX extended-header records ("%d %s=%s\n"), Go's parsePAXRecord rules. */
export function parsePaxRecords(data: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let rest = data;
  while (rest.length > 0) {
    const sp = rest.indexOf(0x20);
    if (sp <= 0) throw headerError('', 'malformed PAX record (no length)');
    const lenStr = rest.toString('latin1', 0, sp);
    const n = /^-?\d+$/.test(lenStr) ? Number(lenStr) : NaN;
    if (!Number.isSafeInteger(n) || n < 5 || n > rest.length || n <= sp + 1) {
      throw headerError('', `malformed PAX record length ${JSON.stringify(lenStr)}`);
    }
    const rec = rest.subarray(sp + 1, n - 1);
    if (rest[n - 1] !== 0x0a) throw headerError('', 'PAX record does not end in a newline');
    const eq = rec.indexOf(0x3d);
    if (eq < 0) throw headerError('', 'PAX record without "="');
    const key = rec.toString('utf8', 0, eq);
    const value = Buffer.from(rec.subarray(eq + 1));
    if (key === '') throw headerError('', 'PAX record with an empty key');
    const nulChecked = ['path', 'linkpath', 'uname', 'gname'].includes(key) ? value : Buffer.from(key);
    if (nulChecked.includes(0)) throw headerError('', `PAX record ${key} contains a NUL byte`);
    if (key.startsWith('GNU.sparse.')) {
      throw formatError('TAR_UNSUPPORTED', 'sparse files (GNU.sparse PAX records) cannot be stored in zstd:chunked');
    }
    out.set(key, value);
    rest = rest.subarray(n);
  }
  return out;
}

/** Go's parsePAXTime: "sec[.frac]", fraction truncated to nanoseconds, negative times corrected. */
export function parsePaxTime(s: string, key: string): TarTime {
  const m = /^([+-]?\d+)(?:\.(\d*))?$/.exec(s);
  if (!m) throw headerError('', `PAX ${key} ${JSON.stringify(s)} is not a time`);
  const sec = Number(m[1]);
  if (!Number.isSafeInteger(sec)) throw formatError('TAR_UNSUPPORTED', `PAX ${key} ${s} is out of range`);
  const frac = (m[2] ?? '').slice(0, 9).padEnd(9, '0');
  const nsec = m[2] ? Number(frac) : 0;
  return m[1]!.startsWith('-') && nsec > 0 ? { sec: sec - 1, nsec: 1e9 - nsec } : { sec, nsec };
}

function parsePaxInt(v: string, key: string): number {
  if (!/^[+-]?\d+$/.test(v)) throw headerError('', `PAX ${key} ${JSON.stringify(v)} is not a number`);
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw formatError('TAR_UNSUPPORTED', `PAX ${key} ${v} is beyond 2^53`);
  return n;
}

/** Go's mergePAX: PAX values override the header's (empty values keep the header's). */
function mergePax(h: TarHeader, pax: Map<string, Buffer>): void {
  for (const [k, raw] of pax) {
    if (raw.length === 0) continue;
    const v = raw.toString('utf8');
    switch (k) {
      case 'path': h.nameRaw = raw; h.name = utf8.decode(raw); break;
      case 'linkpath': h.linkname = v; break;
      case 'uname': h.uname = v; break;
      case 'gname': h.gname = v; break;
      case 'uid': h.uid = parsePaxInt(v, k); break;
      case 'gid': h.gid = parsePaxInt(v, k); break;
      case 'size': h.size = parsePaxInt(v, k); break;
      case 'mtime': h.mtime = parsePaxTime(v, k); break;
      case 'atime': h.atime = parsePaxTime(v, k); break;
      case 'ctime': h.ctime = parsePaxTime(v, k); break;
      default: break;
    }
  }
  h.pax = pax;
}

/** Pull-based byte reader over an async iterable of buffers; hands out payload without copying. */
export class ByteReader {
  private readonly it: AsyncIterator<Uint8Array> | Iterator<Uint8Array>;
  private buf: Buffer = Buffer.alloc(0);
  private done = false;
  /** Total bytes handed out so far. */
  position = 0;

  constructor(src: AsyncIterable<Uint8Array> | Iterable<Uint8Array>) {
    this.it = Symbol.asyncIterator in src ? src[Symbol.asyncIterator]() : src[Symbol.iterator]();
  }

  private async fill(): Promise<boolean> {
    while (this.buf.length === 0 && !this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
      else this.buf = Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
    }
    return this.buf.length > 0;
  }

  /** Up to `max` bytes, at least one unless at end (then an empty buffer). */
  async readSome(max: number): Promise<Buffer> {
    if (!(await this.fill())) return Buffer.alloc(0);
    const n = Math.min(max, this.buf.length);
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    this.position += n;
    return out;
  }

  /** Exactly `n` bytes, or fewer only at the end of the stream. */
  async read(n: number): Promise<Buffer> {
    const first = await this.readSome(n);
    if (first.length === n || first.length === 0) return first;
    const parts = [first];
    let got = first.length;
    while (got < n) {
      const p = await this.readSome(n - got);
      if (p.length === 0) break;
      parts.push(p);
      got += p.length;
    }
    return Buffer.concat(parts, got);
  }
}

export type TarEvent =
  /** An entry: `raw` holds every non-payload byte since the previous payload (padding, PAX/GNU blocks, header). */
  | { kind: 'entry'; header: TarHeader; raw: Buffer; payload: number }
  /** A piece of the current entry's payload; pieces add up to the entry's `payload`. */
  | { kind: 'data'; data: Buffer }
  /** End of archive: the last padding and the zero blocks. */
  | { kind: 'end'; raw: Buffer }
  /** Bytes after the end-of-archive blocks, in pieces of at most 1 MiB. */
  | { kind: 'trailing'; data: Buffer };

const MAX_PIECE = 1 << 20;

/**
 * Walk a tar stream as Go's tar-split reader does and report entries, payload pieces, the end-of-archive bytes
 * and trailing bytes. Every input byte appears in exactly one event, in order, so the events can rebuild the tar.
 */
export async function* readTar(src: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): AsyncGenerator<TarEvent> {
  const r = new ByteReader(src);
  let pad = 0;
  for (;;) {
    const raw: Buffer[] = [];
    const next = await readEntry(r, pad, raw);
    if (next === undefined) {
      yield { kind: 'end', raw: Buffer.concat(raw) };
      break;
    }
    const payload = payloadSize(next);
    yield { kind: 'entry', header: next, raw: Buffer.concat(raw), payload };
    let left = payload;
    while (left > 0) {
      const data = await r.readSome(Math.min(left, MAX_PIECE));
      if (data.length === 0) {
        throw formatError('TAR_INVALID', `tar ends inside the payload of "${next.name}" (${left} bytes missing)`);
      }
      left -= data.length;
      yield { kind: 'data', data };
    }
    pad = blockPadding(payload);
  }
  for (;;) {
    const data = await r.read(MAX_PIECE);
    if (data.length === 0) break;
    yield { kind: 'trailing', data };
  }
}

/**
 * Read padding and header blocks up to the next real entry; undefined at the end of the archive. Every byte read
 * is appended to `raw`.
 */
async function readEntry(r: ByteReader, pad: number, raw: Buffer[]): Promise<TarHeader | undefined> {
  const steps = entrySteps(pad);
  for (let step = steps.next(); ; ) {
    if (step.done) return step.value;
    const bytes = await r.read(step.value);
    raw.push(bytes);
    step = steps.next(bytes);
  }
}

/**
 * The header of the one entry whose padding and header blocks `bytes` holds (a tar-split segment), or undefined
 * at the end-of-archive blocks. Synchronous: the TOC↔tar-split check parses a header per file of every layer
 * while podman waits for the lookup, and the stream machinery cost twice the parsing.
 */
export function readEntryHeader(bytes: Buffer, pad: number): TarHeader | undefined {
  const steps = entrySteps(pad);
  let at = 0;
  for (let step = steps.next(); ; ) {
    if (step.done) return step.value;
    const piece = bytes.subarray(at, at + step.value);
    at += piece.length;
    step = steps.next(piece);
  }
}

/**
 * The entry parser, independent of where bytes come from: it yields how many bytes it needs next and is resumed
 * with them (fewer only at the end of the input); it returns the entry's header, or undefined at the end.
 */
function* entrySteps(pad: number): Generator<number, TarHeader | undefined, Buffer> {
  let pax: Map<string, Buffer> | undefined;
  let longName: Buffer | undefined;
  let longLink: Buffer | undefined;
  for (;;) {
    if (pad > 0) {
      const p = yield pad;
      if (p.length < pad) return undefined; // Go: a short padding read is io.EOF, the end of the archive.
    }
    pad = 0;
    const blk = yield BLOCK;
    if (blk.length === 0) return undefined;
    if (blk.length < BLOCK) throw formatError('TAR_INVALID', 'tar ends inside a header block');
    if (isZeroBlock(blk)) {
      const second = yield BLOCK;
      if (second.length === 0 || (second.length === BLOCK && isZeroBlock(second))) return undefined;
      if (second.length < BLOCK) throw formatError('TAR_INVALID', 'tar ends inside a header block');
      throw formatError('TAR_INVALID', 'a zero block followed by a non-zero block in the middle of the tar');
    }
    const h = decodeHeaderBlock(blk);
    if (h.size < 0) throw headerError(h.name, `negative size ${h.size}`);
    const flag = h.typeflag;
    if (flag === 'x' || flag === 'L' || flag === 'K') {
      if (h.size > MAX_SPECIAL_FILE) {
        throw headerError(h.name, `extended header of ${h.size} bytes exceeds ${MAX_SPECIAL_FILE}`);
      }
      const data = yield h.size;
      if (data.length < h.size) throw formatError('TAR_INVALID', 'tar ends inside an extended header');
      pad = blockPadding(h.size);
      if (flag === 'x') pax = parsePaxRecords(data);
      else if (flag === 'L') longName = cstring(data);
      else longLink = cstring(data);
      continue;
    }
    if (flag === 'g') {
      throw formatError('TAR_UNSUPPORTED', 'the tar has a PAX global header (typeflag g); zstd:chunked cannot carry it');
    }
    if (pax) mergePax(h, pax);
    if (longName) { h.nameRaw = longName; h.name = utf8.decode(longName); }
    if (longLink) h.linkname = utf8.decode(longLink);
    if (flag === '\0') h.typeflag = h.name.endsWith('/') ? '5' : '0';
    if (!(h.typeflag in TYPEFLAG_TO_TOC)) {
      const what = h.typeflag === 'S' ? 'GNU sparse file' : `entry of tar type ${JSON.stringify(h.typeflag)}`;
      throw formatError('TAR_UNSUPPORTED', `"${h.name}": ${what} cannot be stored in zstd:chunked`);
    }
    if (h.size < 0) throw headerError(h.name, `negative size ${h.size}`);
    return h;
  }
}
