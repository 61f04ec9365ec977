// Executable entry of the CLI (bin/tocfs.js imports this from dist/).
import { main } from './index.js';

// FUSE replies, registry sockets and file reads share libuv's thread pool; its default of 4 is too small for a
// daemon. It is sized when first used, so this must run before any asynchronous I/O.
process.env.UV_THREADPOOL_SIZE ??= '16';

main(process.argv).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    process.stderr.write(`tocfs: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
