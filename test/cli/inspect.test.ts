import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadFixtures } from '../format/fixtures.js';
import { runCli } from '../helpers/cli.js';

describe('cli: tocfs inspect', () => {
  let tmp: string;
  before(() => { tmp = mkdtempSync(join(tmpdir(), 'tocfs-inspect-')); });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  for (const fx of loadFixtures()) {
    it(`verifies ${fx.name} and reports the facts of facts.json`, async () => {
      const r = await runCli(['inspect', fx.blobPath, '--descriptor', join(fx.dir, 'descriptor.json'), '--json']);
      assert.equal(r.code, 0, r.stderr);
      const out = JSON.parse(r.stdout);
      assert.equal(out.format, 'zstd:chunked');
      assert.equal(out.blobDigest, fx.facts.blobDigest);
      assert.equal(out.tocDigest, fx.facts.tocDigest);
      assert.equal(out.diffID, fx.facts.diffID);
      assert.equal(out.diffSize, fx.facts.tarSize);
      assert.equal(out.tarSplit, true);
      const toc = JSON.parse(fx.tocJson) as { entries: { type: string }[] };
      assert.equal(out.entries, toc.entries.filter((e) => e.type !== 'chunk').length);
      assert.equal(out.chunkEntries, toc.entries.filter((e) => e.type === 'chunk').length);
    });
  }

  it('prints a readable summary without --json', async () => {
    const fx = loadFixtures()[0]!;
    const r = await runCli(['inspect', fx.blobPath, '--descriptor', join(fx.dir, 'descriptor.json')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`DiffID\\s+${fx.facts.diffID}`));
  });

  it('fails naming the file whose chunk is corrupt', async () => {
    const fx = loadFixtures().find((f) => f.name === 'big-chunked')!;
    const blob = Buffer.from(readFileSync(fx.blobPath));
    const toc = JSON.parse(fx.tocJson) as { entries: { name: string; type: string; offset?: number }[] };
    const model = toc.entries.find((e) => e.type === 'chunk' && e.name === './model.bin')!;
    blob[model.offset! + 20] ^= 0xff;
    const path = join(tmp, 'corrupt-blob');
    writeFileSync(path, blob);
    // The descriptor digest no longer matches either: drop it so the chunk check is what fails.
    const desc = JSON.parse(readFileSync(join(fx.dir, 'descriptor.json'), 'utf8'));
    delete desc.digest;
    writeFileSync(join(tmp, 'desc.json'), JSON.stringify(desc));
    const r = await runCli(['inspect', path, '--descriptor', join(tmp, 'desc.json')]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /\.\/model\.bin/);
    assert.match(r.stderr, /chunk at file offset \d+/);
  });

  it('fails when the blob does not match its descriptor digest', async () => {
    const fx = loadFixtures()[0]!;
    const path = join(tmp, 'blob-copy');
    copyFileSync(fx.blobPath, path);
    writeFileSync(path, Buffer.concat([readFileSync(path), Buffer.from('x')]));
    const r = await runCli(['inspect', path, '--descriptor', join(fx.dir, 'descriptor.json')]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /hashes to sha256:[0-9a-f]{64}, the descriptor says/);
  });

  it('refuses a layer that is not zstd:chunked, saying what it is', async () => {
    const fx = loadFixtures()[0]!;
    writeFileSync(join(tmp, 'plain.json'), JSON.stringify({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' }));
    const r = await runCli(['inspect', fx.blobPath, '--descriptor', join(tmp, 'plain.json')]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /plain, not zstd:chunked/);
  });
});
