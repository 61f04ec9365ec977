/**
 * The chunker of c/storage's zstd:chunked writer: bup's rolling checksum (window 64, split when the low 16 bits
 * of s2 are all ones) plus a holes finder that turns runs of ≥ 1024 zero bytes into "zeros" chunks. Chunk
 * boundaries decide which chunk digests two layers share, so they must match the reference writer exactly.
 */
const WINDOW = 64;
const CHAR_OFFSET = 31;
const SPLIT_MASK = 0xffff;
export const HOLE_THRESHOLD = 1024;

/** One chunk of a file's payload as the chunker decides it: [start, end) in the file, and its kind. */
export interface ChunkBoundary {
  end: number;
  zeros: boolean;
}

/**
 * Feeds a file's payload in pieces and reports chunk ends. Equivalent to c/storage's rollingChecksumReader over
 * holesFinder: zero runs shorter than the threshold are ordinary data; a longer run ends the data chunk before
 * it and is one chunk itself; the rollsum rolls over the zeros of a hole but never splits inside it.
 */
export class Chunker {
  private s1 = WINDOW * CHAR_OFFSET;
  private s2 = WINDOW * (WINDOW - 1) * CHAR_OFFSET;
  private readonly window = new Uint8Array(WINDOW);
  private wofs = 0;
  /** File offset of the first byte not yet assigned to a chunk. */
  private chunkStart = 0;
  /** Bytes consumed so far. */
  private pos = 0;
  /** Length of the zero run that ends at `pos` and is not yet decided (data or hole). */
  private pendingZeros = 0;

  /** Bytes whose chunk is decided: everything consumed except a trailing run of zeros still being measured. */
  get decided(): number {
    return this.pos;
  }

  /**
   * Consume `data`; returns the chunks that ended inside it. Data-chunk boundaries depend only on the bytes, never
   * on how the payload is split into calls.
   */
  push(data: Uint8Array, out: ChunkBoundary[] = []): ChunkBoundary[] {
    for (let i = 0; i < data.length; i++) {
      const b = data[i]!;
      if (b === 0) {
        this.pendingZeros++;
        continue;
      }
      if (this.pendingZeros > 0) this.flushZeros(out);
      this.pos++;
      if (this.roll(b)) this.emit(this.pos, false, out);
    }
    return out;
  }

  /** End of the payload: decide the trailing zero run and close the last chunk. */
  finish(out: ChunkBoundary[] = []): ChunkBoundary[] {
    if (this.pendingZeros > 0) this.flushZeros(out);
    if (this.pos > this.chunkStart) this.emit(this.pos, false, out);
    return out;
  }

  private flushZeros(out: ChunkBoundary[]): void {
    const n = this.pendingZeros;
    this.pendingZeros = 0;
    if (n >= HOLE_THRESHOLD) {
      if (this.pos > this.chunkStart) this.emit(this.pos, false, out);
      for (let k = 0; k < n; k++) this.roll(0);
      this.pos += n;
      this.emit(this.pos, true, out);
      return;
    }
    for (let k = 0; k < n; k++) {
      this.pos++;
      if (this.roll(0)) this.emit(this.pos, false, out);
    }
  }

  private emit(end: number, zeros: boolean, out: ChunkBoundary[]): void {
    out.push({ end, zeros });
    this.chunkStart = end;
  }

  /** Roll one byte in; true when the window says "split after this byte". */
  private roll(ch: number): boolean {
    const drop = this.window[this.wofs]!;
    this.s1 = (this.s1 + ch - drop) >>> 0;
    this.s2 = (this.s2 + this.s1 - WINDOW * (drop + CHAR_OFFSET)) >>> 0;
    this.window[this.wofs] = ch;
    this.wofs = (this.wofs + 1) & (WINDOW - 1);
    return (this.s2 & SPLIT_MASK) === SPLIT_MASK;
  }
}
