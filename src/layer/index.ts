// One lazily readable layer: the inode tree built from its TOC, and the verified content reader.
export {
  LayerTree, LayerTreeError, S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO,
  type NodeAttr, type ChunkView,
} from './tree.js';
export { buildTreeIndex, type TreeFacts } from './tree-build.js';
export { TreeIndexError, type TreeIndex, type TreeMeta } from './tree-index.js';
export { LayerContent, ContentError, type BlobSource, type ContentOptions, type ContentStats, type ContentLogger } from './content.js';
export { ChunkCache } from './cache.js';
export { DiskCache, type DiskCacheStats } from './disk-cache.js';
export { AssembledFiles, type AssembledStats, type AssembleResult } from './assembled.js';
export { BackgroundScheduler, LayerPrefetcher, type PrefetchProgress, type PrefetchState } from './prefetch.js';
export { nodeAt } from './proof.js';
export { LayerWork, layerWork, closeLayerWork, type IndexFiles } from './work.js';
export { pruneIndexDir } from './index-dir.js';
