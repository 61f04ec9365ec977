import type { Digest } from '../util/index.js';

export const MEDIA_OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const MEDIA_OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const MEDIA_OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const MEDIA_DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const MEDIA_DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const MEDIA_DOCKER_CONFIG = 'application/vnd.docker.container.image.v1+json';
export const MEDIA_LAYER_TAR = 'application/vnd.oci.image.layer.v1.tar';
export const MEDIA_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
export const MEDIA_LAYER_ZSTD = 'application/vnd.oci.image.layer.v1.tar+zstd';
export const MEDIA_DOCKER_LAYER_GZIP = 'application/vnd.docker.image.rootfs.diff.tar.gzip';
/** The OCI annotation naming an image in a layout's index.json. */
export const ANNOTATION_REF_NAME = 'org.opencontainers.image.ref.name';

export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  annotations?: Record<string, string>;
  platform?: { architecture: string; os: string; variant?: string };
  [key: string]: unknown;
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
  [key: string]: unknown;
}

export interface ImageIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
  [key: string]: unknown;
}

export interface ImageConfig {
  architecture?: string;
  os?: string;
  rootfs?: { type: string; diff_ids: string[] };
  [key: string]: unknown;
}
