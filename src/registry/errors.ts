import { TocfsError } from '../util/index.js';

/** Base of every error the registry client raises on purpose. */
export class RegistryError extends TocfsError {}

/** An image reference that does not follow the docker reference grammar. */
export class InvalidReferenceError extends RegistryError {
  readonly input: string;
  constructor(input: string, why: string) {
    super('REGISTRY_INVALID_REFERENCE', `invalid image reference ${JSON.stringify(input)}: ${why}`);
    this.input = input;
  }
}

/** registries.conf or an auth file that cannot be used. */
export class RegistryConfigError extends RegistryError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('REGISTRY_CONFIG_INVALID', message, options);
  }
}

/** The reference matches a `blocked = true` entry of registries.conf. */
export class BlockedRegistryError extends RegistryError {
  constructor(reference: string, prefix: string, source: string) {
    super('REGISTRY_BLOCKED',
      `pulling ${reference} is blocked by registries.conf (entry with prefix "${prefix}" in ${source}); ` +
      'remove "blocked = true" there to allow it');
  }
}

/** Credentials missing or rejected, or the token server failed. */
export class RegistryAuthError extends RegistryError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('REGISTRY_UNAUTHORIZED', message, options);
  }
}

/** The registry says the manifest or blob does not exist (404). */
export class RegistryNotFoundError extends RegistryError {
  constructor(message: string) {
    super('REGISTRY_NOT_FOUND', message);
  }
}

/** The registry answered with a status this client does not expect. */
export class RegistryHttpError extends RegistryError {
  readonly status: number;
  constructor(status: number, message: string) {
    super('REGISTRY_HTTP_ERROR', message);
    this.status = status;
  }
}

/** Network failures, timeouts, 5xx or truncated answers that persisted through every retry. */
export class RegistryUnavailableError extends RegistryError {
  readonly attempts: number;
  constructor(message: string, attempts: number, options?: { cause?: unknown }) {
    super('REGISTRY_UNAVAILABLE', message, options);
    this.attempts = attempts;
  }
}

/** Content whose SHA-256 differs from the digest it was fetched or announced by. */
export class DigestMismatchError extends RegistryError {
  constructor(what: string, expected: string, actual: string) {
    super('REGISTRY_DIGEST_MISMATCH', `${what}: expected digest ${expected} but the content hashes to ${actual}; ` +
      'the registry or a proxy served wrong data');
  }
}

/** A manifest, index or config that is malformed, too large, or of an unsupported type. */
export class ManifestError extends RegistryError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('REGISTRY_MANIFEST_INVALID', message, options);
  }
}

/** No instance of an index fits the wanted platform. */
export class PlatformNotFoundError extends RegistryError {
  constructor(message: string) {
    super('REGISTRY_NO_MATCHING_PLATFORM', message);
  }
}

/** A range answer that does not match what was asked (wrong Content-Range, malformed multipart). */
export class RangeResponseError extends RegistryError {
  constructor(message: string) {
    super('REGISTRY_BAD_RANGE_RESPONSE', message);
  }
}

/** The caller's AbortSignal fired. */
export class RegistryAbortedError extends RegistryError {
  constructor(what: string, options?: { cause?: unknown }) {
    super('REGISTRY_ABORTED', `${what}: aborted by the caller`, options);
  }
}

/** A caller asked for bytes outside the blob (or a malformed range). */
export class InvalidRangeError extends RegistryError {
  constructor(message: string) {
    super('REGISTRY_INVALID_RANGE', message);
  }
}

function seconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(1))} s`;
}

/**
 * An operation that did not finish by its deadline (the daemon's fetch_timeout): connect, TLS, headers, body,
 * retries and backoff all count, so a black-holed or stalling registry fails here instead of hanging a reader.
 */
export class RegistryTimeoutError extends RegistryError {
  /** The registry host the operation talked to. */
  readonly host: string;
  /** How long the operation had (from its start to its deadline). */
  readonly budgetMs: number;
  constructor(what: string, host: string, budgetMs: number, configuredMs: number | undefined, options?: { cause?: unknown }) {
    super('REGISTRY_TIMEOUT', `${what}: no complete answer from ${host} within ${seconds(budgetMs)}` +
      (configuredMs !== undefined ? ` (fetch_timeout is ${seconds(configuredMs)})` : '') +
      '; check the network and that the registry is reachable and healthy, or raise fetch_timeout in the tocfs configuration',
    options);
    this.host = host;
    this.budgetMs = budgetMs;
  }
}

/** An HTTPS request answered in plain HTTP: the registry is an HTTP one that registries.conf does not mark insecure. */
export class RegistryPlainHttpError extends RegistryError {
  readonly host: string;
  constructor(host: string, confFile: string, options?: { cause?: unknown }) {
    super('REGISTRY_PLAIN_HTTP', `the registry at ${host} answered plain HTTP to an HTTPS request (TLS: wrong version number). ` +
      `If it is meant to be reached over HTTP, add  [[registry]] location = "${host}" insecure = true  to ${confFile} ` +
      '(or to the file registries_conf names in the tocfs configuration); otherwise check the port, or what listens on it', options);
    this.host = host;
  }
}
