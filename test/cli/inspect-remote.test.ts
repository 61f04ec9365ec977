import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { buildImage, buildLayerTar, pushImage, type BuiltImage } from '../helpers/image-builder.js';
import { startRegistry, type RegistryServer, loopbackClient } from '../helpers/registry-server.js';

describe('cli: tocfs inspect docker://', function () {
  this.timeout(120_000);
  let work: string;
  let registry: RegistryServer;
  let image: BuiltImage;
  let ref: string;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'tocfs-inspect-remote-'));
    registry = await startRegistry({});
    const big = await buildLayerTar(work, 'big', [{ path: 'big.bin', type: 'file', data: randomBytes(4 << 20) }]);
    const small = await buildLayerTar(work, 'small', [{ path: 'etc/x', type: 'file', data: 'x' }]);
    image = await buildImage([{ tar: big, compression: 'zstd:chunked' }, { tar: small, compression: 'gzip' }]);
    ref = `${registry.host}/inspect/remote:v1`;
    const client = loopbackClient(registry.host);
    await pushImage(client, ref, image);
    await client.close();
  });
  after(async () => {
    await registry?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('reports each layer: kind, lazily servable, verified TOC digest, fetching only the TOC and tar-split', async () => {
    const r = await runCli(['inspect', `docker://${ref}`, '--insecure', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.layers.length, 2);
    const [chunked, gzip] = out.layers;
    assert.equal(chunked.kind, 'zstd:chunked');
    assert.equal(chunked.lazy, true);
    assert.equal(chunked.tocDigest, image.layers[0]!.tocDigest);
    assert.equal(chunked.diffID, image.layers[0]!.diffID);
    assert.ok(chunked.bytesRead < chunked.size / 4, `read ${chunked.bytesRead} of ${chunked.size} bytes`);
    assert.equal(gzip.kind, 'plain');
    assert.equal(gzip.lazy, false);
  });

  it('prints a table without --json, and a named error for a missing image', async () => {
    const r = await runCli(['inspect', `docker://${ref}`, '--insecure']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /lazy +zstd:chunked +TOC sha256:[0-9a-f]{64}/);
    const missing = await runCli(['inspect', `docker://${registry.host}/inspect/nope:v1`, '--insecure']);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /inspect\/nope/);
  });
});
