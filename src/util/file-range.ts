import { open, type FileHandle } from 'node:fs/promises';

/** Random reads of a local file, with exact lengths: the local-file twin of a registry blob. */
export interface FileRangeReader {
  readonly size: number;
  read(start: number, end: number): Promise<Buffer>;
  close(): Promise<void>;
}

export async function openFileRange(path: string): Promise<FileRangeReader> {
  const fh: FileHandle = await open(path, 'r');
  const { size } = await fh.stat();
  return {
    size,
    async read(start: number, end: number): Promise<Buffer> {
      if (start < 0 || end > size || end < start) {
        throw new RangeError(`${path}: range [${start}, ${end}) is outside the file's ${size} bytes`);
      }
      const buf = Buffer.allocUnsafe(end - start);
      let done = 0;
      while (done < buf.length) {
        const { bytesRead } = await fh.read(buf, done, buf.length - done, start + done);
        if (bytesRead === 0) throw new Error(`${path}: file shrank while reading [${start}, ${end})`);
        done += bytesRead;
      }
      return buf;
    },
    close: () => fh.close(),
  };
}
