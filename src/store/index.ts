// The additional layer store: the namespace podman reads, and the resolver behind it.
export { LayerStore, encodeRefName, decodeRefName, type StoreOptions, type StoreLogger, type LayerStatus, type LayerReads } from './store.js';
export { Resolver, NotServable, type ResolverOptions, type LayerData, type FoundLayer, type RecordedLayer, type ProofPolicy, type ProofStatus, type ResolveFailure } from './resolver.js';
export { layerInfo, type KeyGeneration, type InfoFacts } from './info.js';
export { NamespaceJournal, type NamespaceRecord } from './namespace.js';
export type { PassthroughStats } from './passthrough.js';
