import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RegistryClient } from '../registry/index.js';
import type { Digest } from '../util/index.js';
import type { ImageDestination, ImageSource } from './convert.js';
import { spoolWriter, type BlobWriter } from './oci-layout.js';
import type { ImageManifest } from './oci-types.js';

const PIECE = 8 << 20;

/** A registry image as a conversion source: manifest (index → host platform) and config verified by the client. */
export function registrySource(client: RegistryClient, ref: string): ImageSource {
  return {
    name: `docker://${ref}`,
    async getImage() {
      const r = await client.resolveImage(ref);
      const { kind: _kind, ...manifest } = r.manifest.manifest;
      return { manifest: { schemaVersion: 2, ...manifest } as ImageManifest, configRaw: r.configBytes };
    },
    openBlob(desc) {
      return (async function* () {
        const source = await client.getBlobSource(ref, desc);
        for (let at = 0; at < desc.size; at += PIECE) {
          const [b] = await source.readRanges([{ start: at, end: Math.min(desc.size, at + PIECE) }]);
          yield b!;
        }
      })();
    },
  };
}

/**
 * A registry repository as a conversion destination. A converted layer's digest is known only at its end, so
 * it is spooled to a temporary file and pushed from there (existing blobs are skipped by the client).
 */
export function registryDestination(client: RegistryClient, ref: string): ImageDestination {
  return {
    name: `docker://${ref}`,
    async createBlobWriter(): Promise<BlobWriter> {
      const dir = await mkdtemp(join(tmpdir(), 'tocfs-push-'));
      const path = join(dir, 'blob');
      const removeDir = () => rm(dir, { recursive: true, force: true });
      return spoolWriter(path, async (digest, size) => {
        try {
          await client.pushBlob(ref, { path, size, digest });
        } finally {
          await removeDir();
        }
      }, removeDir);
    },
    async putBlob(data): Promise<Digest> {
      return (await client.pushBlob(ref, data)).digest;
    },
    putManifest: (raw, mediaType) => client.pushManifest(ref, raw, mediaType),
  };
}
