// Reading back a verified chunk from the disk cache: shared by the FUSE thread (small chunks) and the workers.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

/**
 * A chunk file's bytes if they hash to `hex`; 'missing' or 'corrupt' otherwise. Synchronous on purpose: callers are a
 * worker (which does nothing else meanwhile) or the FUSE thread for small chunks (LayerWork.readChunkFile), and one
 * read of a page-cached chunk is cheaper than four thread-pool round trips (open, fstat, read, close).
 */
export function verifiedChunkFile(path: string, hex: string): Buffer | 'missing' | 'corrupt' {
  let data: Buffer;
  try {
    data = readFileSync(path);
  } catch {
    return 'missing';
  }
  return createHash('sha256').update(data).digest('hex') === hex ? data : 'corrupt';
}
