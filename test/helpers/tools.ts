// The machine's programs the tests run (docker-registry, podman, skopeo, getfattr…), found on PATH before use, so
// that a missing one fails its own suite with a message saying what to install, instead of a bare `spawn … ENOENT`
// (which, as an unhandled 'error' event of a child process, can take the whole mocha run down).
//
//   const bin = requireTool('docker-registry');   // absolute path, or throws "docker-registry is not installed (…)"
//
// `npm test` installs the packages first when it can (scripts/test-deps.mjs).
import { accessSync, constants, existsSync, statSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';

/** Debian package of each program the tests or their helpers run (programs of essential packages are left out). */
const PACKAGE_OF: Readonly<Record<string, string>> = {
  'docker-registry': 'docker-registry',
  podman: 'podman',
  skopeo: 'skopeo',
  crun: 'crun',
  htpasswd: 'apache2-utils',
  openssl: 'openssl',
  getfattr: 'attr',
  setfattr: 'attr',
  busybox: 'busybox-static',
  newuidmap: 'uidmap',
  newgidmap: 'uidmap',
  debootstrap: 'debootstrap',
  zstd: 'zstd',
  jq: 'jq',
  strace: 'strace',
  fusermount3: 'fuse3',
};

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** The absolute path `cmd` runs as with this PATH, or undefined when there is none. */
export function findTool(cmd: string, path = process.env['PATH'] ?? ''): string | undefined {
  if (isAbsolute(cmd)) return executable(cmd) ? cmd : undefined;
  for (const dir of path.split(delimiter)) {
    if (dir !== '' && executable(join(dir, cmd))) return join(dir, cmd);
  }
  return undefined;
}

const HOW = 'npm test installs the suite\'s packages when run as root';

/** "docker-registry is not installed (apt-get install docker-registry; …)" */
export function missingToolMessage(cmd: string): string {
  const pkg = PACKAGE_OF[cmd.split('/').pop()!];
  return `${cmd} ${isAbsolute(cmd) ? 'is missing' : 'is not installed'} (${pkg ? `apt-get install ${pkg}` : 'not found on PATH'}; ${HOW})`;
}

/** The absolute path of `cmd`; throws a message naming the package to install when it is missing. */
export function requireTool(cmd: string): string {
  const found = findTool(cmd);
  if (!found) throw new Error(missingToolMessage(cmd));
  return found;
}

/** A file some package provides (e.g. /bin/busybox from busybox-static); throws naming the package when missing. */
export function requireFile(path: string, pkg: string): string {
  if (!existsSync(path)) throw new Error(`${path} is missing (apt-get install ${pkg}; ${HOW})`);
  return path;
}

/**
 * The error for a failed spawn of `cmd`: a clear "not installed" message when it failed because `cmd` is not there
 * (ENOENT can also mean a missing working directory, which keeps the original error).
 */
export function spawnError(cmd: string, err: { code?: unknown; syscall?: unknown }): Error | undefined {
  if (err.code !== 'ENOENT' || typeof err.syscall !== 'string' || !err.syscall.startsWith('spawn') || findTool(cmd)) return undefined;
  return new Error(missingToolMessage(cmd));
}
