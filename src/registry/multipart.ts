// multipart/byteranges (RFC 9110 §14.6, RFC 2046 §5.1.1) parsing for multi-range answers. The part lengths
// come from each part's Content-Range, never from searching for the boundary inside data, so binary data
// that happens to contain the boundary cannot confuse it; the delimiter after each part is then checked.
import { RangeResponseError } from './errors.js';
import { TransientError } from './http.js';

export interface ContentRange {
  /** First byte, inclusive. */
  start: number;
  /** Last byte + 1 (exclusive). */
  end: number;
  /** Total size, or undefined for `*`. */
  size: number | undefined;
}

export interface BytePart extends ContentRange {
  data: Buffer;
}

/** Parse `bytes a-b/size` (size may be `*`). Returns undefined for anything else. */
export function parseContentRange(value: string | undefined): ContentRange | undefined {
  if (value === undefined) return undefined;
  const m = /^\s*bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/i.exec(value);
  if (!m) return undefined;
  const start = Number(m[1]);
  const last = Number(m[2]);
  const size = m[3] === '*' ? undefined : Number(m[3]);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(last) || last < start) return undefined;
  if (size !== undefined && (!Number.isSafeInteger(size) || last >= size)) return undefined;
  return { start, end: last + 1, size };
}

/** The boundary parameter of a `multipart/byteranges` Content-Type, or undefined if it is not one. */
export function multipartBoundary(contentType: string | undefined): string | undefined {
  if (contentType === undefined) return undefined;
  const [type, ...params] = contentType.split(';');
  if (type?.trim().toLowerCase() !== 'multipart/byteranges') return undefined;
  for (const p of params) {
    const eq = p.indexOf('=');
    if (eq < 0 || p.slice(0, eq).trim().toLowerCase() !== 'boundary') continue;
    let v = p.slice(eq + 1).trim();
    if (v.startsWith('"') && v.endsWith('"') && v.length >= 2) v = v.slice(1, -1).replace(/\\(.)/g, '$1');
    if (v.length >= 1 && v.length <= 200) return v;
  }
  return undefined;
}

const CR = 0x0d;
const LF = 0x0a;

/** Index just past the end of the line that starts at `from` (accepts CRLF and bare LF), or -1. */
function lineEnd(buf: Buffer, from: number): number {
  const lf = buf.indexOf(LF, from);
  return lf < 0 ? -1 : lf + 1;
}

function lineText(buf: Buffer, from: number, to: number): string {
  let end = to;
  if (end > from && buf[end - 1] === LF) end--;
  if (end > from && buf[end - 1] === CR) end--;
  return buf.toString('latin1', from, end);
}

/**
 * Split a complete multipart/byteranges body into parts. Running out of bytes is a TransientError
 * (truncated transfer: retry); any other structural problem is a RangeResponseError.
 */
export function parseMultipartByteRanges(body: Buffer, boundary: string, what: string): BytePart[] {
  const delimiter = Buffer.from(`--${boundary}`, 'latin1');
  const truncated = (): never => { throw new TransientError(`${what}: multipart answer ends early (${body.length} bytes)`); };
  const malformed = (why: string): never => { throw new RangeResponseError(`${what}: malformed multipart/byteranges answer: ${why}`); };

  // Preamble (normally empty) up to the first delimiter at the start of a line.
  let pos = body.indexOf(delimiter);
  if (pos < 0) truncated();
  if (pos > 0 && body[pos - 1] !== LF) malformed('the first boundary is not at the start of a line');
  const parts: BytePart[] = [];
  for (;;) {
    pos += delimiter.length;
    if (pos + 2 > body.length) truncated();
    if (body[pos] === 0x2d && body[pos + 1] === 0x2d) return parts; // close delimiter "--boundary--"
    // Rest of the delimiter line: optional whitespace (transport padding), then the line break.
    const afterDelimiter = lineEnd(body, pos);
    if (afterDelimiter < 0) truncated();
    if (lineText(body, pos, afterDelimiter).trim() !== '') malformed('text after a boundary');
    // Part headers up to an empty line.
    let range: ContentRange | undefined;
    let cursor = afterDelimiter;
    for (;;) {
      const next = lineEnd(body, cursor);
      if (next < 0) truncated();
      const line = lineText(body, cursor, next);
      cursor = next;
      if (line === '') break;
      const colon = line.indexOf(':');
      if (colon > 0 && line.slice(0, colon).trim().toLowerCase() === 'content-range') {
        range = parseContentRange(line.slice(colon + 1));
        if (!range) malformed(`bad Content-Range "${line.slice(colon + 1).trim()}"`);
      }
    }
    if (!range) malformed('a part without Content-Range');
    const r = range as ContentRange;
    const dataEnd = cursor + (r.end - r.start);
    if (dataEnd > body.length) truncated();
    parts.push({ ...r, data: body.subarray(cursor, dataEnd) });
    // The data is followed by CRLF (or LF) and the next delimiter.
    pos = dataEnd;
    if (body[pos] === CR) pos++;
    if (pos >= body.length) truncated();
    if (body[pos] !== LF) malformed('part data is longer than its Content-Range says');
    pos++;
    if (pos + delimiter.length > body.length) truncated();
    if (!body.subarray(pos, pos + delimiter.length).equals(delimiter)) malformed('part data is longer than its Content-Range says');
  }
}
