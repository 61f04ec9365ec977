/**
 * npm run demo — tocfs end to end on this machine, as root: a registry on a loopback port, an image converted to
 * zstd:chunked and pushed, `tocfs mount`, then podman (with its own storage) pulling and running the image lazily.
 * Prints what each step did and how many bytes were fetched, then cleans everything up.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../test/helpers/cli.js';
import { startDaemon } from '../test/helpers/daemon.js';
import { buildImage, buildLayerTar, pushImage, type TreeItem } from '../test/helpers/image-builder.js';
import { Podman } from '../test/helpers/podman.js';
import { startRegistry, loopbackClient } from '../test/helpers/registry-server.js';

const say = (s: string) => process.stdout.write(`\n== ${s}\n`);
const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'tocfs-demo-'));
  const registry = await startRegistry({});
  const cleanup: (() => Promise<void>)[] = [async () => registry.stop(), async () => rmSync(work, { recursive: true, force: true })];
  try {
    say(`registry on ${registry.host}; building an image of busybox and 120 MiB of application data`);
    const tools = ['sh', 'cat', 'ls', 'sha256sum', 'head', 'wc'];
    const items: TreeItem[] = [
      { path: 'bin/busybox', type: 'file', data: readFileSync('/bin/busybox'), mode: 0o755 },
      ...tools.map((t): TreeItem => ({ path: `bin/${t}`, type: 'symlink', target: 'busybox' })),
      { path: 'etc/motd', type: 'file', data: 'Hello from a lazily pulled image.\n' },
      ...Array.from({ length: 12 }, (_, i): TreeItem => ({ path: `app/data/part-${i}.bin`, type: 'file', data: randomBytes(10 << 20) })),
    ];
    const tar = await buildLayerTar(work, 'layer', items);
    const image = await buildImage([{ tar, compression: 'zstd:chunked' }], ['/bin/sh']);
    const ref = `${registry.host}/demo/app:v1`;
    const client = loopbackClient(registry.host);
    await pushImage(client, ref, image);
    await client.close();
    const inspect = await runCli(['inspect', `docker://${ref}`, '--insecure']);
    process.stdout.write(inspect.stdout);

    say('tocfs mount (its own state directory; background fetch and DiffID proof off, to show what a run alone fetches)');
    const daemon = await startDaemon(work, { insecureHosts: [registry.host], extraConfig: 'background_fetch = false\ndiffid_proof = "off"\n' });
    cleanup.unshift(() => daemon.stop());
    process.stdout.write(`mounted at ${daemon.mountpoint}\n`);
    const podman = new Podman(join(work, 'podman'), { als: daemon.mountpoint, insecureHosts: [registry.host] });
    cleanup.unshift(() => podman.cleanup());

    say(`podman pull ${ref}`);
    let t = Date.now();
    await podman.podman(['pull', '-q', ref]);
    process.stdout.write(`pulled in ${((Date.now() - t) / 1000).toFixed(1)} s (layer size ${mib(statSync(tar).size)})\n`);

    say('podman run: read /etc/motd and one of the twelve 10 MiB data files');
    t = Date.now();
    process.stdout.write(await podman.run(ref, ['sh', '-c', 'cat /etc/motd; sha256sum /app/data/part-3.bin']));
    process.stdout.write(`ran in ${((Date.now() - t) / 1000).toFixed(1)} s\n`);

    say('tocfs status: only what the container read was fetched (by default tocfs then fetches the rest in the background and proves the DiffID)');
    process.stdout.write((await runCli(['status', '--root', daemon.root])).stdout);
  } finally {
    for (const c of cleanup) await c().catch(() => {});
  }
}

main().catch((err) => {
  process.stderr.write(`demo failed: ${(err as Error).message}\n`);
  process.exitCode = 1;
});
