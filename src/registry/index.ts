// Public entry of the OCI distribution client (design.md §6). Other folders import only from here.
export { RegistryClient, type RegistryClientOptions, type FetchedManifest, type ResolvedImage, type CallSignal } from './client.js';
export { type BlobSource, type ByteRange, RegistryBlobSource, planFetch, type FetchPlan } from './blob-source.js';
export { type BlobReaderOptions, type BlobReaderStats, DEFAULT_BLOB_READER_OPTIONS } from './blob-reader.js';
export { parseReference, withDigest, withTag, manifestSelector, type ImageReference, DOCKER_HUB_DOMAIN } from './reference.js';
export { CredentialStore, CredentialResolver, defaultAuthFiles, type Credentials, type CredentialLookupOptions } from './credentials.js';
export { RegistriesConf, loadRegistriesConf, parseRegistriesConf, type Endpoint, type RegistryEntry, type RegistriesConfPaths,
  DEFAULT_REGISTRIES_CONF, DEFAULT_REGISTRIES_CONF_DIR } from './registries-conf.js';
export { MediaType, MAX_MANIFEST_BYTES, hostPlatform, matchPlatform, parseManifest, parseImageConfig, type Descriptor, type Platform,
  type ImageManifest, type ImageIndex, type Manifest, type ImageConfig } from './manifest.js';
export { attachArtifact, findArtifact, referrersTag } from './referrers.js';
export { type BlobData, type PushBlobOptions, type PushBlobResult } from './push.js';
export { DEFAULT_RETRY_POLICY, DEFAULT_TIMEOUTS, DEFAULT_FETCH_TIMEOUT_MS, type RetryPolicy, type Timeouts, type RegistryLogger } from './http.js';
export { RegistryError, InvalidReferenceError, RegistryConfigError, BlockedRegistryError, RegistryAuthError, RegistryNotFoundError,
  RegistryHttpError, RegistryUnavailableError, DigestMismatchError, ManifestError, PlatformNotFoundError, RangeResponseError,
  RegistryAbortedError, InvalidRangeError, RegistryTimeoutError, RegistryPlainHttpError } from './errors.js';
