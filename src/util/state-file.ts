import { randomBytes } from 'node:crypto';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

/**
 * Write a state file whole: a temporary file beside it, then a rename, so a reader (or a restart after a crash)
 * sees the old file or the new one, never a torn one. Directory 0700 and file 0600: the state root holds data of
 * every image. The temporary name is unique per call (worker threads share the process id).
 */
export async function writeStateFile(file: string, data: string | Uint8Array | readonly Uint8Array[]): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await writeFile(tmp, typeof data === 'string' || data instanceof Uint8Array ? data : Buffer.concat(data), { mode: 0o600 });
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => {});
    throw err;
  }
}
