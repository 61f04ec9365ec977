// The zstd:chunked format library: pure codecs (bytes in, bytes out); I/O is injected through BlobReader.
export { FormatError, type FormatErrorCode } from './errors.js';
export {
  ANNOTATION_TOC_DIGEST, ANNOTATION_TOC_POSITION, ANNOTATION_TARSPLIT_POSITION, ANNOTATION_TARSPLIT_DIGEST_LEGACY,
  ANNOTATION_LEGACY_TOC_DIGEST, ANNOTATION_ESTARGZ_TOC_DIGEST, MEDIA_TYPE_LAYER_ZSTD, MEDIA_TYPE_SENTINEL, MAX_TOC_SIZE,
  layerKind, parseChunkedAnnotations, formatChunkedAnnotations, checkSections,
  type LayerKind, type ChunkedAnnotations, type BlobSection,
} from './annotations.js';
export { decodeFooter, encodeFooter, FOOTER_FRAME_SIZE, type Footer } from './footer.js';
export { decodeToc, encodeToc, entryFromHeader, type TocEntry, type TocDocument } from './metadata.js';
export { buildLayerToc, LIMITS, type LayerToc, type LayerFile, type LayerChunk, type LayerFileType } from './layer-toc.js';
export {
  decodeTarSplit, encodeTarSplitLine, rebuildTar, tarSizeFromTarSplit, headersFromTarSplit,
  type TarSplitEntry, type ContentGetter, type RebuiltTar,
} from './tarsplit.js';
export {
  openChunkedLayer, readLayerSections, layerFromSections, tocFromBytes, ensureTocMatchesTarSplit, tarSplitFacts, checkTarSplitFacts, verifyChunk, verifyChunkBytes, zerosDigest, readChunk, readFile, verifyChunkedLayer,
  type BlobReader, type ChunkedLayer, type LayerSections, type LayerVerification, type ChunkSpec, type TarSplitFacts,
} from './chunked-reader.js';
export { readTar, type TarEvent, type TarHeader, type TarTime, type TocEntryType } from './tar.js';
export { crc64, Crc64 } from './crc64.js';
export { Chunker, type ChunkBoundary } from './rollsum.js';
export { compressFrame, decompressFrames, skippableHeader } from './zstd.js';
export { cleanAbsPath, goClean } from './paths.js';
export { formatRfc3339Nano, parseRfc3339 } from './times.js';
export { writeZstdChunked, type WriterOptions, type WriterResult, type BlobSink } from './writer.js';
export {
  ANNOTATION_PREFETCH, ARTIFACT_TYPE_PREFETCH, PREFETCH_LIMITS, RANGE_LIMITS, formatPrefetchHint, parsePrefetchHint, formatPrefetchArtifact,
  parsePrefetchArtifact, parseReadRecord, formatHintLine, parseHintLine, type HintRanges, type PrefetchHintList,
} from './prefetch.js';
