/**
 * The chunker of c/storage's zstd:chunked writer: bup's rolling checksum (window 64, split when the low 16 bits
 * of s2 are all ones) plus a holes finder that turns runs of ≥ 1024 zero bytes into "zeros" chunks. Chunk
 * boundaries decide which chunk digests two layers share, so they must match the reference writer exactly.
 */
const WINDOW = 64;
const CHAR_OFFSET = 31;
const SPLIT_MASK = 0xffff;
const S1_INIT = WINDOW * CHAR_OFFSET;
const S2_INIT = WINDOW * (WINDOW - 1) * CHAR_OFFSET;
export const HOLE_THRESHOLD = 1024;

/** One chunk of a file's payload as the chunker decides it: it ends at `end` (exclusive, file offset). */
export interface ChunkBoundary {
  end: number;
  zeros: boolean;
}

/**
 * Feeds a file's payload in pieces and reports chunk ends. Equivalent to c/storage's rollingChecksumReader over
 * holesFinder: zero runs shorter than the threshold are ordinary data; a longer run ends the data chunk before
 * it and is one chunk itself; the rollsum rolls over the zeros of a hole but never splits inside it.
 *
 * Speed: the per-byte loop keeps the state in locals with int32 arithmetic (mod 2^32 like Go's uint32; only the
 * low 16 bits are tested). And after 64 zero bytes the window is all zeros again, which is exactly the initial
 * state (s1, s2 are functions of the window plus constants), so only the first 64 zeros of a run need rolling.
 */
export class Chunker {
  private s1 = S1_INIT;
  private s2 = S2_INIT;
  private readonly window = new Uint8Array(WINDOW);
  private wofs = 0;
  /** File offset of the first byte not yet assigned to a chunk. */
  private chunkStart = 0;
  /** Bytes consumed and decided (excludes a trailing zero run still being measured). */
  private pos = 0;
  /** Length of the zero run that ends the input so far and is not decided yet (data or hole). */
  private pendingZeros = 0;

  /** Bytes whose chunk is decided: everything consumed except a trailing run of zeros still being measured. */
  get decided(): number {
    return this.pos;
  }

  /**
   * Consume `data`; returns the chunks that ended inside it. Boundaries depend only on the bytes, never on how
   * the payload is split into calls.
   */
  push(data: Uint8Array, out: ChunkBoundary[] = []): ChunkBoundary[] {
    const win = this.window;
    let s1 = this.s1 | 0;
    let s2 = this.s2 | 0;
    let wofs = this.wofs;
    let pos = this.pos;
    let zeros = this.pendingZeros;
    const n = data.length;
    for (let i = 0; i < n; i++) {
      const b = data[i]!;
      if (b === 0) {
        // Measure the whole zero run at once; decide it when a non-zero byte (or the end) arrives.
        let j = i + 1;
        while (j < n && data[j] === 0) j++;
        zeros += j - i;
        i = j - 1;
        continue;
      }
      if (zeros > 0) {
        this.s1 = s1; this.s2 = s2; this.wofs = wofs; this.pos = pos; this.pendingZeros = zeros;
        this.flushZeros(out);
        s1 = this.s1; s2 = this.s2; wofs = this.wofs; pos = this.pos; zeros = 0;
      }
      const drop = win[wofs]!;
      s1 = (s1 + b - drop) | 0;
      s2 = (s2 + s1 - WINDOW * (drop + CHAR_OFFSET)) | 0;
      win[wofs] = b;
      wofs = (wofs + 1) & (WINDOW - 1);
      pos++;
      if ((s2 & SPLIT_MASK) === SPLIT_MASK) {
        out.push({ end: pos, zeros: false });
        this.chunkStart = pos;
      }
    }
    this.s1 = s1; this.s2 = s2; this.wofs = wofs; this.pos = pos; this.pendingZeros = zeros;
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
      this.rollZeros(n, undefined);
      this.pos += n;
      this.emit(this.pos, true, out);
      return;
    }
    this.rollZeros(n, out);
  }

  /**
   * Roll `n` zero bytes in. With `out`, they are data bytes (split-checked, advancing pos); without, they are a
   * hole (no splits, the caller advances pos). Beyond 64 zeros the state is the initial one: no split can occur
   * there (S2_INIT's low 16 bits are 0xe840), so the rest only advances the window offset.
   */
  private rollZeros(n: number, out: ChunkBoundary[] | undefined): void {
    const rolled = Math.min(n, WINDOW);
    for (let k = 0; k < rolled; k++) {
      const drop = this.window[this.wofs]!;
      this.s1 = (this.s1 - drop) | 0;
      this.s2 = (this.s2 + this.s1 - WINDOW * (drop + CHAR_OFFSET)) | 0;
      this.window[this.wofs] = 0;
      this.wofs = (this.wofs + 1) & (WINDOW - 1);
      if (out) {
        this.pos++;
        if ((this.s2 & SPLIT_MASK) === SPLIT_MASK) this.emit(this.pos, false, out);
      }
    }
    if (n > WINDOW) {
      this.s1 = S1_INIT;
      this.s2 = S2_INIT;
      this.wofs = (this.wofs + (n - WINDOW)) & (WINDOW - 1);
      if (out) this.pos += n - WINDOW;
    }
  }

  private emit(end: number, zeros: boolean, out: ChunkBoundary[]): void {
    out.push({ end, zeros });
    this.chunkStart = end;
  }
}
