import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../helpers/cli.js';
import { buildImage, buildLayerTar, pushImage } from '../helpers/image-builder.js';
import { Podman } from '../helpers/podman.js';
import { startRegistry, type RegistryServer, loopbackClient } from '../helpers/registry-server.js';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const DEFAULT_STORE = '/var/lib/tocfs/store';
const DROP_IN = '/etc/containers/registries.conf.d/99-tocfs-quickstart-test.conf';

const mounted = () => readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === DEFAULT_STORE && l.includes('fuse.tocfs'));

describe('e2e: the README quick start on a fresh clone (npm start, then podman uses the mount)', function () {
  this.timeout(900_000);
  let work: string;
  let registry: RegistryServer;
  let start: ChildProcess | undefined;
  let output = '';
  let podman: Podman | undefined;
  const hadStateDir = existsSync('/var/lib/tocfs');

  before(async () => {
    assert.ok(!mounted(), `${DEFAULT_STORE} is already mounted: stop the running tocfs first`);
    work = mkdtempSync(join(tmpdir(), 'tocfs-quickstart-'));
    registry = await startRegistry({});
    // npm start uses the built-in defaults and the system registries.conf: tell it the test registry is plain HTTP.
    writeFileSync(DROP_IN, `[[registry]]\nlocation = "${registry.host}"\ninsecure = true\n`);
  });

  after(async () => {
    await podman?.cleanup();
    // npm, scripts/start.mjs and tocfs share a process group (detached): end exactly that group.
    const signal = (sig: NodeJS.Signals) => { try { process.kill(-start!.pid!, sig); } catch { /* already gone */ } };
    if (start?.pid && start.exitCode === null) {
      signal('SIGTERM');
      const end = Date.now() + 10_000;
      while (start.exitCode === null && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
      if (start.exitCode === null) signal('SIGKILL');
    }
    if (mounted()) await run('umount', ['-l', DEFAULT_STORE]).catch(() => {});
    rmSync(DROP_IN, { force: true });
    if (!hadStateDir) rmSync('/var/lib/tocfs', { recursive: true, force: true });
    await registry?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('clones the repository and runs `npm start` until the store answers', async () => {
    await run('git', ['clone', '--quiet', repo, join(work, 'tocfs')]);
    assert.ok(!existsSync(join(work, 'tocfs', 'node_modules')), 'a fresh clone has no dependencies installed');
    start = spawn('npm', ['start'], { cwd: join(work, 'tocfs'), detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    start.stdout!.on('data', (d) => { output += d; });
    start.stderr!.on('data', (d) => { output += d; });
    const deadline = Date.now() + 600_000;
    while (!mounted()) {
      if (start.exitCode !== null) throw new Error(`npm start exited (${start.exitCode}):\n${output}`);
      if (Date.now() > deadline) throw new Error(`the store never came up:\n${output}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    await new Promise((r) => setTimeout(r, 500));
    assert.match(output, /additionallayerstores = \["\/var\/lib\/tocfs\/store:ref"\]/);
  });

  it('serves podman from the default mount with the built-in defaults', async () => {
    const tar = await buildLayerTar(work, 'layer', [{ path: 'srv/hello.txt', type: 'file', data: 'hello from the quick start\n' }]);
    const image = await buildImage([{ tar, compression: 'zstd:chunked' }]);
    const ref = `${registry.host}/quickstart/hello:v1`;
    const client = loopbackClient(registry.host);
    await pushImage(client, ref, image);
    await client.close();
    podman = new Podman(join(work, 'podman'), { als: DEFAULT_STORE, insecureHosts: [registry.host] });
    await podman.podman(['pull', '-q', ref]);
    const overlay = join(podman.graphroot, 'overlay');
    assert.equal(readdirSync(overlay).filter((d) => existsSync(join(overlay, d, 'additionallayer'))).length, 1, 'the layer came from the store');
    const m = (await podman.podman(['image', 'mount', ref])).trim();
    try {
      assert.equal(readFileSync(join(m, 'srv/hello.txt'), 'utf8'), 'hello from the quick start\n');
    } finally {
      await podman.podman(['image', 'umount', ref]);
    }
  });
});
