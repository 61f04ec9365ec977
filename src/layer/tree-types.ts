import { TocfsError } from '../util/index.js';
import type { LayerChunk } from '../format/index.js';

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;
export const S_IFIFO = 0o010000;

export class LayerTreeError extends TocfsError {}

/** Attributes of one node, as the store turns them into FUSE attributes. */
export interface NodeAttr {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  rdevMajor: number;
  rdevMinor: number;
  mtimeSec: number;
  mtimeNsec: number;
}

/** A regular file's content as chunks: [fileOffset, +size) ← blob [start, end); the format's own chunk type. */
export type ChunkView = LayerChunk;
