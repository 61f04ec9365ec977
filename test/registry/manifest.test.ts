import assert from 'node:assert/strict';
import { sha256Digest } from '../../src/util/index.js';
import { hostPlatform, ManifestError, matchPlatform, MediaType, parseImageConfig, parseManifest, type ImageIndex }
  from '../../src/registry/index.js';
import { selectPlatform } from '../../src/registry/manifest.js';

const d = (s: string) => sha256Digest(Buffer.from(s));
const json = (v: unknown) => Buffer.from(JSON.stringify(v));

function index(platforms: ({ os: string; architecture: string; variant?: string } | undefined)[]): ImageIndex {
  const m = parseManifest(json({
    schemaVersion: 2, mediaType: MediaType.OciIndex,
    manifests: platforms.map((p, i) => ({ mediaType: MediaType.OciManifest, digest: d(String(i)), size: 10 + i, ...(p ? { platform: p } : {}) })),
  }), undefined, 't');
  assert.equal(m.kind, 'index');
  return m as ImageIndex;
}

describe('registry/manifest', () => {
  it('parses OCI and Docker manifests with their descriptors', () => {
    for (const mediaType of [MediaType.OciManifest, MediaType.DockerManifest]) {
      const m = parseManifest(json({
        schemaVersion: 2, mediaType,
        config: { mediaType: MediaType.OciConfig, digest: d('c'), size: 3 },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd', digest: d('l'), size: 5, annotations: { a: 'b' } }],
      }), mediaType, 't');
      assert.equal(m.kind, 'manifest');
      if (m.kind !== 'manifest') return;
      assert.equal(m.mediaType, mediaType);
      assert.equal(m.layers[0]!.annotations?.a, 'b');
      assert.equal(m.config.digest, d('c'));
    }
  });

  it('takes the type from Content-Type when the document has no mediaType, and rejects contradictions', () => {
    const doc = { schemaVersion: 2, manifests: [] };
    assert.equal(parseManifest(json(doc), `${MediaType.DockerManifestList}; charset=utf-8`, 't').mediaType, MediaType.DockerManifestList);
    assert.throws(() => parseManifest(json({ ...doc, mediaType: MediaType.OciIndex }), MediaType.OciManifest, 't'), ManifestError);
  });

  it('rejects schema1, bad digests, bad sizes and non-JSON', () => {
    assert.throws(() => parseManifest(json({ schemaVersion: 1, name: 'x' }), undefined, 'm1'), /schemaVersion 1/);
    const bad = (layer: object) => parseManifest(json({ schemaVersion: 2, mediaType: MediaType.OciManifest,
      config: { mediaType: 'x', digest: d('c'), size: 1 }, layers: [layer] }), undefined, 'm2');
    assert.throws(() => bad({ mediaType: 'x', digest: 'sha512:' + 'a'.repeat(128), size: 1 }), /sha256/);
    assert.throws(() => bad({ mediaType: 'x', digest: d('a'), size: -1 }), /size/);
    assert.throws(() => bad({ mediaType: 'x', digest: d('a'), size: 1.5 }), /size/);
    assert.throws(() => parseManifest(Buffer.from('{'), undefined, 'm3'), (e: unknown) => e instanceof ManifestError && e.code === 'REGISTRY_MANIFEST_INVALID');
  });

  it('selects the platform: exact arch, variant preference, attestations skipped', () => {
    const idx = index([
      { os: 'unknown', architecture: 'unknown' },
      { os: 'linux', architecture: 'arm', variant: 'v6' },
      { os: 'linux', architecture: 'arm64', variant: 'v8' },
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm', variant: 'v7' },
      { os: 'windows', architecture: 'amd64' },
      undefined,
    ]);
    assert.deepEqual(matchPlatform(idx, { os: 'linux', architecture: 'amd64' }).map((x) => x.size), [13]);
    assert.deepEqual(matchPlatform(idx, { os: 'linux', architecture: 'arm64' }).map((x) => x.size), [12]);
    assert.deepEqual(matchPlatform(idx, { os: 'linux', architecture: 'arm', variant: 'v7' }).map((x) => x.size), [14, 11]);
    assert.deepEqual(matchPlatform(idx, { os: 'linux', architecture: 'arm', variant: 'v6' }).map((x) => x.size), [11]);
    assert.throws(() => selectPlatform(idx, { os: 'linux', architecture: 's390x' }, 'pick'),
      (e: unknown) => e instanceof Error && /linux\/s390x.*linux\/amd64/.test(e.message));
  });

  it('maps the host platform to OCI names', () => {
    const p = hostPlatform();
    assert.equal(p.os, 'linux');
    if (process.arch === 'x64') assert.equal(p.architecture, 'amd64');
    if (process.arch === 'arm64') assert.deepEqual(p, { os: 'linux', architecture: 'arm64', variant: 'v8' });
  });

  it('reads diff_ids from configs and validates them', () => {
    const c = parseImageConfig(json({ os: 'linux', architecture: 'amd64', rootfs: { type: 'layers', diff_ids: [d('x')] } }), 'cfg');
    assert.deepEqual(c.diffIds, [d('x')]);
    assert.throws(() => parseImageConfig(json({ rootfs: { diff_ids: ['nope'] } }), 'cfg'), /diff_ids\[0\]/);
  });
});
