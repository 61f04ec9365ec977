// Executable entry of the CLI (bin/tocfs.js imports this from dist/).
import { main } from './index.js';

main(process.argv).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    process.stderr.write(`tocfs: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
