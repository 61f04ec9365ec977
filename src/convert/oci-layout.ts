import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { once } from 'node:events';
import { isDigest, parseDigest, sha256Digest, TocfsError, type Digest } from '../util/index.js';
import {
  ANNOTATION_REF_NAME, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST,
  type Descriptor, type ImageIndex, type ImageManifest,
} from './oci-types.js';

export class LayoutError extends TocfsError {}

const MAX_JSON = 4 << 20;

/** An OCI image layout directory (image-spec "image-layout"): blobs/sha256/<hex>, index.json, oci-layout. */
export class OciLayout {
  constructor(readonly dir: string) {}

  blobPath(digest: Digest): string {
    return join(this.dir, 'blobs', 'sha256', digest.slice('sha256:'.length));
  }

  /** Read a small blob (manifest, config) and check that it hashes to its digest. */
  async readJsonBlob<T>(desc: Pick<Descriptor, 'digest' | 'size'>): Promise<{ value: T; raw: Buffer }> {
    if (desc.size > MAX_JSON) throw new LayoutError('LAYOUT_INVALID', `${this.dir}: JSON blob ${desc.digest} is ${desc.size} bytes, over the ${MAX_JSON}-byte limit`);
    const raw = await this.readBlob(desc.digest);
    if (raw.length !== desc.size) {
      throw new LayoutError('LAYOUT_INVALID', `${this.dir}: blob ${desc.digest} is ${raw.length} bytes, its descriptor says ${desc.size}`);
    }
    try {
      return { value: JSON.parse(raw.toString('utf8')) as T, raw };
    } catch {
      throw new LayoutError('LAYOUT_INVALID', `${this.dir}: blob ${desc.digest} is not JSON`);
    }
  }

  async readBlob(digest: Digest): Promise<Buffer> {
    const raw = await readFile(this.blobPath(digest)).catch((err: NodeJS.ErrnoException) => {
      throw new LayoutError('LAYOUT_INVALID', `${this.dir}: blob ${digest} is missing (${err.code})`);
    });
    const actual = sha256Digest(raw);
    if (actual !== digest) throw new LayoutError('LAYOUT_INVALID', `${this.dir}: blob ${digest} is corrupt (hashes to ${actual})`);
    return raw;
  }

  /** Stream a blob; the caller is responsible for verifying (the converter hashes what it reads). */
  openBlob(digest: Digest): AsyncIterable<Buffer> {
    return createReadStream(this.blobPath(digest), { highWaterMark: 1 << 20 });
  }

  async readIndex(): Promise<ImageIndex> {
    const raw = await readFile(join(this.dir, 'index.json'), 'utf8').catch(() => {
      throw new LayoutError('LAYOUT_INVALID', `${this.dir} is not an OCI image layout (no index.json)`);
    });
    const index = JSON.parse(raw) as ImageIndex;
    if (index.schemaVersion !== 2 || !Array.isArray(index.manifests)) {
      throw new LayoutError('LAYOUT_INVALID', `${this.dir}/index.json is not an OCI image index`);
    }
    return index;
  }

  /**
   * The image manifest named `tag` (or the only image when no tag is given). An index entry that is itself an
   * index is followed to its first manifest for this host's platform.
   */
  async readImage(tag: string | undefined): Promise<{ manifest: ImageManifest; descriptor: Descriptor }> {
    const index = await this.readIndex();
    const named = tag === undefined ? index.manifests : index.manifests.filter((m) => m.annotations?.[ANNOTATION_REF_NAME] === tag);
    if (named.length === 0) throw new LayoutError('IMAGE_NOT_FOUND', `${this.dir}: no image${tag ? ` tagged "${tag}"` : ''} in index.json`);
    if (named.length > 1) throw new LayoutError('IMAGE_AMBIGUOUS', `${this.dir} holds ${named.length} images; name one with oci:${this.dir}:<tag>`);
    let desc = named[0]!;
    for (let depth = 0; depth < 4 && (desc.mediaType === MEDIA_OCI_INDEX || desc.mediaType.endsWith('manifest.list.v2+json')); depth++) {
      const { value } = await this.readJsonBlob<ImageIndex>(desc);
      const pick = value.manifests.find((m) => !m.platform || (m.platform.os === 'linux' && m.platform.architecture === hostArch()));
      if (!pick) throw new LayoutError('IMAGE_NOT_FOUND', `${this.dir}: index ${desc.digest} has no image for linux/${hostArch()}`);
      desc = pick;
    }
    if (desc.mediaType !== MEDIA_OCI_MANIFEST && desc.mediaType !== MEDIA_DOCKER_MANIFEST) {
      throw new LayoutError('LAYOUT_INVALID', `${this.dir}: ${desc.digest} has unsupported media type ${desc.mediaType}`);
    }
    const { value } = await this.readJsonBlob<ImageManifest>(desc);
    if (!Array.isArray(value.layers) || !value.config || !isDigest(value.config.digest)) {
      throw new LayoutError('LAYOUT_INVALID', `${this.dir}: manifest ${desc.digest} has no config or layers`);
    }
    return { manifest: value, descriptor: desc };
  }

