// Executable entry of the CLI (bin/tocfs.js imports this from dist/).
import { main } from './index.js';

// UV_THREADPOOL_SIZE cannot be set from here (an ES module entry is too late): bin/tocfs.cjs sets it.

main(process.argv).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    process.stderr.write(`tocfs: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
