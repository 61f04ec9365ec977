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
const CONTENT_RANGE_LINE = /^content-range[ \t]*:(.*)$/im;

/** Index just past the end of the line that starts at `from` (accepts CRLF and bare LF), or -1. */
function lineEnd(buf: Buffer, from: number): number {
  const lf = buf.indexOf(LF, from);
  return lf < 0 ? -1 : lf + 1;
}

/** End of a part's header block starting at `from`: [start of the blank line, start of the data], or
 * undefined if the body ends first. Walks line by line (headers are a few short lines), accepting CRLF or LF. */
function headerBlockEnd(buf: Buffer, from: number): [number, number] | undefined {
  let line = from;
  for (;;) {
    const next = lineEnd(buf, line);
    if (next < 0) return undefined;
    const length = next - line;
    if (length === 1 || (length === 2 && buf[line] === CR)) return [line, next];
    line = next;
  }
}

/**
 * Split a complete multipart/byteranges body into parts. Running out of bytes is a TransientError
 * (truncated transfer: retry); any other structural problem is a RangeResponseError.
 */
export function parseMultipartByteRanges(body: Buffer, boundary: string, what: string): BytePart[] {
  const delimiter = Buffer.from(`--${boundary}`, 'latin1');
  const dlen = delimiter.length;
  const truncated = (): never => { throw new TransientError(`${what}: multipart answer ends early (${body.length} bytes)`); };
  const malformed = (why: string): never => { throw new RangeResponseError(`${what}: malformed multipart/byteranges answer: ${why}`); };

  // Preamble (normally empty) up to the first delimiter at the start of a line.
  let pos = body.indexOf(delimiter);
  if (pos < 0) truncated();
  if (pos > 0 && body[pos - 1] !== LF) malformed('the first boundary is not at the start of a line');
  const parts: BytePart[] = [];
  for (;;) {
    pos += dlen;
    if (pos + 2 > body.length) truncated();
    if (body[pos] === 0x2d && body[pos + 1] === 0x2d) return parts; // close delimiter "--boundary--"
    // Rest of the delimiter line: optional whitespace (transport padding), then the line break.
    const afterDelimiter = lineEnd(body, pos);
    if (afterDelimiter < 0) truncated();
    for (let i = pos; i < afterDelimiter - 1; i++) {
      const c = body[i];
      if (c !== 0x20 && c !== 0x09 && c !== CR) malformed('text after a boundary');
    }
    // Part headers up to an empty line, read as one string.
    const block = headerBlockEnd(body, afterDelimiter);
    if (!block) truncated();
    const [headersEnd, dataStart] = block as [number, number];
    const m = CONTENT_RANGE_LINE.exec(body.toString('latin1', afterDelimiter, headersEnd));
    if (!m) malformed('a part without Content-Range');
    const r = parseContentRange(m![1]!.trim());
    if (!r) malformed(`bad Content-Range "${m![1]!.trim()}"`);
    const range = r as ContentRange;
    const dataEnd = dataStart + (range.end - range.start);
    if (dataEnd > body.length) truncated();
    parts.push({ start: range.start, end: range.end, size: range.size, data: body.subarray(dataStart, dataEnd) });
    // The data is followed by CRLF (or LF) and the next delimiter.
    pos = dataEnd;
    if (body[pos] === CR) pos++;
    if (pos >= body.length) truncated();
    if (body[pos] !== LF) malformed('part data is longer than its Content-Range says');
    pos++;
    if (pos + dlen > body.length) truncated();
    if (body.compare(delimiter, 0, dlen, pos, pos + dlen) !== 0) malformed('part data is longer than its Content-Range says');
  }
}
