// Small helpers shared by every layer of tocfs. Nothing here may import another tocfs folder.
export { TocfsError, isErrnoException } from './errors.js';
export { sha256Hex, sha256Digest, parseDigest, isDigest, type Digest } from './digest.js';
export { openFileRange, type FileRangeReader } from './file-range.js';
export { WorkerPool, WorkerTaskError, serveTasks, transferable, type WorkerPoolOptions, type RunOptions, type RequestHandler, type TaskContext, type TaskHandler, type TaskResult } from './worker-pool.js';
export { writeStateFile } from './state-file.js';
