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

/** `paths` cleaned, duplicates dropped, order kept, within PREFETCH_LIMITS.paths (what a hint may list). */
function hintPaths(paths: readonly string[]): string[] {
  const unique = [...new Set(paths.map((p) => cleanAbsPath(p)))].filter((p) => p !== '/');
  if (unique.length > PREFETCH_LIMITS.paths) {
    throw formatError('ANNOTATION_INVALID', `a prefetch hint of ${unique.length} paths exceeds the limit of ${PREFETCH_LIMITS.paths} per layer`);
  }
  return unique;
}

/** The annotation value for `paths` (cleaned, duplicates dropped, order kept). */
export function formatPrefetchHint(paths: readonly string[]): string {
  const value = JSON.stringify(hintPaths(paths));
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
  return pathsOf(raw);
}

/**
 * A parsed hint's list of paths, checked (a JSON array of strings, within the limit when `bounded`), cleaned and
 * deduplicated.
 */
function pathsOf(raw: unknown, bounded = true): string[] {
  if (!Array.isArray(raw) || !raw.every((p): p is string => typeof p === 'string')) {
    throw formatError('ANNOTATION_INVALID', `annotation ${ANNOTATION_PREFETCH} is not a JSON array of paths`);
  }
  if (bounded && raw.length > PREFETCH_LIMITS.paths) {
    throw formatError('ANNOTATION_INVALID', `annotation ${ANNOTATION_PREFETCH} lists ${raw.length} paths, more than the limit of ${PREFETCH_LIMITS.paths}`);
  }
  return [...new Set(raw.map((p) => cleanAbsPath(p)))];
}

/**
 * The same hint as an OCI artifact attached to an image (`tocfs hint`): the image's manifest and digests stay
 * untouched, so signed or digest-pinned images can carry it. Its blob is `{"paths": [...], "ranges": {...}}`: paths
 * of the whole image, each hinted in the layers whose tree has it as a regular file; `ranges` (optional) names, for
 * some of them, the byte ranges a container read: those parts go first, the rest of the file later (python maps
 * 30 MiB libraries and touches a few hundred KiB of them).
 */
export const ARTIFACT_TYPE_PREFETCH = 'application/vnd.tocfs.prefetch.v1+json';

/** Byte ranges [start, end) of files, by path. */
export type HintRanges = Map<string, [number, number][]>;

/** A hint: files in the order they are read first, and the parts read of some of them. */
export interface PrefetchHintList {
  paths: string[];
  ranges: HintRanges;
}

/** Bounds on ranges: per file, and in all (what keeps a hint blob within PREFETCH_LIMITS.bytes). */
export const RANGE_LIMITS = { perFile: 4096, total: 65_536 };

/** The artifact blob for a hint (same limits as an annotation). */
export function formatPrefetchArtifact(paths: readonly string[], ranges: HintRanges = new Map()): Buffer {
  const list = hintPaths(paths);
  const listed = new Set(list);
  const out: Record<string, [number, number][]> = {};
  for (const [path, r] of ranges) {
    const clean = cleanAbsPath(path);
    if (listed.has(clean) && r.length > 0) out[clean] = normalizeRanges(r, clean);
  }
  checkRangeCount(out);
  const value = Object.keys(out).length > 0 ? `{"paths":${JSON.stringify(list)},"ranges":${JSON.stringify(out)}}` : `{"paths":${JSON.stringify(list)}}`;
  if (value.length > PREFETCH_LIMITS.bytes) {
    throw formatError('ANNOTATION_INVALID', `a prefetch hint of ${value.length} bytes exceeds the limit of ${PREFETCH_LIMITS.bytes} bytes; list fewer files or ranges`);
  }
  return Buffer.from(value);
}

/** The hint in a prefetch artifact blob; a malformed one is a FormatError. */
export function parsePrefetchArtifact(blob: Uint8Array): PrefetchHintList {
  if (blob.length > PREFETCH_LIMITS.bytes) {
    throw formatError('ANNOTATION_INVALID', `prefetch artifact has ${blob.length} bytes, more than the ${PREFETCH_LIMITS.bytes}-byte limit`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(blob).toString('utf8'));
  } catch (err) {
    throw formatError('ANNOTATION_INVALID', `prefetch artifact is not JSON (${(err as Error).message})`);
  }
  return hintFrom(raw, true);
}

