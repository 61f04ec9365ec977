import { layerKind, openChunkedLayer, type LayerKind } from '../format/index.js';
import type { RegistryClient } from '../registry/index.js';

export interface RemoteLayer {
  digest: string;
  mediaType: string;
  size: number;
  diffID: string | undefined;
  /** zstd:chunked (with tar-split), zstd:chunked-no-tarsplit, zstd:chunked-legacy, estargz, plain. */
  kind: LayerKind | 'zstd:chunked-no-tarsplit';
  /** Whether tocfs serves it lazily (podman otherwise pulls it itself). */
  lazy: boolean;
  tocDigest?: string;
  entries?: number;
  /** Bytes of the blob read to verify the TOC (and tar-split). */
  bytesRead?: number;
  /** Why it is not servable, when it is not. */
  reason?: string;
}

export interface RemoteInspection {
  ref: string;
  manifestDigest: string;
  layers: RemoteLayer[];
}

/**
 * Describe an image's layers without pulling them: for zstd:chunked layers only the TOC and tar-split ranges are
 * fetched, and verified (TOC digest against the manifest annotation, tar-split against the TOC, both cross-checked).
 */
export async function inspectRemote(client: RegistryClient, ref: string): Promise<RemoteInspection> {
  const img = await client.resolveImage(ref);
  const layers: RemoteLayer[] = [];
  for (const [i, desc] of img.manifest.manifest.layers.entries()) {
    const kind = layerKind(desc.annotations);
    const base = { digest: desc.digest, mediaType: desc.mediaType, size: desc.size, diffID: img.config.diffIds[i] };
    if (kind !== 'zstd:chunked') {
      const reason = kind === 'estargz' ? 'eStargz layers are not served lazily (no tar-split to prove the tar)'
        : kind === 'zstd:chunked-legacy' ? 'zstd:chunked of c/storage ≤ 1.43 (old annotation keys, no tar-split)'
          : 'no TOC: pulled as a whole';
      layers.push({ ...base, kind, lazy: false, reason });
      continue;
    }
    const source = await client.getBlobSource(ref, desc);
    let bytesRead = 0;
    const reader = {
      size: desc.size,
      read: async (s: number, e: number) => {
        bytesRead += e - s;
        return (await source.readRanges([{ start: s, end: e }]))[0]!;
      },
    };
    const layer = await openChunkedLayer(reader, desc.annotations ?? {});
    const hasTarSplit = layer.tarSplit !== undefined;
    layers.push({
      ...base, kind: hasTarSplit ? 'zstd:chunked' : 'zstd:chunked-no-tarsplit', lazy: hasTarSplit && base.diffID !== undefined,
      tocDigest: layer.toc.tocDigest, entries: layer.toc.files.length, bytesRead,
      ...(hasTarSplit ? {} : { reason: 'no tar-split (written before c/storage 1.54): its tar cannot be proven' }),
    });
  }
  return { ref: img.reference.string, manifestDigest: img.manifest.digest, layers };
}
