#!/usr/bin/env node
// `npm start`: install what is missing, build, and run `tocfs mount` in the foreground with the built-in
// defaults (store at /var/lib/tocfs/store, state in /var/lib/tocfs). Extra arguments go to `tocfs mount`.
import { spawnSync, spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const step = (what, cmd, args) => {
  process.stderr.write(`tocfs start: ${what}\n`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    process.stderr.write(`tocfs start: ${what} failed (exit ${r.status}); fix the error above and run npm start again\n`);
    process.exit(1);
  }
};

if (!existsSync('/dev/fuse')) {
  process.stderr.write('tocfs start: /dev/fuse is missing: load the fuse module (modprobe fuse) or run on a host with FUSE\n');
  process.exit(1);
}
if (!existsSync(join(root, 'node_modules', 'zstd-napi'))) step('installing npm dependencies', 'npm', ['ci', '--no-audit', '--no-fund']);
const built = join(root, 'dist', 'src', 'cli', 'main.js');
const newest = (p) => statSync(p).mtimeMs;
if (!existsSync(built) || newest(join(root, 'src', 'cli', 'index.ts')) > newest(built)) step('building', 'npx', ['tsc', '-p', 'tsconfig.json']);
const child = spawn(process.execPath, [join(root, 'bin', 'tocfs.cjs'), 'mount', ...process.argv.slice(2)], { cwd: root, stdio: 'inherit' });
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 0 : 1)));
