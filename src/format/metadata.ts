import { formatError } from './errors.js';
import { goQuote } from './gojson.js';
import { TYPEFLAG_TO_TOC, type TarHeader, type TarTime, type TocEntryType } from './tar.js';
import { formatRfc3339Nano, isGoZeroTime, parseRfc3339, sameTime } from './times.js';

/**
 * One TOC entry exactly as c/storage's minimal.FileMetadata carries it (JSON keys in brackets). Times are kept
 * both as the string found in the TOC and as an instant.
 */
export interface TocEntry {
  type: TocEntryType;
  name: string;
  linkName?: string;
  mode?: number;
  size?: number;
  uid?: number;
  gid?: number;
  modtime?: TarTime;
  accesstime?: TarTime;
  changetime?: TarTime;
  devMajor?: number;
  devMinor?: number;
  /** Extended attributes: name → base64 (StdEncoding, padded) of the raw value. */
  xattrs?: Record<string, string>;
  digest?: string;
  offset?: number;
  endOffset?: number;
  chunkSize?: number;
  chunkOffset?: number;
  chunkDigest?: string;
  chunkType?: string;
}

/** A TOC document: `{"version":1,"entries":[…],"tarSplitDigest":…}`. */
export interface TocDocument {
  version: number;
  entries: TocEntry[];
  tarSplitDigest?: string;
}

/** c/storage's minimal.NewFileMetadata: the metadata part of a TOC entry for a tar header. */
export function entryFromHeader(h: TarHeader): TocEntry {
  const type = TYPEFLAG_TO_TOC[h.typeflag];
  if (type === undefined) throw formatError('TAR_UNSUPPORTED', `"${h.name}": unsupported tar type ${JSON.stringify(h.typeflag)}`);
  const e: TocEntry = { type, name: h.name };
  if (h.linkname) e.linkName = h.linkname;
  if (h.mode) e.mode = h.mode;
  if (h.size) e.size = h.size;
  if (h.uid) e.uid = h.uid;
  if (h.gid) e.gid = h.gid;
  const t = (x: TarTime | undefined) => (x === undefined || isGoZeroTime(x) ? undefined : x);
  const mt = t(h.mtime), at = t(h.atime), ct = t(h.ctime);
  if (mt) e.modtime = mt;
  if (at) e.accesstime = at;
  if (ct) e.changetime = ct;
  if (h.devmajor) e.devMajor = h.devmajor;
  if (h.devminor) e.devMinor = h.devminor;
  const xattrs: Record<string, string> = {};
  let any = false;
  for (const [k, v] of h.pax) {
    if (k.startsWith('SCHILY.xattr.')) {
      xattrs[k.slice('SCHILY.xattr.'.length)] = v.toString('base64');
      any = true;
    }
  }
  if (any) e.xattrs = xattrs;
  return e;
}

/** Serialise one entry as Go's json.Marshal of FileMetadata: field order, omitempty, sorted map keys, escaping. */
export function encodeEntry(e: TocEntry): string {
  const parts: string[] = [`"type":${goQuote(e.type)}`, `"name":${goQuote(e.name)}`];
  const str = (k: string, v: string | undefined) => { if (v) parts.push(`"${k}":${goQuote(v)}`); };
  const num = (k: string, v: number | undefined) => { if (v) parts.push(`"${k}":${v}`); };
  const time = (k: string, v: TarTime | undefined) => { if (v) parts.push(`"${k}":"${formatRfc3339Nano(v)}"`); };
  str('linkName', e.linkName);
  num('mode', e.mode);
  num('size', e.size);
  num('uid', e.uid);
  num('gid', e.gid);
  time('modtime', e.modtime);
  time('accesstime', e.accesstime);
  time('changetime', e.changetime);
  num('devMajor', e.devMajor);
  num('devMinor', e.devMinor);
  if (e.xattrs && Object.keys(e.xattrs).length > 0) {
    const keys = Object.keys(e.xattrs).sort(byUtf8);
    parts.push(`"xattrs":{${keys.map((k) => `${goQuote(k)}:${goQuote(e.xattrs![k]!)}`).join(',')}}`);
  }
  str('digest', e.digest);
  num('offset', e.offset);
  num('endOffset', e.endOffset);
  num('chunkSize', e.chunkSize);
  num('chunkOffset', e.chunkOffset);
  str('chunkDigest', e.chunkDigest);
  str('chunkType', e.chunkType);
  return `{${parts.join(',')}}`;
}

