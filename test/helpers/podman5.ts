// podman 5.x (Debian 13) for the e2e suite, run as `chroot <debian13 root> podman …` inside a private mount
// namespace of its own (environment.md, docs/podman.md "podman ≥ 5.1").
//
//   const root = await debian13Root();                         // scripts/debian13-root.sh: cached debootstrap
//   const chroot = await Debian13Chroot.start(root, [work]);   // work (with the tocfs mount under it) at the same path
//   const p = new Podman5(chroot, join(work, 'p'), { als: daemon.mountpoint, insecureHosts: [registry.host] });
//   await p.podman(['pull', ref]); const m = await p.hostPath(await p.podman(['image', 'mount', ref]));
//   await p.cleanup(); await chroot.stop();
//
// Every mount (the root onto itself, proc, /sys, /dev, the shared directories, and whatever podman mounts) is made in
// that namespace, so nothing reaches the host's mount table; stop() unmounts them anyway, ends the namespace's
// holder process and checks the host's /proc/mounts.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PODMAN_RUN_FLAGS } from './podman.js';

const here = dirname(fileURLToPath(import.meta.url));
/** scripts/debian13-root.sh in the source tree (the compiled helper lives in <outDir>/test/helpers). */
const ROOT_SCRIPT = resolve(here, '..', '..', '..', 'scripts', 'debian13-root.sh');

export const DEFAULT_DEBIAN13_ROOT = '/var/cache/tocfs/debian13-root';

const quote = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;

