/**
 * CRC-64/GO-ISO (Go's crc64.MakeTable(crc64.ISO)): tar-split stores it per file, big-endian, and reassembly
 * checks it. BigInt per byte is far too slow, so the 64-bit state is kept as two 32-bit halves.
 */
const TABLE_HI = new Uint32Array(256);
const TABLE_LO = new Uint32Array(256);

(function buildTable() {
  // Reflected polynomial 0xD800000000000000: high half 0xD8000000, low half 0.
  for (let i = 0; i < 256; i++) {
    let hi = 0;
    let lo = i;
    for (let k = 0; k < 8; k++) {
      const lsb = lo & 1;
      lo = ((lo >>> 1) | ((hi & 1) << 31)) >>> 0;
      hi = hi >>> 1;
      if (lsb) hi = (hi ^ 0xd8000000) >>> 0;
    }
    TABLE_HI[i] = hi;
    TABLE_LO[i] = lo;
  }
})();

export class Crc64 {
  private hi = 0xffffffff;
  private lo = 0xffffffff;

  update(data: Uint8Array): this {
    let hi = this.hi;
    let lo = this.lo;
    for (let i = 0; i < data.length; i++) {
      const idx = (lo ^ data[i]!) & 0xff;
      // state = table[idx] ^ (state >> 8)
      lo = (TABLE_LO[idx]! ^ ((lo >>> 8) | (hi << 24))) >>> 0;
      hi = (TABLE_HI[idx]! ^ (hi >>> 8)) >>> 0;
    }
    this.hi = hi;
    this.lo = lo;
    return this;
  }

  /** The 8 bytes tar-split stores: the final CRC, big-endian. */
  digest(): Buffer {
    const out = Buffer.alloc(8);
    out.writeUInt32BE((this.hi ^ 0xffffffff) >>> 0, 0);
    out.writeUInt32BE((this.lo ^ 0xffffffff) >>> 0, 4);
    return out;
  }
}

export function crc64(data: Uint8Array): Buffer {
  return new Crc64().update(data).digest();
}
