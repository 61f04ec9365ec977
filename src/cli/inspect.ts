import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { openChunkedLayer, verifyChunkedLayer, layerKind } from '../format/index.js';
import { openFileRange, TocfsError } from '../util/index.js';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { inspectRemote } from './inspect-remote.js';
import { registryClientFor, type RegistryFlags } from './registry-flags.js';

async function printRemote(ref: string, opts: { json?: boolean } & RegistryFlags): Promise<void> {
  const client = registryClientFor(opts, [ref]);
  try {
    const r = await inspectRemote(client, ref);
    if (opts.json) {
      process.stdout.write(JSON.stringify(r, null, 2) + '\n');
      return;
    }
    const lines = [`${r.ref} (manifest ${r.manifestDigest})`];
    for (const l of r.layers) {
      lines.push(`  ${l.digest}  ${String(l.size).padStart(11)}  ${l.lazy ? 'lazy ' : 'full '} ${l.kind}${l.tocDigest ? `  TOC ${l.tocDigest} (${l.entries} entries, verified with ${l.bytesRead} bytes)` : ''}${l.reason ? `  — ${l.reason}` : ''}`);
    }
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    await client.close();
  }
}

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
    .description('verify a local zstd:chunked layer end to end, or describe the layers of docker://<ref> (fetching only their TOCs)')
    .argument('<blob-or-ref>', 'a layer blob file (with --descriptor), or docker://<ref>')
    .option('--descriptor <file>', 'the OCI descriptor of the layer (JSON with digest, size, annotations)')
    .option('--json', 'print one JSON object')
    .option('--registries-conf <file>', 'registries.conf to use instead of the system one')
    .option('--insecure', 'talk plain HTTP (or unverified TLS) to the registry')
    .action(async (target: string, opts: { descriptor?: string; json?: boolean } & RegistryFlags) => {
      if (target.startsWith('docker://')) {
        await printRemote(target.slice('docker://'.length), opts);
        return;
      }
      if (!opts.descriptor) throw new TocfsError('BAD_USAGE', `inspect ${target}: a local blob needs --descriptor <descriptor.json> (its digest, size and annotations)`);
      const r = await inspectLocalLayer(target, opts.descriptor);
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