function exec(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs: number; what: string }): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    execFile(cmd, args, { env: opts.env ?? process.env, timeout: opts.timeoutMs, maxBuffer: 64 << 20, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${opts.what} failed (${err.killed ? `killed after ${opts.timeoutMs} ms` : `exit ${String(err.code)}`}): ${stderr.trim() || err.message}`));
      else resolvePromise(stdout);
    });
  });
}

/**
 * The Debian 13 root, built by scripts/debian13-root.sh on first use (about 2 minutes, then cached). Throws with
 * the script's own explanation when it cannot be built, e.g. when Debian's mirror is unreachable.
 */
export async function debian13Root(dir = process.env['TOCFS_DEBIAN13_ROOT'] ?? DEFAULT_DEBIAN13_ROOT): Promise<string> {
  if (!existsSync(ROOT_SCRIPT)) throw new Error(`${ROOT_SCRIPT} is missing: the podman 5 suite builds its Debian 13 root with it`);
  const out = await exec('bash', [ROOT_SCRIPT, dir], { timeoutMs: 900_000, what: `building the Debian 13 root for podman 5 (${ROOT_SCRIPT} ${dir})` });
  const root = out.trim().split('\n').pop() ?? '';
  if (!existsSync(join(root, 'usr/bin/podman'))) throw new Error(`${ROOT_SCRIPT} printed "${root}", which has no usr/bin/podman`);
  return root;
}

/** Mount points at or below `prefix` in a mounts table (deepest first, so they can be unmounted in order). */
function mountsBelow(table: string, prefix: string): string[] {
  return table.split('\n').map((l) => (l.split(' ')[1] ?? '').replace(/\\040/g, ' '))
    .filter((m) => m === prefix || m.startsWith(`${prefix}/`)).sort().reverse();
}

/**
 * A private mount namespace, held open by one process, in which the Debian 13 root is ready for `chroot`:
 * bound onto itself (podman's layer unpacking needs `/` to be a mount point), proc mounted, /sys (with a pure
 * cgroup2 /sys/fs/cgroup, which `podman run` needs here) and /dev rbound, and each shared host directory rbound at
 * the same path, so paths in podman's configuration and output mean the same thing inside and outside.
 */
export class Debian13Chroot {
  private stopped = false;

  private constructor(readonly root: string, private readonly holder: ChildProcess, readonly shared: string[]) {}

  static async start(root: string, shared: string[]): Promise<Debian13Chroot> {
    for (const dir of shared) {
      // Bind targets are made on the namespace's tmpfs /tmp, so the cached root on disk is never written to.
      if (!dir.startsWith('/tmp/') || dir.includes('..')) throw new Error(`shared directory must be below /tmp: "${dir}"`);
    }
    const r = quote(root);
    const script = [
      'set -e',
      // /sys/fs/cgroup here is hybrid v1; crun inside podman 5 and 4 needs a pure cgroup2 one (environment.md).
      'umount -l /sys/fs/cgroup', 'mount -t cgroup2 none /sys/fs/cgroup',
      `mount --bind ${r} ${r}`,
      `mount -t proc proc ${r}/proc`,
      `mount --rbind /sys ${r}/sys`,
      `mount --rbind /dev ${r}/dev`,
      // Per-namespace state: podman's default blob-info cache (/var/lib/containers/cache, used by push), locks and
      // temp files must not carry over between runs through the cached root.
      ...['tmp', 'var/tmp', 'run', 'var/lib/containers', 'var/cache/containers'].map((d) => `mkdir -p ${r}/${d} && mount -t tmpfs -o mode=0755 tmpfs ${r}/${d}`),
      `chmod 1777 ${r}/tmp ${r}/var/tmp`,
      ...shared.map((d) => `mkdir -p ${quote(join(root, d))} && mount --rbind ${quote(d)} ${quote(join(root, d))}`),
      'echo ready',
      // The namespace lives as long as this process (and anything podman left running in it). It reads its stdin,
      // a pipe from this test process, so it also ends when the test process dies without calling stop().
      'exec cat >/dev/null',
    ].join('\n');
    const holder = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    holder.stdout!.on('data', (d) => { out += d; });
    holder.stderr!.on('data', (d) => { err += d; });
    const ok = await new Promise<boolean>((res) => {
      const timer = setTimeout(() => res(false), 30_000);
      holder.stdout!.on('data', () => { if (out.includes('ready')) { clearTimeout(timer); res(true); } });
      holder.once('exit', () => { clearTimeout(timer); res(false); });
    });
    const chroot = new Debian13Chroot(root, holder, shared);
    if (!ok) {
      await chroot.stop().catch(() => {});
      throw new Error(`could not prepare the mount namespace for chroot ${root}: ${err.trim() || 'no answer within 30 s'}`);
    }
    return chroot;
  }

  get pid(): number {
    return this.holder.pid!;
  }

  /** Run a program inside the namespace and the chroot. */
  exec(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<string> {
    if (this.stopped) return Promise.reject(new Error('the Debian 13 chroot was stopped'));
    return exec('nsenter', ['--target', String(this.pid), '--mount', '--', 'chroot', this.root, cmd, ...args],
      { env: opts.env ?? process.env, timeoutMs: opts.timeoutMs ?? 180_000, what: `chroot ${this.root} ${cmd} ${args.join(' ')}` });
  }

  /**
   * Where a path seen inside the chroot (e.g. a mount made by `podman image mount`, which exists only in the
   * namespace) can be read from this process: through the holder's /proc root.
   */
  hostPath(chrootPath: string): string {
    return `/proc/${this.pid}/root${join(this.root, chrootPath)}`;
  }

  /** Mounts of the namespace at or below the root. */
  namespaceMounts(): string[] {
    try {
      return mountsBelow(readFileSync(`/proc/${this.pid}/mounts`, 'utf8'), this.root);
    } catch {
      return [];
    }
  }

  /**
   * Unmount everything below the root inside the namespace and end the holder. Fails if a mount of ours is
   * visible on the host (which the private namespace should prevent).
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const pid = this.holder.pid;
    if (pid !== undefined && this.holder.exitCode === null && this.holder.signalCode === null) {
      // Everything hangs below the root's bind onto itself: one recursive detach takes it all (podman's overlays too).
      await exec('nsenter', ['--target', String(pid), '--mount', '--', 'umount', '--recursive', '--lazy', this.root], { timeoutMs: 30_000, what: `umount -R ${this.root}` })
        .catch(() => {});
      const left = this.namespaceMounts();
      const exited = new Promise<void>((res) => this.holder.once('exit', () => res()));
      this.holder.kill('SIGKILL');
      await exited;
      // Ending the holder ends the namespace with whatever was still mounted in it, unless podman left a process.
      if (left.length) throw new Error(`could not unmount in the chroot's namespace: ${left.join(', ')}`);
    }
    const leaked = mountsBelow(readFileSync('/proc/mounts', 'utf8'), this.root);
    if (leaked.length) throw new Error(`mounts below ${this.root} leaked into the host namespace: ${leaked.join(', ')}`);
  }
}

