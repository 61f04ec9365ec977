// Docker image references, parsed and normalised like docker/distribution's `reference.ParseNormalizedNamed`
// (which containers/image uses): `alpine` → `docker.io/library/alpine:latest`.
import { isDigest, type Digest } from '../util/index.js';
import { InvalidReferenceError } from './errors.js';

export const DOCKER_HUB_DOMAIN = 'docker.io';
/** The host that serves the API for docker.io. */
export const DOCKER_HUB_API_HOST = 'registry-1.docker.io';
const LEGACY_DOCKER_HUB_DOMAIN = 'index.docker.io';
const OFFICIAL_REPO_PREFIX = 'library/';
const NAME_TOTAL_LENGTH_MAX = 255;

// Grammar pieces (distribution/reference regexp.go), written out here.
const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const IPV6_HOST = '\\[(?:[a-fA-F0-9:]+)\\]';
const DOMAIN_RE = new RegExp(`^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|${IPV6_HOST})(?::[0-9]+)?$`);
const PATH_COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^[\w][\w.-]{0,127}$/;
const ANY_DIGEST_RE = /^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$/;
const HEX64_RE = /^[a-f0-9]{64}$/;

/** A fully qualified, normalised image reference. Immutable. */
export interface ImageReference {
  /** Registry host as written in the reference, with port if any: `docker.io`, `localhost:5000`. */
  readonly domain: string;
  /** Repository path inside the registry: `library/alpine`. */
  readonly path: string;
  /** `domain/path` */
  readonly name: string;
  readonly tag?: string;
  readonly digest?: Digest;
  /** Canonical string: `name[:tag][@digest]`. */
  readonly string: string;
}

function makeReference(domain: string, path: string, tag: string | undefined, digest: Digest | undefined): ImageReference {
  const name = `${domain}/${path}`;
  const string = name + (tag !== undefined ? `:${tag}` : '') + (digest !== undefined ? `@${digest}` : '');
  return Object.freeze({ domain, path, name, tag, digest, string });
}

/** Split a name into domain and remainder the way docker does: the first component is a domain only if it
 * looks like one (has `.` or `:`, or is `localhost`). */
function splitDomain(name: string): [string, string] {
  const slash = name.indexOf('/');
  const first = slash < 0 ? '' : name.slice(0, slash);
  if (slash < 0 || (!first.includes('.') && !first.includes(':') && first !== 'localhost')) {
    return [DOCKER_HUB_DOMAIN, name];
  }
  return [first, name.slice(slash + 1)];
}

/**
 * Parse and normalise a reference. Without tag and digest, the tag `latest` is implied. A reference with both
 * a tag and a digest keeps both; the digest decides what is fetched.
 */
export function parseReference(input: string): ImageReference {
  const fail = (why: string): never => { throw new InvalidReferenceError(input, why); };
  if (typeof input !== 'string' || input === '') fail('the reference is empty');
  if (HEX64_RE.test(input)) fail('a bare 64-character hex string is an image ID, not a reference');
  if (/\s/.test(input)) fail('it contains whitespace');

  let rest = input;
  let digest: Digest | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    const digestText = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!ANY_DIGEST_RE.test(digestText)) fail(`"${digestText}" is not a valid digest (algorithm:hex)`);
    if (!isDigest(digestText)) fail(`digest "${digestText}" is not supported: only sha256 with 64 lowercase hex digits is`);
    digest = digestText as Digest;
  }
  // A tag is after the last ':' that follows the last '/' (a ':' before it belongs to a port).
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) fail(`tag "${tag}" must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`);
  }
  if (rest === '') fail('the repository name is empty');

  let [domain, path] = splitDomain(rest);
  if (domain === LEGACY_DOCKER_HUB_DOMAIN) domain = DOCKER_HUB_DOMAIN;
  if (!DOMAIN_RE.test(domain)) fail(`"${domain}" is not a valid registry host`);
  if (path === '') fail('the repository path is empty');
  if (path !== path.toLowerCase()) fail('repository names must be lowercase');
  for (const component of path.split('/')) {
    if (!PATH_COMPONENT_RE.test(component)) {
      fail(`path component "${component}" must be lowercase letters and digits, separated by ".", "_", "__" or "-"`);
    }
  }
  if (domain === DOCKER_HUB_DOMAIN && !path.includes('/')) path = OFFICIAL_REPO_PREFIX + path;
  if (`${domain}/${path}`.length > NAME_TOTAL_LENGTH_MAX) fail(`the name is longer than ${NAME_TOTAL_LENGTH_MAX} characters`);
  if (tag === undefined && digest === undefined) tag = 'latest';
  return makeReference(domain, path, tag, digest);
}

/** The same repository with another tag or digest (used for pushing by digest, instances of an index, ...). */
export function withDigest(ref: ImageReference, digest: Digest): ImageReference {
  return makeReference(ref.domain, ref.path, undefined, digest);
}

export function withTag(ref: ImageReference, tag: string): ImageReference {
  if (!TAG_RE.test(tag)) throw new InvalidReferenceError(`${ref.name}:${tag}`, `tag "${tag}" is invalid`);
  return makeReference(ref.domain, ref.path, tag, undefined);
}

/** Manifest selector: the digest if there is one, otherwise the tag. */
export function manifestSelector(ref: ImageReference): string {
  return ref.digest ?? ref.tag ?? 'latest';
}

/** The host that serves the registry API for a reference's domain (docker.io is special). */
export function apiHostFor(domain: string): string {
  return domain === DOCKER_HUB_DOMAIN ? DOCKER_HUB_API_HOST : domain;
}