  async init(): Promise<void> {
    await mkdir(join(this.dir, 'blobs', 'sha256'), { recursive: true });
    const marker = join(this.dir, 'oci-layout');
    if (!(await exists(marker))) await writeFile(marker, JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    if (!(await exists(join(this.dir, 'index.json')))) {
      await writeFile(join(this.dir, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_OCI_INDEX, manifests: [] }));
    }
  }

  async putBlob(data: Buffer): Promise<Digest> {
    const digest = sha256Digest(data);
    const path = this.blobPath(digest);
    if (!(await exists(path))) {
      await writeFile(`${path}.tmp-${process.pid}`, data);
      await rename(`${path}.tmp-${process.pid}`, path);
    }
    return digest;
  }

  /**
   * A writer for a blob whose digest is known only at the end: bytes go to a temporary file that is renamed to
   * blobs/sha256/<digest> on commit, so a crash never leaves a blob under a wrong name.
   */
  async createBlobWriter(): Promise<BlobWriter> {
    const tmp = join(this.dir, 'blobs', 'sha256', `.tmp-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}`);
    return spoolWriter(tmp, (digest) => rename(tmp, this.blobPath(digest)), () => rm(tmp, { force: true }));
  }

  /** Record an image in index.json under `tag`, replacing an earlier image of that name. */
  async addToIndex(desc: Descriptor, tag: string | undefined): Promise<void> {
    const index = await this.readIndex();
    const entry: Descriptor = { mediaType: desc.mediaType, digest: desc.digest, size: desc.size };
    if (tag) entry.annotations = { [ANNOTATION_REF_NAME]: tag };
    index.manifests = index.manifests.filter((m) => (tag ? m.annotations?.[ANNOTATION_REF_NAME] !== tag : m.digest !== desc.digest));
    index.manifests.push(entry);
    const path = join(this.dir, 'index.json');
    await writeFile(`${path}.tmp`, JSON.stringify(index));
    await rename(`${path}.tmp`, path);
  }
}

export interface BlobWriter {
  write(chunk: Buffer): Promise<void>;
  commit(): Promise<{ digest: Digest; size: number }>;
  abort(): Promise<void>;
}

/**
 * A BlobWriter that spools to `tmp`, hashing as it goes; on commit `finish(digest, size)` moves or uploads the
 * file (for blobs whose digest is known only at their end), on abort `cleanup` removes what was written.
 */
export function spoolWriter(tmp: string, finish: (digest: Digest, size: number) => Promise<void>, cleanup: () => Promise<void>): BlobWriter {
  const stream = createWriteStream(tmp);
  const hash = createHash('sha256');
  let size = 0;
  return {
    write: async (chunk: Buffer) => {
      hash.update(chunk);
      size += chunk.length;
      if (!stream.write(chunk)) await once(stream, 'drain');
    },
    commit: async () => {
      stream.end();
      await once(stream, 'close');
      const digest = parseDigest(`sha256:${hash.digest('hex')}`, 'blob');
      await finish(digest, size);
      return { digest, size };
    },
    abort: async () => {
      stream.destroy();
      await cleanup();
    },
  };
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(() => true, () => false);
}

/** OCI architecture name of this machine. */
export function hostArch(): string {
  const map: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
  return map[process.arch] ?? process.arch;
}
