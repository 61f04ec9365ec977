// registries.conf v2 (containers-registries.conf(5)): [[registry]] entries with prefix/location, mirrors,
// insecure and blocked. Only what a pull/push endpoint decision needs; short-name settings are ignored
// because tocfs only ever sees fully qualified references.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { isErrnoException } from '../util/index.js';
import { BlockedRegistryError, RegistryConfigError } from './errors.js';
import { apiHostFor, parseReference, type ImageReference } from './reference.js';

export const DEFAULT_REGISTRIES_CONF = '/etc/containers/registries.conf';
export const DEFAULT_REGISTRIES_CONF_DIR = '/etc/containers/registries.conf.d';

export type PullFromMirror = 'all' | 'digest-only' | 'tag-only';

export interface MirrorEntry {
  location: string;
  insecure: boolean;
  pullFromMirror: PullFromMirror;
}

export interface RegistryEntry {
  /** What references this entry applies to: a name prefix or `*.domain`. */
  prefix: string;
  /** Where the prefix is actually served ('' = the reference's own location). */
  location: string;
  insecure: boolean;
  blocked: boolean;
  mirrors: MirrorEntry[];
  /** The file this entry came from (for error messages). */
  source: string;
}

/** One place to talk to for a reference: a mirror or the primary location, with the rewritten reference. */
export interface Endpoint {
  /** The reference as it is named at this endpoint (prefix rewritten to the location). */
  reference: ImageReference;
  /** host[:port] that serves the API (registry-1.docker.io for docker.io). */
  apiHost: string;
  /** Plain HTTP or unverified TLS allowed. */
  insecure: boolean;
  mirror: boolean;
}

type TomlTable = Record<string, unknown>;