/** Go sorts map keys by their bytes. */
function byUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

export function encodeToc(doc: TocDocument): string {
  const ts = doc.tarSplitDigest ? `,"tarSplitDigest":${goQuote(doc.tarSplitDigest)}` : '';
  return `{"version":${doc.version},"entries":[${doc.entries.map(encodeEntry).join(',')}]${ts}}`;
}

const ENTRY_KEYS: Record<string, keyof TocEntry> = Object.fromEntries(
  (['type', 'name', 'linkName', 'mode', 'size', 'uid', 'gid', 'modtime', 'accesstime', 'changetime', 'devMajor',
    'devMinor', 'xattrs', 'digest', 'offset', 'endOffset', 'chunkSize', 'chunkOffset', 'chunkDigest',
    'chunkType'] as const).map((k) => [k.toLowerCase(), k]),
);
const NUMERIC = new Set<keyof TocEntry>(['mode', 'size', 'uid', 'gid', 'devMajor', 'devMinor', 'offset', 'endOffset',
  'chunkSize', 'chunkOffset']);
const TIMES = new Set<keyof TocEntry>(['modtime', 'accesstime', 'changetime']);
const TYPES = new Set<string>(['reg', 'hardlink', 'symlink', 'char', 'block', 'dir', 'fifo', 'chunk']);

function tocError(msg: string): Error {
  return formatError('TOC_INVALID', `invalid TOC: ${msg}`);
}

/** Most entries a TOC may have (LIMITS.maxEntries): bounds what a hostile TOC or tar-split can make us hold. */
export const MAX_TOC_ENTRIES = 4_000_000;

/**
 * Most objects and arrays a TOC's JSON may hold: one object per entry, one more for its xattrs, and a few around.
 * Counted before JSON.parse, which cannot be interrupted: 150 MiB of "{}," made a TOC worker parse 50 M objects
 * and collect garbage at its heap limit for over ten minutes.
 */
const MAX_TOC_CONTAINERS = 2 * MAX_TOC_ENTRIES + 16;

/**
 * Parse TOC JSON the way c/storage's unmarshalToc does: keys matched case-insensitively, unknown keys skipped,
 * typed values enforced, trailing data rejected (JSON.parse does), `entries: null` accepted.
 */
