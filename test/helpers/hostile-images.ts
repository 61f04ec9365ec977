// Images that attack the daemon's resources rather than its integrity checks: built here, pushed to a real
// registry by the tests, and served next to a good image whose latency the tests watch.
import { createHash } from 'node:crypto';
import {
  ANNOTATION_TARSPLIT_POSITION, compressFrame, decodeTarSplit, decompressFrames, encodeTarSplitLine, writeZstdChunked,
} from '../../src/format/index.js';
import { TarBuilder } from '../format/tar-builder.js';
import { assemble, position, seedLayer, splitBlob } from '../format/helpers.js';
import type { BuiltImage } from './image-builder.js';

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** A one-layer image around a zstd:chunked blob (`diffID`: what the config claims). */
export function imageOf(blob: Buffer, annotations: Record<string, string>, diffID: string): BuiltImage {
  const config = Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux', config: { Cmd: ['/bin/sh'] }, rootfs: { type: 'layers', diff_ids: [diffID] },
  }));
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd', digest: sha(blob), size: blob.length, annotations }],
  }));
  return {
    manifest, config, blobs: new Map([[sha(blob), blob], [sha(config), config]]),
    layers: [{ digest: sha(blob), diffID, compression: 'zstd:chunked', tocDigest: annotations['io.github.containers.zstd-chunked.manifest-checksum']! }],
  };
}

/** An honest image of an in-memory tar, converted by our writer. */
export async function imageOfTar(tar: Buffer): Promise<BuiltImage> {
  const parts: Buffer[] = [];
  const r = await writeZstdChunked([tar], (b) => { parts.push(b); });
  return imageOf(Buffer.concat(parts), r.annotations, sha(tar));
}

/** `n` empty files in one directory: a tiny blob (the headers compress ~50×) with a huge TOC. */
export function wideDirTar(n: number): Buffer {
  const t = new TarBuilder().dir('w/');
  for (let i = 0; i < n; i++) t.file(`w/f${String(i).padStart(7, '0')}`);
  return t.build();
}

/** A chain of `depth` nested directories with one file at the bottom. */
export function deepTreeTar(depth: number): Buffer {
  const t = new TarBuilder();
  let path = '';
  for (let i = 0; i < depth; i++) {
    path += 'd/';
    t.dir(path);
  }
  return t.file(`${path}bottom`, 'deep').build();
}

/** A layer whose TOC declares one zeros chunk of `holeBytes` (the rest of the layer is honest). */
export async function zeroBombImage(holeBytes: number): Promise<BuiltImage> {
  const seed = await seedLayer();
  const toc = JSON.parse(decompressFrames(seed.tocZ, 64 << 20, 'TOC').toString()) as { entries: Record<string, unknown>[] };
  const big = toc.entries.filter((e) => e['name'] === 'd/big');
  const zeros = big.find((e) => e['chunkType'] === 'zeros')!;
  const delta = holeBytes - (zeros['chunkSize'] as number);
  zeros['chunkSize'] = holeBytes;
  for (const e of big) {
    if (e['type'] === 'reg') e['size'] = (e['size'] as number) + delta;
    else if ((e['chunkOffset'] as number) > (zeros['chunkOffset'] as number)) e['chunkOffset'] = (e['chunkOffset'] as number) + delta;
  }
  const { blob, annotations } = assemble(seed.data, JSON.stringify(toc), { z: seed.tarSplitZ, size: seed.tarSplitSize });
  return imageOf(blob, annotations, sha(seed.tar));
}

/**
 * A layer whose tar-split (authenticated by its TOC) gives one file a wrong CRC-64: TOC and tar-split still
 * describe the same files, every chunk verifies, but the DiffID proof fails with a CRC error.
 */
export async function badCrcImage(): Promise<BuiltImage> {
  const seed = await seedLayer();
  const [, , tsSize] = position(seed.result.annotations, ANNOTATION_TARSPLIT_POSITION);
  const entries = decodeTarSplit(decompressFrames(seed.tarSplitZ, tsSize, 'tar-split').toString());
  const victim = entries.find((e) => e.type === 'file' && e.name === 'd/small' && e.crc);
  if (!victim || victim.type !== 'file' || !victim.crc) throw new Error('seed layer changed: no d/small in its tar-split');
  victim.crc = Buffer.from(victim.crc.map((b) => b ^ 0xff));
  const text = Buffer.from(entries.map((e, i) => encodeTarSplitLine(e, i)).join(''));
  const tsZ = compressFrame(text, 1);
  const toc = JSON.parse(decompressFrames(seed.tocZ, 64 << 20, 'TOC').toString()) as { tarSplitDigest: string };
  toc.tarSplitDigest = sha(tsZ);
  const { blob, annotations } = assemble(splitBlob(seed.blob, seed.result.annotations).data, JSON.stringify(toc), { z: tsZ, size: text.length });
  return imageOf(blob, annotations, sha(seed.tar));
}
