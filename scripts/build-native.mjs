#!/usr/bin/env node
// `npm install` / `npm ci` step (package.json "install"): build the optional native addon (native/, binding.gyp) with
// the node-gyp that ships with npm, against this Node's own headers (no download). It gives tocfs FUSE passthrough;
// without it tocfs serves every read itself, so a failed build is a warning, never a failed install.
//
//   node scripts/build-native.mjs        (TOCFS_SKIP_NATIVE=1 skips it)
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const say = (line) => console.log(`build-native: ${line}`);

/** npm's own node-gyp: npm names it to lifecycle scripts; otherwise look beside the npm that runs us, or on PATH. */
function nodeGyp() {
  const candidates = [process.env.npm_config_node_gyp];
  if (process.env.npm_execpath) candidates.push(join(dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  candidates.push(join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  try {
    candidates.push(createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js'));
  } catch {
    // not installed as a package: fine
  }
  return candidates.find((c) => c && existsSync(c));
}

/** The installed Node's headers (Debian's and NodeSource's nodejs ship them): node-gyp would otherwise download them. */
function nodeDir() {
  const prefix = join(dirname(process.execPath), '..');
  return existsSync(join(prefix, 'include', 'node', 'node_api.h')) ? prefix : undefined;
}

function main() {
  if (process.env.TOCFS_SKIP_NATIVE === '1') return say('skipped (TOCFS_SKIP_NATIVE=1): FUSE passthrough stays off');
  if (process.platform !== 'linux') return say(`not built on ${process.platform}: FUSE passthrough is Linux only`);
  const gyp = nodeGyp();
  const dir = nodeDir();
  if (!gyp) return say('node-gyp not found (it ships with npm): FUSE passthrough stays off');
  if (!dir) return say(`no Node headers under ${join(dirname(process.execPath), '..', 'include', 'node')}: FUSE passthrough stays off (install the nodejs package with its headers)`);
  const r = spawnSync(process.execPath, [gyp, 'rebuild', `--nodedir=${dir}`], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  if (r.status === 0 && existsSync(join(root, 'build', 'Release', 'tocfs_native.node'))) return say('built build/Release/tocfs_native.node (FUSE passthrough available)');
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n').slice(-15).join('\n');
  say(`the native addon did not build (needs a C compiler, make and python3): FUSE passthrough stays off; tocfs works without it.\n${out}`);
}

main();
