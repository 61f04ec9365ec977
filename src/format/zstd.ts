import binding from 'zstd-napi/binding.js';
import { formatError } from './errors.js';

/** Magic of a zstd skippable frame as c/storage writes it (0x184D2A50, little-endian). */
export const SKIPPABLE_MAGIC = 0x184d2a50;
const ZSTD_MAGIC = 0xfd2fb528;
const OUT_STEP = 128 * 1024;

/** The 8-byte header of a skippable frame holding `length` bytes. */
export function skippableHeader(length: number): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt32LE(SKIPPABLE_MAGIC, 0);
  h.writeUInt32LE(length, 4);
  return h;
}

/**
 * Streaming compressor that can close a frame at any point: zstd:chunked starts a new frame at every file
 * payload and every chunk, so that each can be fetched and decompressed on its own.
 */
export class FrameCompressor {
  private readonly cctx = new binding.CCtx();
  private readonly out = Buffer.allocUnsafe(OUT_STEP);

  constructor(level: number) {
    this.cctx.setParameter(binding.CParameter.compressionLevel, level);
    this.cctx.setParameter(binding.CParameter.checksumFlag, 1);
  }

  /** Compress `data` into the current frame; returns compressed output produced so far (may be empty). */
  write(data: Uint8Array, sink: (b: Buffer) => void): void {
    let src = data;
    while (src.length > 0) {
      const [, produced, consumed] = this.cctx.compressStream2(this.out, src, binding.EndDirective.continue);
      if (produced > 0) sink(Buffer.from(this.out.subarray(0, produced)));
      src = src.subarray(consumed);
    }
  }

  /** Finish the current frame (if it holds any input, or if `force`), handing its last bytes to `sink`. */
  endFrame(sink: (b: Buffer) => void): void {
    for (;;) {
      const [remaining, produced] = this.cctx.compressStream2(this.out, new Uint8Array(0), binding.EndDirective.end);
      if (produced > 0) sink(Buffer.from(this.out.subarray(0, produced)));
      if (remaining === 0) return;
    }
  }
}

/** One-shot: `data` as a single zstd frame. */
export function compressFrame(data: Uint8Array, level: number): Buffer {
  const parts: Buffer[] = [];
  const c = new FrameCompressor(level);
  c.write(data, (b) => parts.push(b));
  c.endFrame((b) => parts.push(b));
  return Buffer.concat(parts);
}

/**
 * Decompress a sequence of zstd frames (skippable frames are skipped) into at most `maxOutput` bytes.
 * More output than that is an error, never a bigger allocation: sizes come from untrusted TOCs and annotations.
 * With `exact`, fewer bytes is an error too. With `prefix` (a chunk's blob range, which c/storage may infer to run
 * into the next entry's header frame), the first `maxOutput` bytes are wanted and the rest of the range is
 * ignored, but the frame holding the last wanted byte must end right there and its checksum must verify: a
 * chunk is exactly one frame, so a frame that holds more, or whose checksum is wrong, is corrupt.
 */
export function decompressFrames(
  src: Uint8Array,
  maxOutput: number,
  what: string,
  mode: 'atMost' | 'exact' | 'prefix' = 'atMost',
): Buffer {
  // One decoder context for every call (calls are synchronous, so never shared at once): creating a context per
  // chunk, and copying every output piece twice, cost more than the decompression itself on small chunks.
  const dctx = sharedDCtx();
  dctx.reset(binding.ResetDirective.sessionOnly);
  // With an exact size (chunks), the output is written straight into the result; a few bytes of scratch past it
  // only detect a frame that holds more than declared. Otherwise (TOC, tar-split: an upper bound only) it is
  // collected in pieces, so a huge bound never becomes a huge allocation.
  const direct = mode !== 'atMost';
  const result = direct ? Buffer.allocUnsafe(maxOutput) : undefined;
  const piece = direct ? SCRATCH : Buffer.allocUnsafe(Math.min(Math.max(maxOutput, 1), 4 << 20));
  const chunks: Buffer[] = [];
  let total = 0;
  let input = src;
  let inFrame = false;
  const window = (): Buffer => (result && total < maxOutput ? result.subarray(total) : piece);
  const step = (): { ret: number; produced: number } => {
    let ret: number;
    let produced: number;
    let consumed: number;
    const out = window();
    try {
      [ret, produced, consumed] = dctx.decompressStream(out, input);
    } catch (err) {
      throw formatError('ZSTD_INVALID', `${what}: not valid zstd data (${(err as Error).message})`, err);
    }
    if (consumed === 0 && produced === 0) {
      throw formatError('ZSTD_INVALID', `${what}: zstd decoder made no progress (corrupt frame)`);
    }
    input = input.subarray(consumed);
    inFrame = ret !== 0;
    if (produced > 0) {
      if (out === piece && (result || total + produced > maxOutput)) {
        throw formatError('ZSTD_INVALID', mode === 'prefix'
          ? `${what}: the frame holds more than the declared ${maxOutput} bytes`
          : `${what}: decompresses to more than the declared ${maxOutput} bytes`);
      }
      if (!result) chunks.push(Buffer.from(piece.subarray(0, produced)));
      total += produced;
    }
    return { ret, produced };
  };
  while (input.length > 0) {
    if (!inFrame && input.length >= 8 && isSkippable(input)) {
      const len = Buffer.from(input.buffer, input.byteOffset + 4, 4).readUInt32LE(0);
      if (8 + len > input.length) throw formatError('ZSTD_INVALID', `${what}: truncated skippable frame`);
      input = input.subarray(8 + len);
      continue;
    }
    step();
    if (mode === 'prefix' && total === maxOutput) {
      // Drive the frame to its end (checksum included); it must not produce another byte.
      while (inFrame) {
        if (input.length === 0) break;
        step(); // any byte more throws
      }
      break;
    }
  }
  if (inFrame) throw formatError('ZSTD_INVALID', `${what}: truncated zstd frame`);
  if (mode !== 'atMost' && total !== maxOutput) {
    throw formatError('ZSTD_INVALID', `${what}: decompresses to ${total} bytes, expected ${maxOutput}`);
  }
  if (result) return result;
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total);
}

/** Output room past an exactly sized result: any byte landing here means the data holds more than declared. */
const SCRATCH = Buffer.allocUnsafe(64);
let dctxShared: InstanceType<typeof binding.DCtx> | undefined;

function sharedDCtx(): InstanceType<typeof binding.DCtx> {
  dctxShared ??= new binding.DCtx();
  return dctxShared;
}

function isSkippable(b: Uint8Array): boolean {
  const magic = (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0;
  return (magic & 0xfffffff0) === SKIPPABLE_MAGIC;
}

export function isZstdFrameStart(b: Uint8Array): boolean {
  return b.length >= 4 && ((b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0) === ZSTD_MAGIC;
}
