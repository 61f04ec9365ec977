import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open, readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { startDaemon, type DaemonHandle } from '../helpers/daemon.js';
import { openChunkedLayer } from '../../src/format/index.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { buildImage, buildLayerTar, pushImage, withConfig, type BuiltImage } from '../helpers/image-builder.js';
import { startRegistry, type RegistryServer, loopbackClient } from '../helpers/registry-server.js';

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function waitFor(what: string, cond: () => boolean, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * The sentinel variant (container-libs PR #681): a 512-byte non-tar first layer tells TOC-aware clients the image
 * must only be consumed through TOCs, so they may skip the DiffID proof; tar-based tools cannot use it at all.
 */
function sentinelVariant(img: BuiltImage): BuiltImage {
  const content = Buffer.alloc(512);
  content.write('ZSTD-CHUNKED-SENTINEL', 1, 'latin1');
  content.fill(0xff, 148, 156);
  content.write('NOTTAR', 257, 'latin1');
  return withConfig(img, (c) => { c.rootfs.diff_ids = [sha(content), sha(Buffer.from('an unproven claim'))]; }, (m, blobs) => {
    m.layers = [{ mediaType: 'application/vnd.containers.zstd-chunked-sentinel', digest: sha(content), size: 512 }, ...m.layers];
    blobs.set(sha(content), content);
  });
}

/** The same image with a prefetch hint annotation (as `tocfs convert --prefetch` writes it) on its layer. */
function withHint(img: BuiltImage, value: string): BuiltImage {
  return withConfig(img, () => {}, (m) => {
    const layer = m.layers[0] as { annotations: Record<string, string> };
    layer.annotations = { ...layer.annotations, 'io.github.tocfs.prefetch': value };
  });
}

/** The same image with its config claiming another DiffID for the layer (the "two views" attack). */
function withWrongDiffId(img: BuiltImage): BuiltImage {
  return withConfig(img, (c) => { c.rootfs.diff_ids[0] = sha(Buffer.from('not this layer')); });
}

describe('store: background fetch, outages and the DiffID proof', function () {
  this.timeout(180_000);
  let work: string;
  let registry: RegistryServer;
  let proxy: FaultProxy;
  let image: BuiltImage;
  const files = Array.from({ length: 8 }, (_, i) => ({ path: `data/f${i}.bin`, data: randomBytes(200_000 + i) }));
  const daemons: DaemonHandle[] = [];

  const refOf = (name: string) => `${proxy.host}/bg/${name}:v1`;
  const diffOf = (d: DaemonHandle, ref: string) => join(d.mountpoint, Buffer.from(ref).toString('base64'), image.layers[0]!.digest);
  async function daemon(name: string, config: string): Promise<DaemonHandle> {
    const dir = join(work, name);
    mkdirSync(dir);
    const d = await startDaemon(dir, { insecureHosts: [proxy.host], extraConfig: config });
    daemons.push(d);
    return d;
  }

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'tocfs-bg-'));
    registry = await startRegistry({});
    proxy = await startFaultProxy(registry.url);
    const tar = await buildLayerTar(work, 'l', files.map((f) => ({ ...f, type: 'file' as const })));
    image = await buildImage([{ tar, compression: 'zstd:chunked' }]);
    const client = loopbackClient(proxy.host);
    for (const name of ['fetched', 'outage', 'proven', 'reads', 'restart', 'attached']) await pushImage(client, refOf(name), image);
    await pushImage(client, refOf('hinted'), withHint(image, JSON.stringify(['/data/f6.bin', 'data/f2.bin', '/no/such/file'])));
    await pushImage(client, refOf('badhint'), withHint(image, 'not json'));
    await pushImage(client, refOf('tampered'), withWrongDiffId(image));
    await pushImage(client, refOf('sentinel'), sentinelVariant(image));
    await client.close();
  });
  afterEach(() => proxy.setRule(undefined));
  after(async () => {
    for (const d of daemons) await d.stop();
    await proxy?.stop();
    await registry?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('fetches a whole layer in the background; then every file reads with the registry gone', async () => {
    const d = await daemon('fetched', 'diffid_proof = "off"\n');
    await stat(join(diffOf(d, refOf('fetched')), 'info'));
    await waitFor('the layer to become fully local', () => /"msg":"layer fully local"/.test(d.log()));
    proxy.setRule(() => ({ kind: 'reset' }));
    for (const f of files) assert.ok((await readFile(join(diffOf(d, refOf('fetched')), 'diff', f.path))).equals(f.data), f.path);
  });

  it('fails an uncached read with EIO within the bound when the registry stalls, and recovers when it is back', async () => {
    const d = await daemon('outage', 'background_fetch = false\ndiffid_proof = "off"\nfetch_timeout = 2\n');
    const dir = diffOf(d, refOf('outage'));
    await stat(join(dir, 'info'));
    proxy.setRule(() => ({ kind: 'stall' }));
    const t0 = Date.now();
    await assert.rejects(readFile(join(dir, 'diff', files[0]!.path)), (e: NodeJS.ErrnoException) => e.code === 'EIO');
    const elapsed = Date.now() - t0;
    assert.ok(elapsed < 10_000, `EIO after ${elapsed} ms (bound 2 s)`);
    assert.match(d.log(), /the registry did not deliver within 2 s/);
    proxy.setRule(undefined);
    assert.ok((await readFile(join(dir, 'diff', files[0]!.path))).equals(files[0]!.data), 'reads work again');
  });

  it('remembers which files were read first and fetches them first next time', async () => {
    const dir = join(work, 'order');
    mkdirSync(dir);
    const cfg = 'background_fetch = false\ndiffid_proof = "off"\n';
    const d1 = await startDaemon(dir, { insecureHosts: [proxy.host], extraConfig: cfg });
    daemons.push(d1);
    const last = files[files.length - 1]!;
    await readFile(join(diffOf(d1, refOf('outage')), 'diff', last.path)); // the last file in TOC order, read first
    await new Promise((r) => setTimeout(r, 1500)); // the order is saved after a second
    await d1.stop();
    rmSync(join(dir, 'state', 'cache'), { recursive: true, force: true }); // cold cache, same access log
    proxy.clear();
    // One file per batch, one batch at a time: the order of requests is the order of the fetch.
    const d2 = await startDaemon(dir, { insecureHosts: [proxy.host], extraConfig: 'background_concurrency = 1\nbackground_batch = "64KiB"\ndiffid_proof = "off"\n' });
    daemons.push(d2);
    await stat(join(diffOf(d2, refOf('outage')), 'info'));
    await waitFor('the background fetch', () => /"msg":"layer fully local"/.test(d2.log()));
    const desc = JSON.parse(image.manifest.toString()).layers[0];
    const blob = image.blobs.get(desc.digest)!;
    const toc = (await openChunkedLayer({ size: blob.length, read: async (a, b) => blob.subarray(a, b) }, desc.annotations)).toc;
    const lastFile = toc.files.find((f) => f.path === `/${last.path}`)!;
    const tocOffset = Number(desc.annotations['io.github.containers.zstd-chunked.manifest-position'].split(':')[0]);
    const contentRanges = proxy.requests.filter((r) => r.range && Number(/bytes=(\d+)/.exec(r.range)![1]) < tocOffset);
    const firstStart = Number(/bytes=(\d+)/.exec(contentRanges[0]!.range!)![1]);
    assert.equal(firstStart, lastFile.chunks[0]!.start, 'the file read first (last in the blob) was fetched first');
  });

  async function layerToc() {
    const desc = JSON.parse(image.manifest.toString()).layers[0];
    const blob = image.blobs.get(desc.digest)!;
    return (await openChunkedLayer({ size: blob.length, read: async (a, b) => blob.subarray(a, b) }, desc.annotations)).toc;
  }

  /** The file offsets where a file's chunks end. */
  function toc2Chunks(chunks: readonly { fileOffset: number; size: number }[]): number[] {
    return chunks.map((c) => c.fileOffset + c.size);
  }

  /** Where each file's bytes lie in the blob, from the layer's own TOC. */
  /** The files of the layer in the order the proxy saw their bytes requested. */
  async function fetchOrder(): Promise<string[]> {
    const ranges = await fileRanges();
    const fileAt = (offset: number) => ranges.find((r) => offset >= r.start && offset < r.end)?.path;
    const order: string[] = [];
    for (const r of proxy.requests) {
      const m = r.range ? /bytes=(\d+)/.exec(r.range) : null;
      const path = m ? fileAt(Number(m[1])) : undefined;
      if (path && !order.includes(path)) order.push(path);
    }
    return order;
  }

  async function fileRanges(): Promise<{ path: string; start: number; end: number }[]> {
    const desc = JSON.parse(image.manifest.toString()).layers[0];
    const blob = image.blobs.get(desc.digest)!;
    const toc = (await openChunkedLayer({ size: blob.length, read: async (a, b) => blob.subarray(a, b) }, desc.annotations)).toc;
    return toc.files.filter((f) => f.chunks.length > 0).map((f) => ({ path: f.path, start: f.chunks[0]!.start, end: f.chunks[f.chunks.length - 1]!.end }));
  }

  it("fetches the files of the image's prefetch hint first, on a node that never ran the image", async () => {
    const d = await daemon('hinted', 'background_concurrency = 1\nbackground_batch = "64KiB"\ndiffid_proof = "off"\n');
    proxy.clear();
    await stat(join(diffOf(d, refOf('hinted')), 'info'));
    await waitFor('the background fetch', () => /"msg":"layer fully local"/.test(d.log()));
    const order = await fetchOrder();
    assert.deepEqual(order.slice(0, 2), ['/data/f6.bin', '/data/f2.bin'], `fetch order ${order.join(', ')}`);
    const status = JSON.parse((await runCli(['status', '--root', d.root, '--json'])).stdout);
    assert.equal(status.layers[0].hintedFiles, 2, 'the hint names two files of the layer (and one it does not have)');
    assert.ok((await readFile(join(diffOf(d, refOf('hinted')), 'diff', files[6]!.path))).equals(files[6]!.data));
  });

  it('takes a hint attached to the image with `tocfs hint` (an OCI artifact): the image and its digest stay unchanged', async () => {
    const client = loopbackClient(proxy.host);
    const before = (await client.fetchManifest(refOf('attached'))).digest;
    const list = join(work, 'attached-paths.txt');
    // f5: only a byte in its last chunk was read, so only that chunk goes first.
    const f5 = (await layerToc()).files.find((f) => f.path === '/data/f5.bin')!;
    const lastChunk = f5.chunks[f5.chunks.length - 1]!;
    assert.ok(f5.chunks.length >= 2);
    writeFileSync(list, `/data/f5.bin @${lastChunk.fileOffset + 1}-${lastChunk.fileOffset + 2}\n# a comment\n/data/f1.bin\n/no/such/file\n`);
    const r = await runCli(['hint', refOf('attached'), list, '--insecure']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`attached a prefetch hint of 3 paths \\(1 of them only the parts read\\) to .*@${before}`));
    assert.match(r.stdout, /listed under tag sha256-[0-9a-f]{64}/);
    assert.equal((await client.fetchManifest(refOf('attached'))).digest, before, 'the image manifest is unchanged');
    await client.close();
    const d = await daemon('attached', 'background_concurrency = 1\nbackground_batch = "64KiB"\ndiffid_proof = "off"\n');
    proxy.clear();
    await stat(join(diffOf(d, refOf('attached')), 'info'));
    await waitFor('the background fetch', () => /"msg":"layer fully local"/.test(d.log()));
    // Every range asked, in order (a batch may merge chunks of several files into one multi-range request).
    const asked = proxy.requests.flatMap((q) => [...(q.range ?? '').matchAll(/(\d+)-(\d+)/g)].map((m) => [Number(m[1]), Number(m[2])]));
    // Where in that order a blob offset was first asked for (nearby ranges are merged: look inside them).
    const at = (offset: number) => {
      const i = asked.findIndex(([a, b]) => a <= offset && offset <= b!);
      assert.ok(i >= 0, `offset ${offset} was never asked for`);
      return i;
    };
    const toc = await layerToc();
    const firstChunkOf = (p: string) => toc.files.find((f) => f.path === p)!.chunks[0]!.start;
    assert.ok(at(lastChunk.start) < at(f5.chunks[0]!.start), 'of f5, the chunk read went before the chunks not read');
    assert.ok(at(lastChunk.start) < at(firstChunkOf('/data/f0.bin')), 'the hinted chunk went before unhinted files');
    assert.ok(at(firstChunkOf('/data/f1.bin')) < at(firstChunkOf('/data/f0.bin')), 'the hinted f1 went before unhinted files');
    const status = JSON.parse((await runCli(['status', '--root', d.root, '--json'])).stdout);
    assert.equal(status.layers[0].hintedFiles, 2);
  });

  it('ignores a malformed prefetch hint with a warning and serves the layer', async () => {
    const d = await daemon('badhint', 'diffid_proof = "off"\n');
    assert.ok((await readFile(join(diffOf(d, refOf('badhint')), 'diff', files[0]!.path))).equals(files[0]!.data));
    assert.match(d.log(), /prefetch hint ignored: annotation io\.github\.tocfs\.prefetch is not JSON/);
  });

  it('`tocfs reads` lists the files containers read first, in order, for `tocfs convert --prefetch`', async () => {
    const d = await daemon('reads', 'background_fetch = false\ndiffid_proof = "off"\n');
    const dir = join(diffOf(d, refOf('reads')), 'diff');
    for (const i of [4, 1, 4]) await readFile(join(dir, files[i]!.path));
    // A file read in part: its line names the byte ranges read (whole chunks), for chunk-level hints.
    const f2 = toc2Chunks((await layerToc()).files.find((f) => f.path === '/data/f2.bin')!.chunks);
    assert.ok(f2.length >= 2, 'f2 has several chunks');
    const fh = await open(join(dir, files[2]!.path), 'r');
    await fh.read(Buffer.alloc(10), 0, 10, 0);
    await fh.close();
    const r = await runCli(['reads', '--root', d.root, refOf('reads')]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.split('\n');
    assert.deepEqual(lines.slice(0, 2), ['/data/f4.bin', '/data/f1.bin']);
    const m = /^\/data\/f2\.bin @0-(\d+)$/.exec(lines[2]!);
    assert.ok(m, `line ${lines[2]}`);
    assert.ok(f2.includes(Number(m[1])) && Number(m[1]) < files[2]!.data.length, `${m[1]} is a chunk end inside the file`);
    const json = JSON.parse((await runCli(['reads', '--root', d.root, '--json'])).stdout);
    assert.deepEqual(json, [{
      ref: refOf('reads'), blobDigest: image.layers[0]!.digest, tocDigest: image.layers[0]!.tocDigest,
      paths: ['/data/f4.bin', '/data/f1.bin', '/data/f2.bin'], ranges: { '/data/f2.bin': [[0, Number(m[1])]] },
    }]);
    const unknown = await runCli(['reads', '--root', d.root, 'example.com/never:seen']);
    assert.notEqual(unknown.code, 0);
    assert.match(unknown.stderr, new RegExp(`the daemon has served no layer of example.com/never:seen; it knows ${refOf('reads').replace(/[.]/g, '\\.')}`));
  });

  it('trusts a proof it passed before: a restarted daemon does not hash the layer again', async () => {
    const dir = join(work, 'restart');
    mkdirSync(dir);
    const d1 = await startDaemon(dir, { insecureHosts: [proxy.host] });
    daemons.push(d1);
    await stat(join(diffOf(d1, refOf('restart')), 'info'));
    await waitFor('the proof', () => /"msg":"DiffID proven"/.test(d1.log()));
    await d1.stop();
    const d2 = await startDaemon(dir, { insecureHosts: [proxy.host] });
    daemons.push(d2);
    await stat(join(diffOf(d2, refOf('restart')), 'info'));
    const layer = JSON.parse((await runCli(['status', '--root', d2.root, '--json'])).stdout).layers[0];
    assert.equal(layer.proof, 'proven');
    assert.match(layer.proofDetail, /proven before/);
    await new Promise((r) => setTimeout(r, 1000));
    assert.doesNotMatch(d2.log(), /"msg":"DiffID proven"/, 'no second proof');
    await d2.stop();
    // A record is trusted only for the TOC it proved (another manifest could point at another TOC in the blob).
    const record = join(dir, 'state', 'proven', image.layers[0]!.digest.slice(7));
    const r = JSON.parse(await readFile(record, 'utf8'));
    assert.equal(r.toc, image.layers[0]!.tocDigest);
    writeFileSync(record, JSON.stringify({ ...r, toc: `sha256:${'0'.repeat(64)}` }));
    const d3 = await startDaemon(dir, { insecureHosts: [proxy.host] });
    daemons.push(d3);
    await stat(join(diffOf(d3, refOf('restart')), 'info'));
    await waitFor('a new proof', () => /"msg":"DiffID proven"/.test(d3.log()));
  });

  it('proves the DiffID of an honest layer in the background', async () => {
    const d = await daemon('proven', '');
    await stat(join(diffOf(d, refOf('proven')), 'info'));
    await waitFor('the proof', () => /"msg":"DiffID proven"/.test(d.log()));
    assert.ok((await readFile(join(diffOf(d, refOf('proven')), 'diff', files[1]!.path))).equals(files[1]!.data));
  });

  it('quarantines a layer whose config DiffID does not match its tar (background mode): reads become EIO', async () => {
    const d = await daemon('tampered-bg', '');
    const dir = diffOf(d, refOf('tampered'));
    await stat(join(dir, 'info'));
    await waitFor('the quarantine', () => /QUARANTINED/.test(d.log()));
    await assert.rejects(readFile(join(dir, 'diff', files[2]!.path)), (e: NodeJS.ErrnoException) => e.code === 'EIO' || e.code === 'ENOENT');
    assert.match(d.log(), /rebuild a tar with DiffID sha256:[0-9a-f]{64} \(\d+ bytes\), but the image config says sha256:[0-9a-f]{64}/);
  });

  it('skips the proof for a sentinel-variant image (consumed through TOCs only), even in before-use mode', async () => {
    const d = await daemon('sentinel', 'diffid_proof = "before-use"\nbackground_fetch = false\n');
    const dir = diffOf(d, refOf('sentinel'));
    assert.ok((await readFile(join(dir, 'diff', files[3]!.path))).equals(files[3]!.data));
    const status = JSON.parse((await runCli(['status', '--root', d.root, '--json'])).stdout);
    assert.equal(status.layers[0].proof, 'skipped');
    assert.equal(status.layers[0].proofDetail, 'sentinel-variant image');
  });

  it('blocks such a layer before use in before-use mode: podman never sees it', async () => {
    const d = await daemon('tampered-before', 'diffid_proof = "before-use"\n');
    await assert.rejects(stat(join(diffOf(d, refOf('tampered')), 'info')), (e: NodeJS.ErrnoException) => e.code === 'ENOENT');
    // The daemon's log reaches us through a pipe, possibly after the lookup's answer.
    await waitFor('the quarantine in the log', () => /QUARANTINED/.test(d.log()));
    // An honest layer still appears, once proven.
    const ok = join(diffOf(d, refOf('proven')), 'info');
    assert.equal(JSON.parse(await readFile(ok, 'utf8'))['diff-digest'], image.layers[0]!.diffID);
    assert.match(d.log(), /"msg":"DiffID proven"/);
  });
});
