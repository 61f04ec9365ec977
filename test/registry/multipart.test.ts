import assert from 'node:assert/strict';
import fc from 'fast-check';
import { multipartBoundary, parseContentRange, parseMultipartByteRanges } from '../../src/registry/multipart.js';
import { RangeResponseError } from '../../src/registry/index.js';
import { TransientError } from '../../src/registry/http.js';

/** Build a multipart/byteranges body the way Go's http.ServeContent writes it. */
function build(blob: Buffer, ranges: [number, number][], boundary: string, eol = '\r\n'): Buffer {
  const chunks: Buffer[] = [];
  for (const [s, e] of ranges) {
    chunks.push(Buffer.from(`${eol}--${boundary}${eol}Content-Type: application/octet-stream${eol}Content-Range: bytes ${s}-${e - 1}/${blob.length}${eol}${eol}`));
    chunks.push(blob.subarray(s, e));
  }
  chunks.push(Buffer.from(`${eol}--${boundary}--${eol}`));
  return Buffer.concat(chunks).subarray(eol.length); // Go omits the first line break
}

describe('registry/multipart', () => {
  it('reads the boundary from Content-Type (plain and quoted)', () => {
    assert.equal(multipartBoundary('multipart/byteranges; boundary=abc123'), 'abc123');
    assert.equal(multipartBoundary('Multipart/ByteRanges; charset=x; boundary="a b:c"'), 'a b:c');
    assert.equal(multipartBoundary('application/octet-stream'), undefined);
    assert.equal(multipartBoundary('multipart/byteranges'), undefined);
  });

  it('parses Content-Range strictly', () => {
    assert.deepEqual(parseContentRange('bytes 0-9/100'), { start: 0, end: 10, size: 100 });
    assert.deepEqual(parseContentRange('bytes 5-5/*'), { start: 5, end: 6, size: undefined });
    assert.equal(parseContentRange('bytes 9-0/100'), undefined);
    assert.equal(parseContentRange('bytes 0-100/100'), undefined);
    assert.equal(parseContentRange('bytes */100'), undefined);
  });

  it('splits parts by their Content-Range even when the data contains the boundary', () => {
    const boundary = 'B0UND';
    const blob = Buffer.from(`xx\r\n--${boundary}\r\nyy--${boundary}--zz`.repeat(20));
    const ranges: [number, number][] = [[0, 30], [40, 41], [100, blob.length]];
    const parts = parseMultipartByteRanges(build(blob, ranges, boundary), boundary, 't');
    assert.deepEqual(parts.map((p) => [p.start, p.end, p.size]), ranges.map(([s, e]) => [s, e, blob.length]));
    for (const [i, [s, e]] of ranges.entries()) assert.ok(parts[i]!.data.equals(blob.subarray(s, e)));
  });

  it('accepts bare LF line ends and a preamble', () => {
    const blob = Buffer.from('0123456789');
    const body = Buffer.concat([Buffer.from('preamble\n'), build(blob, [[1, 3], [7, 9]], 'q', '\n')]);
    const parts = parseMultipartByteRanges(body, 'q', 't');
    assert.deepEqual(parts.map((p) => p.data.toString()), ['12', '78']);
  });

  it('reports truncation as transient (retry) at every cut point', () => {
    const blob = Buffer.from('abcdefghijklmnopqrstuvwxyz');
    const body = build(blob, [[0, 5], [10, 20]], 'zz');
    for (let cut = 0; cut < body.length - 4; cut++) {
      assert.throws(() => parseMultipartByteRanges(body.subarray(0, cut), 'zz', 't'), (e: unknown) => e instanceof TransientError || e instanceof RangeResponseError,
        `cut at ${cut}`);
    }
    // Cutting inside the data or the headers is always "ends early".
    assert.throws(() => parseMultipartByteRanges(body.subarray(0, 60), 'zz', 't'), TransientError);
  });

  it('rejects parts longer than their Content-Range and parts without one', () => {
    const good = build(Buffer.from('0123456789'), [[0, 2], [4, 6]], 'b').toString('latin1');
    const longer = good.replace('01\r\n', '01X\r\n');
    assert.throws(() => parseMultipartByteRanges(Buffer.from(longer, 'latin1'), 'b', 't'), RangeResponseError);
    const noRange = good.replace(/Content-Range: bytes 0-1\/10\r\n/, '');
    assert.throws(() => parseMultipartByteRanges(Buffer.from(noRange, 'latin1'), 'b', 't'), RangeResponseError);
  });

  it('round-trips random blobs and ranges', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 1, maxLength: 2000 }), fc.array(fc.tuple(fc.nat(), fc.nat()), { minLength: 1, maxLength: 8 }),
      (bytes, raw) => {
        const blob = Buffer.from(bytes);
        const ranges = raw.map(([a, b]): [number, number] => {
          const s = a % blob.length;
          return [s, s + 1 + (b % (blob.length - s))];
        });
        const parts = parseMultipartByteRanges(build(blob, ranges, '3d6b6a416f9b5'), '3d6b6a416f9b5', 't');
        assert.equal(parts.length, ranges.length);
        for (const [i, [s, e]] of ranges.entries()) assert.ok(parts[i]!.data.equals(blob.subarray(s, e)));
      }));
  });
});
