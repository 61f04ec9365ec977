import { formatError } from './errors.js';
import { cleanAbsPath } from './paths.js';

/**
 * tocfs's prefetch hint, a layer descriptor annotation: a JSON array of the layer's regular files (absolute,
 * cleaned paths) that a container of the image reads first, in that order. Only a fetch order: podman and every
 * other tool ignore it, the layer's bytes and digests are unchanged, and a wrong or hostile hint can only make
 * tocfs fetch other files first. Written by `tocfs convert --prefetch`, read when a layer is resolved.
 */
export const ANNOTATION_PREFETCH = 'io.github.tocfs.prefetch';

/** Bounds on a hint: what a manifest can carry comfortably (registries refuse manifests over 4 MiB). */
export const PREFETCH_LIMITS = { bytes: 1 << 20, paths: 65_536 };

/** The annotation value for `paths` (cleaned, duplicates dropped, order kept). */
export function formatPrefetchHint(paths: readonly string[]): string {
  const unique = [...new Set(paths.map((p) => cleanAbsPath(p)))].filter((p) => p !== '/');
  if (unique.length > PREFETCH_LIMITS.paths) {
    throw formatError('ANNOTATION_INVALID', `a prefetch hint of ${unique.length} paths exceeds the limit of ${PREFETCH_LIMITS.paths} per layer`);
  }
  const value = JSON.stringify(unique);
  if (value.length > PREFETCH_LIMITS.bytes) {
    throw formatError('ANNOTATION_INVALID', `a prefetch hint of ${value.length} bytes exceeds the limit of ${PREFETCH_LIMITS.bytes} bytes per layer; list fewer files`);
  }
  return value;
}

/** The hinted paths of a layer (cleaned, absolute), [] without a hint; a malformed hint is a FormatError. */
export function parsePrefetchHint(annotations: Readonly<Record<string, string>> | undefined): string[] {
  const value = annotations?.[ANNOTATION_PREFETCH];
  if (value === undefined) return [];
  if (value.length > PREFETCH_LIMITS.bytes) {
    throw formatError('ANNOTATION_INVALID', `annotation ${ANNOTATION_PREFETCH} has ${value.length} bytes, more than the ${PREFETCH_LIMITS.bytes}-byte limit`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(value);
  } catch (err) {
    throw formatError('ANNOTATION_INVALID', `annotation ${ANNOTATION_PREFETCH} is not JSON (${(err as Error).message})`);
  }
  if (!Array.isArray(raw) || !raw.every((p): p is string => typeof p === 'string')) {
    throw formatError('ANNOTATION_INVALID', `annotation ${ANNOTATION_PREFETCH} is not a JSON array of paths`);
  }
  if (raw.length > PREFETCH_LIMITS.paths) {
    throw formatError('ANNOTATION_INVALID', `annotation ${ANNOTATION_PREFETCH} lists ${raw.length} paths, more than the limit of ${PREFETCH_LIMITS.paths}`);
  }
  return [...new Set(raw.map((p) => cleanAbsPath(p)))];
}

/**
 * The same hint as an OCI artifact attached to an image (`tocfs hint`): the image's manifest and digests stay
 * untouched, so signed or digest-pinned images can carry it. Its blob is `{"paths": [...]}`: paths of the whole
 * image, each hinted in the layers whose tree has it as a regular file.
 */
export const ARTIFACT_TYPE_PREFETCH = 'application/vnd.tocfs.prefetch.v1+json';

/** The artifact blob for `paths` (same limits as an annotation). */
export function formatPrefetchArtifact(paths: readonly string[]): Buffer {
  return Buffer.from(`{"paths":${formatPrefetchHint(paths)}}`);
}

/** The paths of a prefetch artifact blob; a malformed one is a FormatError. */
export function parsePrefetchArtifact(blob: Uint8Array): string[] {
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(blob).toString('utf8'));
  } catch (err) {
    throw formatError('ANNOTATION_INVALID', `prefetch artifact is not JSON (${(err as Error).message})`);
  }
  const paths = (raw as { paths?: unknown } | null)?.paths;
  return parsePrefetchHint({ [ANNOTATION_PREFETCH]: JSON.stringify(paths ?? null) });
}