export function decodeToc(json: string): TocDocument {
  if (exceedsCount(json, ['{', '['], MAX_TOC_CONTAINERS)) {
    throw tocError(`more than ${MAX_TOC_CONTAINERS} JSON objects and arrays (a TOC has one per entry, one more for its xattrs, ` +
      `for at most ${MAX_TOC_ENTRIES} entries); podman pulls this layer normally`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (err) {
    throw tocError(`not a single JSON document (${(err as Error).message})`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw tocError('the top level is not an object');
  const doc: TocDocument = { version: 0, entries: [] };
  for (const [k, v] of Object.entries(raw)) {
    switch (k.toLowerCase()) {
      case 'version':
        if (typeof v !== 'number' || !Number.isInteger(v)) throw tocError('"version" is not an integer');
        doc.version = v;
        break;
      case 'entries':
        if (v === null) break;
        if (!Array.isArray(v)) throw tocError('"entries" is not an array');
        if (v.length > MAX_TOC_ENTRIES) throw tocError(`${v.length} entries exceed the limit of ${MAX_TOC_ENTRIES}`);
        doc.entries = v.map((x, i) => decodeEntry(x, i));
        break;
      case 'tarsplitdigest':
        if (typeof v !== 'string') throw tocError('"tarSplitDigest" is not a string');
        if (v !== '') doc.tarSplitDigest = v;
        break;
      default:
        break;
    }
  }
  return doc;
}

/** Whether `text` holds more than `max` of the given characters in all (stops counting past `max`). */
export function exceedsCount(text: string, chars: readonly string[], max: number): boolean {
  if (max < 0) return true;
  let n = 0;
  for (const c of chars) {
    for (let i = text.indexOf(c); i >= 0; i = text.indexOf(c, i + 1)) {
      if (++n > max) return true;
    }
  }
  return false;
}

function decodeEntry(x: unknown, index: number): TocEntry {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) throw tocError(`entry ${index} is not an object`);
  const e: Partial<Record<keyof TocEntry, unknown>> = {};
  for (const [k, v] of Object.entries(x)) {
    // Own keys only: "constructor" or "__proto__" in a TOC are unknown keys, not Object.prototype's members.
    const lower = k.toLowerCase();
    const key = Object.hasOwn(ENTRY_KEYS, lower) ? ENTRY_KEYS[lower] : undefined;
    if (key === undefined || v === null) continue;
    const where = () => `entry ${index}${typeof e.name === 'string' ? ` ("${e.name}")` : ''}: "${key}"`;
    if (NUMERIC.has(key)) {
      if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw tocError(`${where()} is not an integer`);
      e[key] = v;
    } else if (TIMES.has(key)) {
      const t = typeof v === 'string' ? parseRfc3339(v) : undefined;
      if (t === undefined) throw tocError(`${where()} is not an RFC 3339 time: ${JSON.stringify(v)}`);
      e[key] = t;
    } else if (key === 'xattrs') {
      if (typeof v !== 'object' || Array.isArray(v)) throw tocError(`${where()} is not an object`);
      for (const xv of Object.values(v)) if (typeof xv !== 'string') throw tocError(`${where()} has a non-string value`);
      e[key] = v;
    } else {
      if (typeof v !== 'string') throw tocError(`${where()} is not a string`);
      e[key] = v;
    }
  }
  if (typeof e.type !== 'string' || !TYPES.has(e.type)) {
    throw tocError(`entry ${index} has unknown type ${JSON.stringify(e.type)}`);
  }
  if (typeof e.name !== 'string') throw tocError(`entry ${index} has no name`);
  return e as unknown as TocEntry;
}

/**
 * c/storage's ensureFileMetadataAttributesMatch: the fields that must agree between a TOC entry and the tar-split
 * header of the same name. Returns the first differing field, or undefined.
 */
export function firstMetadataDifference(toc: TocEntry, tar: TocEntry): string | undefined {
  if (toc.type !== tar.type) return `type ${toc.type} vs ${tar.type}`;
  if (toc.name !== tar.name) return 'name';
  if ((toc.linkName ?? '') !== (tar.linkName ?? '')) return `linkName ${JSON.stringify(toc.linkName ?? '')} vs ${JSON.stringify(tar.linkName ?? '')}`;
  for (const k of ['mode', 'size', 'uid', 'gid', 'devMajor', 'devMinor'] as const) {
    if ((toc[k] ?? 0) !== (tar[k] ?? 0)) return `${k} ${toc[k] ?? 0} vs ${tar[k] ?? 0}`;
  }
  for (const k of ['modtime', 'accesstime', 'changetime'] as const) {
    if (!sameTime(toc[k], tar[k])) return k;
  }
  const xa = toc.xattrs ?? {}, xb = tar.xattrs ?? {};
  const ka = Object.keys(xa), kb = Object.keys(xb);
  if (ka.length !== kb.length || ka.some((k) => xa[k] !== xb[k])) return 'xattrs';
  return undefined;
}
