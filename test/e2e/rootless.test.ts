import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmdirSync, rmSync, statSync, writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { CLI, run } from '../helpers/cli.js';
import { baseLayer, topLayer } from '../helpers/e2e-image.js';
import { buildImage, buildLayerTar, pushImage, type TreeItem } from '../helpers/image-builder.js';
import { Podman } from '../helpers/podman.js';
import { loopbackClient, startRegistry, type RegistryServer } from '../helpers/registry-server.js';
import { snapshotTree } from '../helpers/tree-snapshot.js';

// The rootless recipe of docs/operations.md, end to end: an unprivileged user runs `tocfs mount` inside
// `podman unshare`, and that user's rootless podman 4.3.1 (kernel overlay with `userxattr`) pulls through it.

const USER = 'tocfs-rootless-test';
const REPO = resolve(CLI, '..', '..', '..', '..');
/** The compiled CLI and test helpers, relative to the repository (dist/… in CI, dist-<x>/… in development). */
const CLI_IN_REPO = relative(REPO, CLI);
const HELPERS_IN_REPO = join(CLI_IN_REPO, '..', '..', '..', 'test', 'helpers');
/** What the test leaves in the user's home: the recipe's files and the user's podman configuration and storage. */
const USER_STATE = ['tocfs', '.config/containers', '.config/cni', '.local/share/containers'];

interface Account { uid: number; gid: number; home: string; runtimeDir: string }

/** The test user, created once (useradd -m also gives it subordinate ids on Debian; added here if missing). */
async function ensureUser(): Promise<Account> {
  if (!(await run('getent', ['passwd', USER]).catch(() => ''))) await run('useradd', ['-m', '-s', '/bin/sh', USER]);
  const [, , uid, gid, , home] = (await run('getent', ['passwd', USER])).trim().split(':');
  for (const [file, flag] of [['/etc/subuid', '--add-subuids'], ['/etc/subgid', '--add-subgids']] as const) {
    const lines = existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => l.split(':')) : [];
    if (lines.some(([name]) => name === USER || name === uid)) continue;
    const start = Math.max(100_000, ...lines.map(([, s, n]) => Number(s) + Number(n)));
    await run('usermod', [flag, `${start}-${start + 65_535}`, USER]);
  }
  return { uid: Number(uid), gid: Number(gid), home: home!, runtimeDir: `/run/user/${uid}` };
}

/** The environment of a login of the user: nothing of the test process (root's podman settings, c8) leaks in. */
function userEnv(a: Account): string[] {
  return [`HOME=${a.home}`, `USER=${USER}`, `LOGNAME=${USER}`, `XDG_RUNTIME_DIR=${a.runtimeDir}`,
    'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'UV_THREADPOOL_SIZE=16'];
}

function quote(args: string[]): string {
  return args.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
}

/** The children of a process and theirs, depth first. */
function descendants(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[] = [];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const t of tasks) {
    let kids = '';
    try {
      kids = readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8');
    } catch {
      continue;
    }
    for (const k of kids.split(' ').filter(Boolean).map(Number)) out.push(k, ...descendants(k));
  }
  return out;
}

function mountsOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/mounts`, 'utf8');
  } catch {
    return '';
  }
}

function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

describe('e2e: rootless podman 4.3.1 through tocfs running in `podman unshare`', function () {
  this.timeout(300_000);
  let account: Account;
  let work: string;
  let registry: RegistryServer;
  let ref: string;
  let topLayerKey: string;
  let base: TreeItem[];
  let plain: Podman;
  let store: string;
  let state: string;
  let daemon: ChildProcess | undefined;
  let daemonPid = 0;
  let daemonLog = '';
  let mountArgs: string[];
  let devFuseMode: number | undefined;
  let createdRuntimeDir = false;
  let launcher: string[];
  /** The repository as the user sees it: itself, or a bind mount of it when it lies under a private directory. */
  let repo = REPO;
  let repoBind: string | undefined;

  /** Run a command as the user (a login-like environment, cwd = home); resolves stdout, rejects with stderr. */
  function asUser(args: string[], timeoutMs = 120_000): Promise<string> {
    return new Promise((ok, fail) => {
      execFile('runuser', ['-u', USER, '--', 'env', '-i', ...userEnv(account), ...args],
        { cwd: account.home, timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
          if (err) fail(new Error(`as ${USER}: ${args.join(' ')} failed: ${stderr || err.message}`));
          else ok(stdout);
        });
    });
  }

  /** A shell script inside the user's podman namespace (`podman unshare`), where the store and overlay mounts live. */
  const inNamespace = (script: string, timeoutMs?: number) => asUser(['podman', 'unshare', 'sh', '-c', script], timeoutMs);

  const status = async () => JSON.parse(await asUser([...launcher, 'status', '--root', state, '--json'])) as {
    layers: { key: string; localBytes: number }[];
  };

  /** Log lines are written asynchronously, after what they describe. */
  async function waitForLog(re: RegExp): Promise<void> {
    for (const end = Date.now() + 10_000; !re.test(daemonLog); await new Promise((r) => setTimeout(r, 50))) {
      if (Date.now() > end) assert.fail(`the daemon log never matched ${re}:\n${daemonLog}`);
    }
  }

  /** The user's podman namespace is held by its pause process. */
  const pausePid = () => Number(readFileSync(join(account.runtimeDir, 'libpod', 'tmp', 'pause.pid'), 'utf8'));

  /**
   * `podman unshare tocfs mount …` (or another way into the namespace) as the user, in the background and in a
   * process group of its own (so that cleanup can end all of it); resolves when the store is mounted in the
   * daemon's mount namespace, which is the user's podman namespace, not ours.
   */
  async function mountStore(enter = ['podman', 'unshare']): Promise<void> {
    daemonPid = 0;
    daemonLog = '';
    const child = spawn('runuser', ['-u', USER, '--', 'env', '-i', ...userEnv(account), ...enter, ...mountArgs],
      { cwd: account.home, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    daemon = child;
    child.stdout!.on('data', (d) => (daemonLog += d));
    child.stderr!.on('data', (d) => (daemonLog += d));
    const deadline = Date.now() + 30_000;
    for (;;) {
      daemonPid = descendants(child.pid!).find((p) => {
        try {
          return readlinkSync(`/proc/${p}/exe`) === process.execPath && mountsOf(p).includes(` ${store} fuse.tocfs `);
        } catch {
          return false;
        }
      }) ?? 0;
      // The mount line alone is not enough: after a SIGKILL the stale mount has the same line. The daemon logs
      // "tocfs store mounted" once its own mount is up and its signal handlers are installed.
      if (daemonPid && daemonLog.includes('"msg":"tocfs store mounted"')) return;
      if (child.exitCode !== null || Date.now() > deadline) {
        throw new Error(`tocfs mount did not come up under ${enter.join(' ')}:\n${daemonLog}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Signal the daemon (node, under `podman unshare`), as a user stops it; resolves whether it has exited. */
  async function stopDaemon(signal: NodeJS.Signals = 'SIGTERM'): Promise<boolean> {
    if (!daemon || daemon.exitCode !== null || daemon.signalCode !== null) return true;
    const exited = new Promise((r) => daemon!.once('exit', r));
    if (daemonPid) process.kill(daemonPid, signal);
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
    return daemon.exitCode !== null || daemon.signalCode !== null;
  }

  before(async () => {
    for (const tool of ['/usr/bin/newuidmap', '/usr/bin/newgidmap']) {
      assert.ok(existsSync(tool), `${tool} is missing: rootless podman needs the Debian package uidmap`);
    }
    account = await ensureUser();
    const { home, uid, gid } = account;
    if (!existsSync(account.runtimeDir)) {
      mkdirSync(account.runtimeDir, { recursive: true, mode: 0o700 });
      chownSync(account.runtimeDir, uid, gid);
      createdRuntimeDir = true;
    }
    // A normal Debian system makes /dev/fuse 0666 (udev); machines without udev leave the kernel's 0600.
    const mode = statSync('/dev/fuse').mode & 0o777;
    if ((mode & 0o006) !== 0o006) {
      devFuseMode = mode;
      chmodSync('/dev/fuse', 0o666);
    }
    // The user runs the repository's own build. A clone under a private directory (/root is 0700) is shown to it
    // through a bind mount of the repository alone, made before the user's namespace (a copy of ours) exists.
    const readable = (r: string) => asUser(['test', '-r', join(r, CLI_IN_REPO), '-a', '-r', join(r, 'node_modules', 'commander', 'package.json')])
      .then(() => true, () => false);
    if (!(await readable(REPO))) {
      repoBind = mkdtempSync(join(tmpdir(), 'tocfs-e2e-rootless-repo-'));
      chmodSync(repoBind, 0o755);
      await run('mount', ['--bind', REPO, repoBind]);
      repo = repoBind;
      assert.ok(await readable(repo), `${USER} cannot read the build in ${REPO}: its files must be readable by others`);
    }
    // The documented launcher when the build is dist/ (as in CI); any other build dir is run directly.
    launcher = ['node', join(repo, CLI_IN_REPO === join('dist', 'src', 'cli', 'main.js') ? join('bin', 'tocfs.cjs') : CLI_IN_REPO)];

    // Leftovers of an earlier run: the user's podman state, configuration and namespace (its pause process).
    // The old storage.conf goes first: it names a store podman would fail to stat.
    rmSync(join(home, '.config', 'containers'), { recursive: true, force: true });
    await asUser(['podman', 'system', 'reset', '-f']).catch(() => '');
    await asUser(['podman', 'system', 'migrate']).catch(() => '');
    for (const d of USER_STATE) rmSync(join(home, d), { recursive: true, force: true });

    work = mkdtempSync(join(tmpdir(), 'tocfs-e2e-rootless-'));
    registry = await startRegistry({});
    base = baseLayer();
    const l1 = await buildLayerTar(work, 'l1', base);
    const l2 = await buildLayerTar(work, 'l2', topLayer());
    const image = await buildImage([{ tar: l1, compression: 'zstd:chunked' }, { tar: l2, compression: 'zstd:chunked' }]);
    ref = `${registry.host}/e2e/rootless:v1`;
    const client = loopbackClient(registry.host);
    await pushImage(client, ref, image);
    await client.close();
    topLayerKey = image.layers[1]!.digest;

    // The recipe's files, as the user would write them.
    store = join(home, 'tocfs', 'store');
    state = join(home, 'tocfs', 'state');
    const cfg = join(home, 'tocfs', 'config.toml');
    mountArgs = [...launcher, 'mount', store, '--root', state, '--config', cfg];
    const registries = `[[registry]]\nlocation = "${registry.host}"\ninsecure = true\n`;
    mkdirSync(store, { recursive: true });
    mkdirSync(state, { recursive: true });
    mkdirSync(join(home, '.config', 'containers'), { recursive: true });
    writeFileSync(join(home, 'tocfs', 'registries.conf'), registries);
    // No background fetch and no DiffID proof, so that what is local is exactly what was read.
    writeFileSync(cfg, `registries_conf = "${join(home, 'tocfs', 'registries.conf')}"\nbackground_fetch = false\n` +
      'diffid_proof = "off"\nlog_level = "debug"\n');
    writeFileSync(join(home, '.config', 'containers', 'storage.conf'),
      `[storage]\ndriver = "overlay"\n\n[storage.options]\nadditionallayerstores = ["${store}:ref"]\n`);
    writeFileSync(join(home, '.config', 'containers', 'registries.conf'), registries);
    await run('chown', ['-R', `${uid}:${gid}`, join(home, 'tocfs'), join(home, '.config')]);

    await mountStore();

    // The reference view: a normal rootful pull of the same image.
    plain = new Podman(join(work, 'podman-plain'), { insecureHosts: [registry.host] });
    await plain.podman(['pull', '-q', ref]);
  });

  after(async () => {
    if (account) {
      await asUser(['podman', 'system', 'reset', '-f']).catch(() => '');
      await stopDaemon();
      // `podman unshare` and everything under it: its process group (runuser's, started detached).
      if (daemon && daemon.exitCode === null && daemon.signalCode === null) {
        try {
          process.kill(-daemon.pid!, 'SIGKILL');
        } catch { /* already gone */ }
      }
      // A stale mount would make every podman command fail, migrate included: detach it from inside first.
      const pause = await Promise.resolve().then(pausePid).catch(() => 0);
      if (pause && mountsOf(pause).includes(` ${store} `)) {
        await asUser(['nsenter', '-t', String(pause), '-U', '-m', '--preserve-credentials', 'umount', '-l', store]).catch(() => '');
      }
      // Ends the user's pause process, and with it the namespace and anything still mounted there.
      await asUser(['podman', 'system', 'migrate']).catch(() => '');
      for (const d of USER_STATE) rmSync(join(account.home, d), { recursive: true, force: true });
      if (createdRuntimeDir) rmSync(account.runtimeDir, { recursive: true, force: true });
      else for (const d of ['containers', 'libpod', 'crun']) rmSync(join(account.runtimeDir, d), { recursive: true, force: true });
    }
    if (repoBind) {
      await run('umount', ['-l', repoBind]).catch(() => '');
      // rmdir, never rm -r: if the unmount failed, this is the repository.
      try {
        rmdirSync(repoBind);
      } catch { /* still mounted: left for the next boot */ }
    }
    if (devFuseMode !== undefined) chmodSync('/dev/fuse', devFuseMode);
    await plain?.cleanup();
    await registry?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('the daemon runs as the user, mounted only in the user\'s namespace', async () => {
    assert.equal(statSync(`/proc/${daemonPid}`).uid, account.uid);
    assert.ok(!readFileSync('/proc/self/mounts', 'utf8').includes(store), 'not mounted in the initial namespace');
    await waitForLog(/"msg":"tocfs store mounted"/);
    // Rootless podman picks the kernel overlay (kernel ≥ 5.13), not fuse-overlayfs.
    const info = await asUser(['podman', 'info', '--format', '{{.Store.GraphDriverName}} {{json .Store.GraphOptions}}']);
    assert.equal(info.trim().split(' ')[0], 'overlay');
    assert.doesNotMatch(info, /mount_program/);
  });

  it('rootless podman pull takes both zstd:chunked layers from the store, fetching no file content', async () => {
    await asUser(['podman', 'pull', '-q', ref]);
    const graph = join(account.home, '.local', 'share', 'containers', 'storage', 'overlay');
    const als = readdirSync(graph).filter((d) => existsSync(join(graph, d, 'additionallayer')))
      .map((d) => readFileSync(join(graph, d, 'additionallayer'), 'utf8'));
    const prefix = `${store}/${Buffer.from(ref).toString('base64')}/sha256:`;
    assert.equal(als.length, 2, `additionallayer files: ${als.join(', ')}`);
    for (const l of als) assert.ok(l.startsWith(prefix), l);
    const s = await status();
    assert.equal(s.layers.length, 2);
    for (const l of s.layers) assert.equal(l.localBytes, 0, `layer ${l.key} has ${l.localBytes} bytes local after the pull`);
  });

  it('podman image mount (kernel overlay, userxattr) shows the same tree as a rootful normal pull: whiteout and opaque dir applied', async () => {
    const snapshot = `import { snapshotTree } from ${JSON.stringify(join(repo, HELPERS_IN_REPO, 'tree-snapshot.js'))};` +
      'console.log(JSON.stringify(await snapshotTree(process.argv[1])));';
    const out = await inNamespace(`m=$(podman image mount ${quote([ref])}) || exit 1
      grep " $m overlay " /proc/self/mounts
      node --input-type=module -e ${quote([snapshot])} "$m"; rc=$?
      podman image umount ${quote([ref])} >/dev/null; exit $rc`);
    const [mountLine, json] = out.split('\n');
    assert.match(mountLine!, /^overlay .* overlay ro,.*lowerdir=.*,userxattr/);
    const a = (JSON.parse(json!) as string[]).filter((l) => !l.startsWith('/ '));
    assert.ok(!a.some((l) => l.startsWith('data/gone.txt')), 'whiteout applied');
    assert.deepEqual(a.filter((l) => l.startsWith('data/old/')).map((l) => l.split(' ')[0]), ['data/old/new.txt'], 'opaque dir applied');
    assert.ok(!a.some((l) => l.includes('user.overlay.')), 'overlay hides its own xattrs from the image');
    const m = (await plain.podman(['image', 'mount', ref])).trim();
    try {
      assert.deepEqual(a, (await snapshotTree(m)).filter((l) => !l.startsWith('/ ')));
    } finally {
      await plain.podman(['image', 'umount', ref]);
    }
    const big = (await status()).layers.reduce((n, l) => n + l.localBytes, 0);
    assert.ok(big > 5_000_000, `reading the image fetched ${big} bytes`);
  });

  it('the store serves the opaque marker as user.overlay.opaque to the namespace\'s root (the mounter)', async () => {
    const layer = `${store}/${Buffer.from(ref).toString('base64')}/${topLayerKey}/diff/data/old`;
    assert.equal(await inNamespace(`getfattr --only-values -n user.overlay.opaque ${quote([layer])}`), 'y');
  });

  it('rootless podman run reads the files (own cgroup2 mount in a cgroup namespace, no cgroups, no network)', async () => {
    // crun refuses this machine's hybrid cgroups: inside the user's namespace, a new mount and cgroup namespace
    // get a pure cgroup2 /sys/fs/cgroup (the rootless form of environment.md's workaround).
    const runArgs = ['podman', 'run', '--rm', '--cgroups=disabled', '--network=none', '--ulimit', 'nofile=1024:1024',
      '--ulimit', 'nproc=1024:1024', ref, 'sh', '-c', 'sha256sum /data/big.bin /bin/busybox; cat /data/old/new.txt; ls /data/old'];
    const out = await inNamespace(`exec unshare -m -C sh -c ${quote([
      `mount --make-rprivate / && mount -t cgroup2 none /sys/fs/cgroup && exec ${quote(runArgs)}`])}`);
    const data = (p: string) => (base.find((i) => i.path === p) as { data: Buffer }).data;
    assert.match(out, new RegExp(`^${sha256(data('data/big.bin'))}  /data/big.bin$`, 'm'));
    assert.match(out, new RegExp(`^${sha256(data('bin/busybox'))}  /bin/busybox$`, 'm'));
    assert.match(out, /^only this survives in data\/old\nnew\.txt$/m);
  });

  it('after a SIGKILL every podman command fails; the daemon restarted in the namespace with nsenter clears the stale mount', async () => {
    assert.ok(await stopDaemon('SIGKILL'));
    // c/storage stats the store when it starts, even for `podman unshare`: a stale mount locks the user out
    // (once the kernel's cached attributes of the store's root, 1 s, have expired).
    let locked = '';
    for (const end = Date.now() + 10_000; !locked && Date.now() < end; await new Promise((r) => setTimeout(r, 200))) {
      locked = await asUser(['podman', 'unshare', 'true']).then(() => '', (err: Error) => err.message);
    }
    assert.match(locked, /can't stat additionallayerstore dir: .*transport endpoint is not connected/);
    await mountStore(['nsenter', '-t', String(pausePid()), '-U', '-m', '--preserve-credentials']);
    await waitForLog(/"msg":"detached a stale FUSE mount left by a dead daemon"/);
    assert.equal(mountsOf(pausePid()).split('\n').filter((l) => l.includes(` ${store} fuse.tocfs `)).length, 1);
    // The layers podman already has come back through their diff symlinks, without a new pull.
    assert.equal(await inNamespace(`m=$(podman image mount ${quote([ref])}) || exit 1
      cat "$m/data/old/new.txt"; rc=$?; podman image umount ${quote([ref])} >/dev/null; exit $rc`), 'only this survives in data/old\n');
  });

  it('stops on SIGTERM and unmounts the store inside the namespace; podman keeps working', async () => {
    assert.ok(await stopDaemon(), 'the daemon exited within 10 s of SIGTERM');
    assert.equal(daemon!.exitCode, 0, `signal ${daemon!.signalCode}; log: ${daemonLog.slice(-2000)}`);
    const pause = pausePid();
    assert.ok(mountsOf(pause).length > 0, 'the user\'s namespace is still there');
    assert.ok(!mountsOf(pause).includes(` ${store} `), 'nothing mounted on the store any more');
    // c/storage only needs the store path to be a directory: plain commands still work without the daemon.
    assert.match(await asUser(['podman', 'images', '--format', '{{.Repository}}:{{.Tag}}']), new RegExp(ref.replace(/[.]/g, '\\.')));
  });
});
