import { createHash } from 'node:crypto';
import { chmodSync, linkSync, mkdirSync, readFileSync, symlinkSync, utimesSync, writeFileSync, lchownSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { writeZstdChunked } from '../../src/format/index.js';
import type { RegistryClient } from '../../src/registry/index.js';
import { run } from './cli.js';

/** One thing in a layer's tree, created for real on disk and then archived by GNU tar. */
export type TreeItem =
  | { path: string; type: 'file'; data: Buffer | string; mode?: number; uid?: number; gid?: number; xattrs?: Record<string, string> }
  | { path: string; type: 'dir'; mode?: number; xattrs?: Record<string, string> }
  | { path: string; type: 'symlink'; target: string }
  | { path: string; type: 'hardlink'; target: string }
  | { path: string; type: 'char' | 'block'; major: number; minor: number; mode?: number }
  | { path: string; type: 'fifo' }
  /** `.wh.<name>`: hides <name> of lower layers. */
  | { path: string; type: 'whiteout' }
  /** `.wh..wh..opq` in a directory: hides everything lower layers had there. */
  | { path: string; type: 'opaque' };

const MTIME = new Date('2024-05-01T12:00:00Z');

/** Create the items under `root` and tar them like an image builder would (PAX, xattrs, numeric owners). */
export async function buildLayerTar(work: string, name: string, items: TreeItem[]): Promise<string> {
  const root = join(work, `${name}-tree`);
  mkdirSync(root, { recursive: true });
  for (const it of items) {
    const p = join(root, it.path);
    mkdirSync(dirname(p), { recursive: true });
    switch (it.type) {
      case 'file':
        writeFileSync(p, it.data);
        if (it.mode !== undefined) chmodSync(p, it.mode);
        if (it.uid !== undefined) lchownSync(p, it.uid, it.gid ?? it.uid);
        break;
      case 'dir':
        mkdirSync(p, { recursive: true });
        if (it.mode !== undefined) chmodSync(p, it.mode);
        break;
      case 'symlink': symlinkSync(it.target, p); break;
      case 'hardlink': linkSync(join(root, it.target), p); break;
      case 'char':
      case 'block':
        await run('mknod', ['-m', (it.mode ?? 0o644).toString(8), p, it.type === 'char' ? 'c' : 'b', String(it.major), String(it.minor)]);
        break;
      case 'fifo': await run('mkfifo', [p]); break;
      case 'whiteout': writeFileSync(join(dirname(p), `.wh.${p.split('/').pop()}`), ''); break;
      case 'opaque': writeFileSync(join(p, '.wh..wh..opq'), ''); break;
    }
    for (const [k, v] of Object.entries('xattrs' in it && it.xattrs ? it.xattrs : {})) await run('setfattr', ['-n', k, '-v', v, p]);
  }
  const tar = join(work, `${name}.tar`);
  await run('tar', ['--format=pax', '--xattrs', '--xattrs-include=*', '--numeric-owner', '--sort=name',
    `--mtime=${MTIME.toISOString()}`, '-cf', tar, '-C', root, '.']);
  return tar;
}

export type LayerCompression = 'zstd:chunked' | 'gzip';

export interface BuiltImage {
  manifest: Buffer;
  config: Buffer;
  /** digest → blob bytes (layers and config). */
  blobs: Map<string, Buffer>;
  layers: { digest: string; diffID: string; compression: LayerCompression; tocDigest?: string }[];
}

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** An OCI image of the given layer tars, each compressed as asked (zstd:chunked by our writer). */
export async function buildImage(layers: { tar: string; compression: LayerCompression }[], cmd: string[] = ['/bin/sh']): Promise<BuiltImage> {
  const blobs = new Map<string, Buffer>();
  const descs: object[] = [];
  const out: BuiltImage['layers'] = [];
  for (const l of layers) {
    const tar = readFileSync(l.tar);
    const diffID = sha(tar);
    if (l.compression === 'gzip') {
      const gz = gzipSync(tar);
      blobs.set(sha(gz), gz);
      descs.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha(gz), size: gz.length });
      out.push({ digest: sha(gz), diffID, compression: 'gzip' });
      continue;
    }
    const parts: Buffer[] = [];
    const r = await writeZstdChunked([tar], (b) => { parts.push(b); });
    const blob = Buffer.concat(parts);
    blobs.set(r.blobDigest, blob);
    descs.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd', digest: r.blobDigest, size: blob.length, annotations: r.annotations });
    out.push({ digest: r.blobDigest, diffID, compression: 'zstd:chunked', tocDigest: r.tocDigest });
  }
  const config = Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux', config: { Cmd: cmd, Env: ['PATH=/bin'] },
    rootfs: { type: 'layers', diff_ids: out.map((l) => l.diffID) },
  }));
  blobs.set(sha(config), config);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
    layers: descs,
  }));
  return { manifest, config, blobs, layers: out };
}

export async function pushImage(client: RegistryClient, ref: string, image: BuiltImage): Promise<string> {
  for (const b of image.blobs.values()) await client.pushBlob(ref, b);
  return client.pushManifest(ref, image.manifest, 'application/vnd.oci.image.manifest.v1+json');
}

/** Set a file's times (tar records them; tests compare them). */
export function touch(path: string, when = MTIME): void {
  utimesSync(path, when, when);
}

/** The same image with its config (and optionally manifest) edited: a new config blob, the manifest pointing at it. */
export function withConfig(
  img: BuiltImage,
  editConfig: (config: { rootfs: { diff_ids: string[] } } & Record<string, unknown>) => void,
  editManifest?: (manifest: { layers: object[] } & Record<string, unknown>, blobs: Map<string, Buffer>) => void,
): BuiltImage {
  const config = JSON.parse(img.config.toString());
  editConfig(config);
  const cfg = Buffer.from(JSON.stringify(config));
  const manifest = JSON.parse(img.manifest.toString());
  manifest.config = { ...manifest.config, digest: sha(cfg), size: cfg.length };
  const blobs = new Map(img.blobs);
  blobs.set(sha(cfg), cfg);
  editManifest?.(manifest, blobs);
  return { ...img, config: cfg, manifest: Buffer.from(JSON.stringify(manifest)), blobs };
}
