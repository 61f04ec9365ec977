// tocfs's FUSE layer: speaks the kernel protocol on /dev/fuse directly (no libfuse), inode-based Operations.
// See docs/fuse.md. Imports nothing of tocfs but util.
export { FuseSession, mountDevice, threadPoolSize, type AdoptOptions, type SessionOptions, type SessionStats } from './session.js';
export { Errno, type ErrnoCode } from './errno.js';
export type {
  Attr, AttrReply, BackingFiles, DirSink, Entry, FuseLogger, Negotiated, OpenReply, Operations, RequestContext, StatfsReply,
} from './types.js';
export { makedev, FUSE_ROOT_ID, InitFlag, FUSE_MAX_MINOR, FUSE_MIN_MINOR } from './protocol.js';
export { DirReply } from './codec.js';
export { backingIoctls, type BackingIoctls } from './backing.js';
export { abortConnection, clearStaleMount, detachMount, findMounts, type MountInfo } from './mount.js';