function isTable(v: unknown): v is TomlTable {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function optString(t: TomlTable, key: string, where: string): string | undefined {
  const v = t[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new RegistryConfigError(`${where}: "${key}" must be a string`);
  return v;
}

function optBool(t: TomlTable, key: string, where: string): boolean {
  const v = t[key];
  if (v === undefined) return false;
  if (typeof v !== 'boolean') throw new RegistryConfigError(`${where}: "${key}" must be true or false`);
  return v;
}

function parseMirror(m: unknown, where: string): MirrorEntry {
  if (!isTable(m)) throw new RegistryConfigError(`${where}: each mirror must be a table`);
  const location = optString(m, 'location', where);
  if (!location) throw new RegistryConfigError(`${where}: a mirror needs a "location"`);
  const pull = optString(m, 'pull-from-mirror', where) ?? 'all';
  if (pull !== '' && pull !== 'all' && pull !== 'digest-only' && pull !== 'tag-only') {
    throw new RegistryConfigError(`${where}: "pull-from-mirror" must be "all", "digest-only" or "tag-only", not "${pull}"`);
  }
  return { location: stripScheme(location), insecure: optBool(m, 'insecure', where), pullFromMirror: pull === '' ? 'all' : pull };
}

/** c/image tolerates a scheme in locations; the scheme never decides the protocol there (insecure does). */
function stripScheme(location: string): string {
  return location.replace(/^https?:\/\//, '').replace(/\/+$/, '');
}

function parseEntry(t: unknown, source: string, index: number): RegistryEntry {
  const where = `${source}: [[registry]] #${index + 1}`;
  if (!isTable(t)) throw new RegistryConfigError(`${where} must be a table`);
  const location = stripScheme(optString(t, 'location', where) ?? '');
  const prefix = stripScheme(optString(t, 'prefix', where) ?? '') || location;
  if (prefix === '') throw new RegistryConfigError(`${where}: needs a "prefix" or a "location"`);
  if (prefix.startsWith('*')) {
    if (!/^\*\.[^/*]+$/.test(prefix)) {
      throw new RegistryConfigError(`${where}: wildcard prefix "${prefix}" must look like "*.example.com"`);
    }
    if (location !== '') {
      throw new RegistryConfigError(`${where}: a wildcard prefix ("${prefix}") cannot have a location`);
    }
  } else if (prefix.includes('*')) {
    throw new RegistryConfigError(`${where}: "*" is only allowed at the start of a prefix ("*.example.com")`);
  }
  const rawMirrors = t.mirror ?? [];
  if (!Array.isArray(rawMirrors)) throw new RegistryConfigError(`${where}: "mirror" must be an array of tables`);
  return {
    prefix,
    location,
    insecure: optBool(t, 'insecure', where),
    blocked: optBool(t, 'blocked', where),
    mirrors: rawMirrors.map((m) => parseMirror(m, where)),
    source,
  };
}

/** Parse the [[registry]] entries of one registries.conf text. */
export function parseRegistriesConf(text: string, source: string): RegistryEntry[] {
  let doc: TomlTable;
  try {
    doc = parseToml(text) as TomlTable;
  } catch (err) {
    throw new RegistryConfigError(`${source}: not valid TOML: ${(err as Error).message}`, { cause: err });
  }
  const regs = doc.registry ?? [];
  if (!Array.isArray(regs)) throw new RegistryConfigError(`${source}: "registry" must be an array of tables ([[registry]])`);
  if (isTable(doc.registries)) {
    throw new RegistryConfigError(`${source}: registries.conf v1 ([registries.*] tables) is not supported; use v2 [[registry]] entries`);
  }
  return regs.map((r, i) => parseEntry(r, source, i));
}

/** True when `ref` (a canonical reference string) falls under a non-wildcard prefix. */
function prefixMatches(ref: string, prefix: string): boolean {
  if (!ref.startsWith(prefix)) return false;
  if (ref.length === prefix.length) return true;
  const next = ref[prefix.length];
  return next === '/' || next === ':' || next === '@' || prefix.endsWith('/');
}

function wildcardMatches(domain: string, prefix: string): boolean {
  const host = domain.replace(/:\d+$/, '');
  return host.endsWith(prefix.slice(1)) && host.length > prefix.length - 1;
}

/** The merged configuration: the main file and the drop-ins in lexical order (later entries with the same
 * prefix replace earlier ones, as containers/image merges them). */
export class RegistriesConf {
  readonly entries: readonly RegistryEntry[];

  constructor(entries: readonly RegistryEntry[]) {
    this.entries = entries;
  }

  static empty(): RegistriesConf {
    return new RegistriesConf([]);
  }

  /** Merge entry lists; an entry replaces any earlier one with the same prefix. */
  static merge(lists: readonly (readonly RegistryEntry[])[]): RegistriesConf {
    const byPrefix = new Map<string, RegistryEntry>();
    for (const list of lists) for (const e of list) {
      byPrefix.delete(e.prefix);
      byPrefix.set(e.prefix, e);
    }
    return new RegistriesConf([...byPrefix.values()]);
  }

  /** The entry with the longest matching prefix, or undefined. */
  find(ref: ImageReference): RegistryEntry | undefined {
    let best: RegistryEntry | undefined;
    let bestLength = -1;
    for (const e of this.entries) {
      const matches = e.prefix.startsWith('*.') ? wildcardMatches(ref.domain, e.prefix) : prefixMatches(ref.string, e.prefix);
      if (matches && e.prefix.length > bestLength) {
        best = e;
        bestLength = e.prefix.length;
      }
    }
    return best;
  }

  /** Where to pull `ref` from, in order: eligible mirrors, then the primary location. */
  pullEndpoints(ref: ImageReference): Endpoint[] {
    const entry = this.find(ref);
    if (!entry) return [primaryEndpoint(ref, false)];
    if (entry.blocked) throw new BlockedRegistryError(ref.string, entry.prefix, entry.source);
    const endpoints: Endpoint[] = [];
    for (const m of entry.mirrors) {
      if (m.pullFromMirror === 'digest-only' && ref.digest === undefined) continue;
      if (m.pullFromMirror === 'tag-only' && ref.digest !== undefined) continue;
      endpoints.push(rewrite(ref, entry, m.location, m.insecure, true));
    }
    endpoints.push(entry.location === '' ? primaryEndpoint(ref, entry.insecure) : rewrite(ref, entry, entry.location, entry.insecure, false));
    return endpoints;
  }

  /** Where to push `ref`: the primary location only (mirrors are read-only by definition). */
  pushEndpoint(ref: ImageReference): Endpoint {
    const entry = this.find(ref);
    if (!entry) return primaryEndpoint(ref, false);
    if (entry.blocked) throw new BlockedRegistryError(ref.string, entry.prefix, entry.source);
    return entry.location === '' ? primaryEndpoint(ref, entry.insecure) : rewrite(ref, entry, entry.location, entry.insecure, false);
  }
}

function primaryEndpoint(ref: ImageReference, insecure: boolean): Endpoint {
  return { reference: ref, apiHost: apiHostFor(ref.domain), insecure, mirror: false };
}

function rewrite(ref: ImageReference, entry: RegistryEntry, location: string, insecure: boolean, mirror: boolean): Endpoint {
  let rewritten: string;
  if (entry.prefix.startsWith('*.')) {
    // A wildcard entry names hosts, so a mirror replaces the host and keeps the path.
    rewritten = location + ref.string.slice(ref.domain.length);
  } else {
    rewritten = location + ref.string.slice(entry.prefix.length);
  }
  let parsed: ImageReference;
  try {
    parsed = parseReference(rewritten);
  } catch (err) {
    throw new RegistryConfigError(`${entry.source}: rewriting ${ref.string} with prefix "${entry.prefix}" to location ` +
      `"${location}" gives an invalid reference "${rewritten}"`, { cause: err });
  }
  // The reference parser would put a bare location like "mirror" under docker.io/library; locations are hosts.
  return { reference: parsed, apiHost: apiHostFor(parsed.domain), insecure, mirror };
}

export interface RegistriesConfPaths {
  /** Main file (default /etc/containers/registries.conf). */
  path?: string;
  /** Drop-in directory (default /etc/containers/registries.conf.d); `*.conf` files are read in lexical order. */
  dropInDir?: string;
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if (isErrnoException(err) && (err.code === 'ENOENT' || err.code === 'ENOTDIR')) return undefined;
    throw new RegistryConfigError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/** Read registries.conf and its drop-ins. Missing files are fine (no entries). */
export async function loadRegistriesConf(paths: RegistriesConfPaths = {}): Promise<RegistriesConf> {
  const main = paths.path ?? DEFAULT_REGISTRIES_CONF;
  const dir = paths.dropInDir ?? DEFAULT_REGISTRIES_CONF_DIR;
  const lists: RegistryEntry[][] = [];
  const mainText = await readIfExists(main);
  if (mainText !== undefined) lists.push(parseRegistriesConf(mainText, main));
  let names: string[] = [];
  try {
    names = (await readdir(dir)).filter((n) => n.endsWith('.conf')).sort();
  } catch (err) {
    if (!(isErrnoException(err) && (err.code === 'ENOENT' || err.code === 'ENOTDIR'))) {
      throw new RegistryConfigError(`cannot list ${dir}: ${(err as Error).message}`, { cause: err });
    }
  }
  for (const n of names) {
    const p = join(dir, n);
    const text = await readIfExists(p);
    if (text !== undefined) lists.push(parseRegistriesConf(text, p));
  }
  return RegistriesConf.merge(lists);
}