/**
 * A node's own record of what containers read (`<root>/access/`, the artifact's form, or a bare list of paths as
 * earlier versions wrote it): checked like a hint, but without a hint's size bounds, which are for what travels
 * through registries; the recorder bounds its record itself (100,000 files, 1,000,000 chunks).
 */
export function parseReadRecord(raw: unknown): PrefetchHintList {
  // Earlier versions' bare lists were read leniently (entries that are not strings skipped): still so.
  if (Array.isArray(raw)) return { paths: pathsOf(raw.filter((p) => typeof p === 'string'), false), ranges: new Map() };
  return hintFrom(raw, false);
}

/** A parsed `{"paths": [...], "ranges": {...}}`, checked (with the hint bounds when `bounded`). */
function hintFrom(raw: unknown, bounded: boolean): PrefetchHintList {
  const obj = (raw ?? {}) as { paths?: unknown; ranges?: unknown };
  const paths = pathsOf(obj.paths ?? null, bounded);
  const ranges: HintRanges = new Map();
  if (obj.ranges !== undefined) {
    if (typeof obj.ranges !== 'object' || obj.ranges === null || Array.isArray(obj.ranges)) {
      throw formatError('ANNOTATION_INVALID', 'prefetch artifact: "ranges" is not an object of paths');
    }
    const listed = new Set(paths);
    for (const [path, r] of Object.entries(obj.ranges as Record<string, unknown>)) {
      const clean = cleanAbsPath(path);
      if (!listed.has(clean)) throw formatError('ANNOTATION_INVALID', `prefetch artifact: ranges for "${path}", which is not among its paths`);
      ranges.set(clean, normalizeRanges(r, clean, bounded));
    }
    if (bounded) checkRangeCount(Object.fromEntries(ranges));
  }
  return { paths, ranges };
}

/**
 * Sorted, merged, checked ranges of `path` (a FormatError when they are not pairs of whole numbers start < end, or
 * more than RANGE_LIMITS.perFile when `bounded`).
 */
function normalizeRanges(r: unknown, path: string, bounded = true): [number, number][] {
  if (!Array.isArray(r) || (bounded && r.length > RANGE_LIMITS.perFile)) {
    throw formatError('ANNOTATION_INVALID', `prefetch hint: the ranges of "${path}" are not a list of at most ${RANGE_LIMITS.perFile} [start, end] pairs`);
  }
  const pairs = r.map((x: unknown) => {
    const ok = Array.isArray(x) && x.length === 2 && Number.isSafeInteger(x[0]) && Number.isSafeInteger(x[1]) && (x[0] as number) >= 0 && (x[0] as number) < (x[1] as number);
    if (!ok) throw formatError('ANNOTATION_INVALID', `prefetch hint: ${JSON.stringify(x)} in the ranges of "${path}" is not a [start, end] pair with 0 <= start < end`);
    return [x[0] as number, x[1] as number] as [number, number];
  }).sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const [s, e] of pairs) {
    const last = out[out.length - 1];
    if (last && s <= last[1]) last[1] = Math.max(last[1], e);
    else out.push([s, e]);
  }
  return out;
}

function checkRangeCount(ranges: Record<string, readonly unknown[]>): void {
  const total = Object.values(ranges).reduce((n, r) => n + r.length, 0);
  if (total > RANGE_LIMITS.total) throw formatError('ANNOTATION_INVALID', `a prefetch hint of ${total} ranges exceeds the limit of ${RANGE_LIMITS.total}`);
}

/**
 * One line of a path list (`tocfs reads` output, input of `tocfs hint` and `tocfs convert --prefetch`): a path,
 * optionally followed by ` @start-end,start-end…` (byte ranges read of a partly read file, end exclusive).
 */
export function formatHintLine(path: string, ranges?: readonly (readonly [number, number])[]): string {
  return ranges && ranges.length > 0 ? `${path} @${ranges.map(([s, e]) => `${s}-${e}`).join(',')}` : path;
}

const RANGES_SUFFIX = / @(\d+-\d+(?:,\d+-\d+)*)$/;

/** The path of a list line and its ranges, if it has any (see formatHintLine); undefined ranges if it has none. */
export function parseHintLine(line: string): { path: string; ranges?: [number, number][] } {
  const m = RANGES_SUFFIX.exec(line);
  if (!m) return { path: line };
  const path = line.slice(0, m.index);
  const pairs = m[1]!.split(',').map((p) => p.split('-').map(Number) as [number, number]);
  return { path, ranges: normalizeRanges(pairs, path) };
}
