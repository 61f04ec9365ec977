import { createHash } from 'node:crypto';
import type { Digest } from '../util/index.js';
import type { CallSignal, RegistryClient } from './client.js';
import { RegistryNotFoundError } from './errors.js';
import { MediaType, type Descriptor } from './manifest.js';
import { withDigest, withTag, type ImageReference } from './reference.js';

/** The OCI 1.1 empty config (`{}`) that artifacts without a config point at. */
const EMPTY_CONFIG = Buffer.from('{}');
const MEDIA_TYPE_EMPTY = 'application/vnd.oci.empty.v1+json';
/** Artifacts are small; a referrer index or artifact blob beyond this is not ours to read. */
const MAX_ARTIFACT_BYTES = 4 << 20;

const sha = (b: Uint8Array): Digest => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/**
 * The referrers tag schema of the OCI distribution spec 1.1 (`sha256-<hex>`): registries without the referrers API
 * (docker-registry 2.8, the one Debian ships) keep an image index of a manifest's referrers under this tag.
 */
export function referrersTag(subject: Digest): string {
  return `${subject.replace(':', '-')}`;
}

/**
 * Attach an artifact to a manifest without changing it (OCI 1.1): the artifact's blob, an artifact manifest whose
 * `subject` is that manifest, and the referrers index under the tag schema, where an earlier artifact of the same
 * type is replaced (one hint per image). Returns the artifact manifest's digest.
 */
export async function attachArtifact(
  client: RegistryClient, ref: ImageReference, subject: Descriptor, artifactType: string, data: Buffer,
): Promise<Digest> {
  await client.pushBlob(ref, EMPTY_CONFIG);
  await client.pushBlob(ref, data);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: MediaType.OciManifest, artifactType,
    config: { mediaType: MEDIA_TYPE_EMPTY, digest: sha(EMPTY_CONFIG), size: EMPTY_CONFIG.length },
    layers: [{ mediaType: artifactType, digest: sha(data), size: data.length }],
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
  }));
  const digest = await client.pushManifest(withDigest(ref, sha(manifest)), manifest, MediaType.OciManifest);
  const tagRef = withTag(ref, referrersTag(subject.digest));
  const kept = (await referrerIndex(client, tagRef)).filter((d) => d.artifactType !== artifactType);
  const index = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: MediaType.OciIndex,
    manifests: [...kept, { mediaType: MediaType.OciManifest, digest, size: manifest.length, artifactType }],
  }));
  await client.pushManifest(tagRef, index, MediaType.OciIndex);
  return digest;
}

/** The descriptors of the referrers index under the tag schema ([] when there is none). */
async function referrerIndex(client: RegistryClient, tagRef: ImageReference, opts: CallSignal = {}): Promise<Descriptor[]> {
  try {
    const m = await client.fetchManifest(tagRef, opts);
    return m.manifest.kind === 'index' ? [...m.manifest.manifests] : [];
  } catch (err) {
    if (err instanceof RegistryNotFoundError) return [];
    throw err;
  }
}

/**
 * The blob of the newest artifact of `artifactType` attached to `subject`, or undefined when none is attached.
 * Errors other than "not found" are thrown (the caller decides how much a missing artifact matters).
 */
export async function findArtifact(
  client: RegistryClient, ref: ImageReference, subject: Digest, artifactType: string, opts: CallSignal = {},
): Promise<Buffer | undefined> {
  const found = (await referrerIndex(client, withTag(ref, referrersTag(subject)), opts)).filter((d) => d.artifactType === artifactType);
  const latest = found[found.length - 1];
  if (!latest) return undefined;
  const m = await client.fetchManifest(withDigest(ref, latest.digest), opts);
  if (m.manifest.kind !== 'manifest') return undefined;
  const blob = m.manifest.layers[0];
  if (!blob || blob.size > MAX_ARTIFACT_BYTES) return undefined;
  return client.fetchBlob(ref, blob, opts);
}
