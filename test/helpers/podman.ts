import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from './cli.js';
import { requireTool } from './tools.js';

/** The flags `podman run` needs on these machines (environment.md): no cgroups, no network, explicit ulimits. */
export const PODMAN_RUN_FLAGS = ['--rm', '--cgroups=disabled', '--network=none', '--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024'];

/**
 * The command line of `podman run` the way this machine allows it (environment.md): in a private mount namespace
 * with a pure cgroup2 /sys/fs/cgroup, with PODMAN_RUN_FLAGS.
 */
export function podmanRunArgv(image: string, command: string[]): string[] {
  const quoted = ['podman', 'run', ...PODMAN_RUN_FLAGS, image, ...command].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  return ['unshare', '-m', 'sh', '-c', `mount --make-rprivate / && umount -l /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && exec ${quoted}`];
}

/**
 * podman with a storage root, run root and configuration of its own (nothing of the machine's podman state is
 * touched). `als` adds the tocfs store as an additional layer store.
 */
export class Podman {
  readonly env: NodeJS.ProcessEnv;
  readonly graphroot: string;

  constructor(readonly dir: string, opts: { als?: string; insecureHosts?: string[]; binary?: string }) {
    requireTool('podman'); // before any state is made: a suite without podman fails here, saying what to install
    mkdirSync(dir, { recursive: true });
    this.graphroot = join(dir, 'graph');
    const storage = join(dir, 'storage.conf');
    writeFileSync(storage, [
      '[storage]', 'driver = "overlay"', `graphroot = "${this.graphroot}"`, `runroot = "${join(dir, 'run')}"`,
      '[storage.options]', ...(opts.als ? [`additionallayerstores = ["${opts.als}:ref"]`] : []), '',
    ].join('\n'));
    const registries = join(dir, 'registries.conf');
    writeFileSync(registries, (opts.insecureHosts ?? []).map((h) => `[[registry]]\nlocation = "${h}"\ninsecure = true\n`).join('\n'));
    const containers = join(dir, 'containers.conf');
    writeFileSync(containers, '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n[containers]\nlog_driver = "k8s-file"\n');
    this.env = {
      ...process.env, CONTAINERS_STORAGE_CONF: storage, CONTAINERS_REGISTRIES_CONF: registries, CONTAINERS_CONF: containers,
    };
  }

  /** Run podman; resolves stdout, rejects with podman's stderr. */
  podman(args: string[], timeoutMs = 180_000): Promise<string> {
    return run('podman', args, { env: this.env, timeoutMs });
  }

  /** `podman run` the way this machine allows (podmanRunArgv); resolves stdout. */
  run(image: string, command: string[], timeoutMs = 180_000): Promise<string> {
    const [cmd, ...args] = podmanRunArgv(image, command);
    return new Promise((resolve, reject) => {
      execFile(cmd!, args, { env: this.env, timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`podman run failed: ${stderr || err.message}`));
        else resolve(stdout);
      });
    });
  }

  /** c/storage layers whose diff is an additional layer store's directory (they have an `additionallayer` file). */
  alsLayerCount(): number {
    const dir = join(this.graphroot, 'overlay');
    if (!existsSync(dir)) return 0;
    return readdirSync(dir).filter((d) => existsSync(join(dir, d, 'additionallayer'))).length;
  }

  /** Remove every image and container and unmount what podman left, then its whole state. */
  async cleanup(): Promise<void> {
    await this.podman(['rm', '-a', '-f']).catch(() => {});
    await this.podman(['rmi', '-a', '-f']).catch(() => {});
    const mounts = readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1] ?? '').filter((m) => m.startsWith(this.dir));
    for (const m of mounts.reverse()) await run('umount', ['-l', m]).catch(() => {});
    await run('rm', ['-rf', this.dir]).catch(() => {});
  }
}
