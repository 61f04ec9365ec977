#!/usr/bin/env node
// The `tocfs` command. A CommonJS launcher on purpose: libuv sizes its thread pool when first used, and an ES
// module entry is too late to set UV_THREADPOOL_SIZE (module loading already used the pool). FUSE replies, the
// disk cache and blob copies share that pool; the default of 4 is too small for a daemon.
'use strict';
process.env.UV_THREADPOOL_SIZE = process.env.UV_THREADPOOL_SIZE || '16';
import('../dist/src/cli/main.js').catch((err) => {
  process.stderr.write(`tocfs: cannot start (${err && err.message}); run "npm run build" first\n`);
  process.exitCode = 1;
});
