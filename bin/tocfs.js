#!/usr/bin/env node
// Entry point of the `tocfs` command: the compiled CLI lives in dist/ (built by `npm run build`).
import { main } from '../dist/src/cli/index.js';

main(process.argv).then(
  (code) => { process.exitCode = code; },
  (err) => {
    process.stderr.write(`tocfs: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
