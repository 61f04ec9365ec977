import { createHash } from 'node:crypto';

/** An OCI digest string, always `sha256:<64 lowercase hex>` in tocfs. */
export type Digest = `sha256:${string}`;

const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;

export function sha256Hex(...parts: readonly Uint8Array[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
}

export function sha256Digest(...parts: readonly Uint8Array[]): Digest {
  return `sha256:${sha256Hex(...parts)}`;
}

export function isDigest(value: unknown): value is Digest {
  return typeof value === 'string' && DIGEST_RE.test(value);
}

/** Parse a digest string; only canonical sha256 digests are accepted (that is all zstd:chunked writes). */
export function parseDigest(value: unknown, what: string): Digest {
  if (!isDigest(value)) {
    throw new TypeError(`${what}: expected a digest "sha256:<64 lowercase hex>", got ${JSON.stringify(value)}`);
  }
  return value;
}
