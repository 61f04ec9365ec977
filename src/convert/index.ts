// Image conversion to zstd:chunked, between OCI layouts, layer tars and (with the registry client) registries.
export {
  convertImage, parseImageLocation, ociSource, tarSource, ociDestination, ConvertError,
  type ImageLocation, type ImageSource, type ImageDestination, type ConvertOptions, type ConvertReport,
  type ConvertedLayer, type LayerProgress,
} from './convert.js';
export { OciLayout, LayoutError, hostArch, type BlobWriter } from './oci-layout.js';
export * from './oci-types.js';
export { registrySource, registryDestination } from './registry-transport.js';
