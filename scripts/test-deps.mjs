#!/usr/bin/env node
// What the test suite needs, installed when missing: the npm dependencies (on a fresh clone, `npm test` alone must
// work), and the Debian packages it runs against (real registry, podman, FUSE tools…).
//
//   node scripts/test-deps.mjs          (first step of `npm test`; `npm run test:unit` needs none of them)
//
// As root on Debian/Ubuntu: installs the missing ones with apt-get and says which and why. Otherwise it prints the
// command to run and carries on: the suites that need a missing tool then fail with a message naming it
// (test/helpers/tools.ts), and every other suite still runs. TOCFS_TEST_NO_INSTALL=1 reports without installing.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** package → what in the suite needs it. */
const PACKAGES = {
  fuse3: 'FUSE userspace tools (fusermount3); tocfs mounts through /dev/fuse itself (part of the CI set)',
  attr: 'getfattr/setfattr: image xattrs and the tree comparisons',
  zstd: 'the zstd CLI, the baseline of npm run bench:format',
  jq: 'reading JSON logs and status by hand (part of the CI set; no test calls it)',
  openssl: 'the registry token server signs with an openssl-made certificate',
  uidmap: 'newuidmap/newgidmap, for rootless podman (test/e2e/rootless)',
  'docker-registry': 'the real registry the registry, store, daemon, convert and e2e suites talk to',
  podman: 'podman 4.3.1, pulling through the store (test/e2e)',
  skopeo: 'skopeo, reading what tocfs convert wrote (test/convert)',
  crun: 'the OCI runtime of podman run (test/e2e)',
  'busybox-static': '/bin/busybox, the userland of the e2e test images',
  'apache2-utils': 'htpasswd, for the registry with basic auth',
  strace: 'tracing podman\'s lookups when diagnosing (docs/podman.md; no test calls it)',
  debootstrap: 'builds the Debian 13 root with podman 5 (scripts/debian13-root.sh, test/e2e/podman5)',
};

const names = Object.keys(PACKAGES);
const say = (line) => console.log(`test-deps: ${line}`);

/** Installed packages among `names`, by one dpkg-query (unknown names only go to its stderr). */
function installed() {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Package} ${Status}\\n', ...names], { encoding: 'utf8' });
  if (r.error) return undefined;
  return new Set(r.stdout.split('\n').filter((l) => l.endsWith(' install ok installed')).map((l) => l.split(' ')[0]));
}

function run(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  return r.status === 0;
}

/** A clone where nobody ran npm ci or npm start yet has no compiler and no test runner: install them first. */
function npmDependencies() {
  if (['typescript', 'mocha', 'c8', 'zstd-napi'].every((m) => existsSync(join(root, 'node_modules', m)))) return;
  say('npm dependencies missing: running npm ci');
  if (!run('npm', ['ci', '--no-audit', '--no-fund'])) {
    say('npm ci failed; fix the error above and run npm test again');
    process.exit(1);
  }
}

function debianPackages() {
  const have = installed();
  if (!have) {
    say(`no dpkg-query here (not Debian?): cannot check the system packages; the suite needs: ${names.join(' ')}`);
    return;
  }
  const missing = names.filter((p) => !have.has(p));
  if (missing.length === 0) {
    say(`the ${names.length} Debian packages the suite needs are installed`);
    return;
  }
  say('missing Debian packages the suite needs:');
  for (const p of missing) say(`  ${p} — ${PACKAGES[p]}`);
  const command = `apt-get update && apt-get install -y --no-install-recommends ${missing.join(' ')}`;
  if (process.env.TOCFS_TEST_NO_INSTALL === '1' || process.getuid?.() !== 0) {
    const why = process.env.TOCFS_TEST_NO_INSTALL === '1' ? 'TOCFS_TEST_NO_INSTALL=1' : 'not root';
    say(`not installing them (${why}); to install: sudo sh -c '${command}'`);
    say('continuing: the suites that need them will fail naming the missing tool');
    return;
  }
  say(`installing: ${missing.join(' ')}`);
  // The Debian docker-registry package may start its own service on :5000 where an init system runs; the tests
  // start their own registries on free loopback ports and do not need it.
  if (!run('apt-get', ['update', '-qq']) || !run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing])) {
    say(`apt-get failed; install them by hand (${command}). Continuing: the suites that need them will fail.`);
    return;
  }
  const still = missing.filter((p) => !installed()?.has(p));
  if (still.length > 0) say(`still missing after apt-get: ${still.join(' ')}`);
  else say(`installed ${missing.length} package(s)`);
}

npmDependencies();
debianPackages();
