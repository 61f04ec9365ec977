import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { openChunkedLayer, verifyChunkedLayer, layerKind } from '../format/index.js';
import { openFileRange, TocfsError } from '../util/index.js';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

interface DescriptorFile {
  mediaType?: string;
  digest?: string;
  size?: number;
  annotations?: Record<string, string>;
}

export interface LocalInspection {
  format: string;
  mediaType: string | undefined;
  blobDigest: string;
  blobSize: number;
  tocDigest: string;
  diffID: string | undefined;
  diffSize: number | undefined;
  /** TOC entries that are not `chunk` entries: one per tar entry. */
  entries: number;
  /** Content chunks over all files (a file of one frame counts one). */
  chunks: number;
  /** TOC entries of type `chunk`. */
  chunkEntries: number;
  tarSplit: boolean;
  filesRead: number;
  bytesRead: number;
}

async function hashFile(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const b of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(b as Buffer);
  return `sha256:${h.digest('hex')}`;
}

/** Verify a local layer end to end: blob digest, TOC, tar-split, every chunk, and the rebuilt tar's DiffID. */
export async function inspectLocalLayer(blobPath: string, descriptorPath: string): Promise<LocalInspection> {
  let desc: DescriptorFile;
  try {
    desc = JSON.parse(await readFile(descriptorPath, 'utf8')) as DescriptorFile;
  } catch (err) {
    throw new TocfsError('BAD_DESCRIPTOR', `cannot read the descriptor ${descriptorPath}: ${(err as Error).message}`);
  }
  const kind = layerKind(desc.annotations);
  if (kind !== 'zstd:chunked') {
    throw new TocfsError('NOT_CHUNKED', `${descriptorPath}: the layer is ${kind}, not zstd:chunked (no ${'io.github.containers.zstd-chunked.manifest-checksum'} annotation); nothing to verify lazily`);
  }
  const blob = await openFileRange(blobPath);
  try {
    const blobDigest = await hashFile(blobPath);
    if (desc.digest !== undefined && desc.digest !== blobDigest) {
      throw new TocfsError('DIGEST_MISMATCH', `${blobPath} hashes to ${blobDigest}, the descriptor says ${desc.digest}`);
    }
    if (desc.size !== undefined && desc.size !== blob.size) {
      throw new TocfsError('SIZE_MISMATCH', `${blobPath} is ${blob.size} bytes, the descriptor says ${desc.size}`);
    }
    const layer = await openChunkedLayer(blob, desc.annotations ?? {});
    const v = await verifyChunkedLayer(blob, layer);
    return {
      format: 'zstd:chunked', mediaType: desc.mediaType, blobDigest, blobSize: blob.size, tocDigest: layer.toc.tocDigest,
      diffID: v.diffID, diffSize: v.diffSize, entries: layer.toc.files.length,
      chunks: layer.toc.files.reduce((n, f) => n + f.chunks.length, 0), chunkEntries: layer.toc.chunkEntries,
      tarSplit: layer.tarSplit !== undefined, filesRead: v.filesRead, bytesRead: v.bytesRead,
    };
  } finally {
    await blob.close();
  }
}

export function registerInspect(program: Command): void {
  program
    .command('inspect')
    .description('verify a zstd:chunked layer end to end and describe it')
    .argument('<blob>', 'the layer blob file')
    .requiredOption('--descriptor <file>', 'the OCI descriptor of the layer (JSON with digest, size, annotations)')
    .option('--json', 'print one JSON object')
    .action(async (blobPath: string, opts: { descriptor: string; json?: boolean }) => {
      const r = await inspectLocalLayer(blobPath, opts.descriptor);
      if (opts.json) {
        process.stdout.write(JSON.stringify(r, null, 2) + '\n');
        return;
      }
      const lines = [
        `format      ${r.format}${r.tarSplit ? ' (with tar-split)' : ' (no tar-split: podman ≥ 5.4 will not pull it partially)'}`,
        `blob        ${r.blobDigest} (${r.blobSize} bytes)`,
        `TOC         ${r.tocDigest}`,
        `DiffID      ${r.diffID ?? 'unknown (no tar-split)'}`,
        `tar size    ${r.diffSize ?? 'unknown'}`,
        `entries     ${r.entries} (${r.chunks} chunks, ${r.chunkEntries} chunk entries)`,
        `verified    ${r.filesRead} files, ${r.bytesRead} bytes: every chunk digest, file digest, CRC-64 and the DiffID`,
      ];
      process.stdout.write(lines.join('\n') + '\n');
    });
}