/**
 * podman 5.x from the Debian 13 root, with a storage root, run root and configuration of its own (all under `dir`,
 * which must be below one of the chroot's shared directories). `als` adds the tocfs store as additional layer store.
 */
export class Podman5 {
  readonly env: NodeJS.ProcessEnv;
  readonly graphroot: string;

  constructor(readonly chroot: Debian13Chroot, readonly dir: string, opts: { als?: string; insecureHosts?: string[]; storageOptions?: string[] }) {
    if (!chroot.shared.some((s) => dir === s || dir.startsWith(`${s}/`))) throw new Error(`${dir} is not below a directory shared with the chroot`);
    mkdirSync(dir, { recursive: true });
    this.graphroot = join(dir, 'graph');
    const storage = join(dir, 'storage.conf');
    writeFileSync(storage, [
      '[storage]', 'driver = "overlay"', `graphroot = "${this.graphroot}"`, `runroot = "${join(dir, 'run')}"`,
      '[storage.options]', ...(opts.als ? [`additionallayerstores = ["${opts.als}:ref"]`] : []), ...(opts.storageOptions ?? []), '',
    ].join('\n'));
    const registries = join(dir, 'registries.conf');
    writeFileSync(registries, (opts.insecureHosts ?? []).map((h) => `[[registry]]\nlocation = "${h}"\ninsecure = true\n`).join('\n'));
    const containers = join(dir, 'containers.conf');
    writeFileSync(containers, [
      '[engine]', 'cgroup_manager = "cgroupfs"', 'events_logger = "file"', `tmp_dir = "${join(dir, 'tmp')}"`,
      '[containers]', 'log_driver = "k8s-file"', '',
    ].join('\n'));
    this.env = {
      PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', LANG: 'C.UTF-8',
      CONTAINERS_STORAGE_CONF: storage, CONTAINERS_REGISTRIES_CONF: registries, CONTAINERS_CONF: containers,
      // Large temporary files (image copies during save/load) stay in the test's directory, not in the cached root.
      TMPDIR: join(dir, 'tmp'),
    };
    mkdirSync(join(dir, 'tmp'), { recursive: true });
  }

  /** Run podman; resolves stdout, rejects with podman's stderr. */
  podman(args: string[], timeoutMs = 180_000): Promise<string> {
    return this.chroot.exec('podman', args, { env: this.env, timeoutMs });
  }

  /** `podman run` the way this machine allows (environment.md): no cgroups, no network, explicit ulimits. */
  run(image: string, command: string[], timeoutMs = 180_000): Promise<string> {
    return this.podman(['run', ...PODMAN_RUN_FLAGS, image, ...command], timeoutMs);
  }

  /** A path printed by podman (e.g. by `podman image mount`) as this process can read it. */
  hostPath(chrootPath: string): string {
    return this.chroot.hostPath(chrootPath);
  }

  /** Remove every container and image, unmount what podman left below `dir` in the namespace, remove `dir`. */
  async cleanup(): Promise<void> {
    await this.podman(['rm', '-a', '-f']).catch(() => {});
    await this.podman(['rmi', '-a', '-f']).catch(() => {});
    for (const m of this.chroot.namespaceMounts().filter((x) => x.startsWith(join(this.chroot.root, this.dir)))) {
      await exec('nsenter', ['--target', String(this.chroot.pid), '--mount', '--', 'umount', '-l', m], { timeoutMs: 30_000, what: `umount ${m}` }).catch(() => {});
    }
    await exec('rm', ['-rf', '--one-file-system', this.dir], { timeoutMs: 60_000, what: `rm -rf ${this.dir}` }).catch(() => {});
  }
}
