import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openChunkedLayer, readLayerSections } from '../../src/format/index.js';
import { LayerTree, LayerWork, TreeIndexError } from '../../src/layer/index.js';
import { indexFileBytes, openTreeIndex } from '../../src/layer/tree-index.js';
import { loadFixtures } from '../format/fixtures.js';
import { assemble, memBlob, seedLayer } from '../format/helpers.js';

/** Every path of a tree with its attributes, for comparing two trees. */
function listing(tree: LayerTree): string[] {
  const out: string[] = [];
  const walk = (dir: number, prefix: string) => {
    for (let i = 0; i < tree.childCount(dir); i++) {
      const { name, node } = tree.child(dir, i);
      const a = tree.attr(node);
      out.push(`${prefix}/${name} ${a.mode.toString(8)} ${a.uid}:${a.gid} ${a.size} ${a.mtimeSec}.${a.mtimeNsec} ${tree.readlink(node) ?? ''} ${tree.chunkCount(node)} ${tree.fileDigestOf(node) ?? ''}`);
      if (tree.isDir(node)) walk(node, `${prefix}/${name}`);
    }
  };
  walk(0, '');
  return out;
}

describe('layer: tree index (the binary tree kept per TOC digest and shared across threads)', function () {
  this.timeout(60_000);
  const fx = loadFixtures()[0]!;
  const blob = readFileSync(fx.blobPath);
  const mem = { size: blob.length, read: async (s: number, e: number) => blob.subarray(s, e) };
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'tocfs-index-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('round-trips through its file form: the same tree, meta and id sets', async () => {
    const layer = await openChunkedLayer(mem, fx.descriptor.annotations);
    const tree = LayerTree.fromToc(layer.toc, { diffSize: layer.diffSize!, tarSplitDigest: layer.toc.tarSplitDigest! });
    const again = new LayerTree(openTreeIndex(Buffer.concat(indexFileBytes(tree.index)), 'test index'));
    assert.deepEqual(listing(again), listing(tree));
    assert.deepEqual(again.meta, tree.meta);
    assert.equal(again.meta.tocEntries, layer.toc.files.length);
    assert.deepEqual(again.idSets(), tree.idSets());
  });

  it('refuses a torn, corrupted or foreign file instead of using it', async () => {
    const layer = await openChunkedLayer(mem, fx.descriptor.annotations);
    const file = Buffer.concat(indexFileBytes(LayerTree.fromToc(layer.toc).index));
    const flipped = Buffer.from(file);
    flipped[flipped.length - 100]! ^= 1;
    const foreign = Buffer.from(file);
    foreign.write('NOTANIDX', 0, 'latin1');
    assert.throws(() => openTreeIndex(file.subarray(0, file.length - 1), 't'), (e: TreeIndexError) => /bytes, the header describes/.test(e.message));
    assert.throws(() => openTreeIndex(flipped, 't'), (e: TreeIndexError) => /checksum mismatch/.test(e.message));
    assert.throws(() => openTreeIndex(foreign, 't'), (e: TreeIndexError) => /not a tree index of this tocfs version/.test(e.message));
    assert.throws(() => openTreeIndex(file.subarray(0, 10), 't'), (e: TreeIndexError) => /too short/.test(e.message));
  });

  it('refuses, on one worker or two, a TOC whose tar-split disagrees, and a tar-split that is not the TOC\'s', async () => {
    const seed = await seedLayer();
    const good = await openChunkedLayer(memBlob(seed.blob), seed.result.annotations);
    const tamper = (edit: (toc: { entries: { name: string; type: string; mode?: number }[]; tarSplitDigest?: string }) => void) => {
      const toc = JSON.parse(good.tocJson) as { entries: { name: string; type: string; mode?: number }[]; tarSplitDigest?: string };
      edit(toc);
      const a = assemble(seed.data, JSON.stringify(toc), { z: seed.tarSplitZ, size: seed.tarSplitSize });
      return readLayerSections(memBlob(a.blob), a.annotations);
    };
    const modeChanged = await tamper((t) => { t.entries.find((e) => e.name === 'd/small' && e.type === 'reg')!.mode = 0o600; });
    const otherTarSplit = await tamper((t) => { t.tarSplitDigest = `sha256:${'1'.repeat(64)}`; });
    const intact = await tamper(() => {});
    // A TOC that fails before its tar-split's answer is awaited (here: no tarSplitDigest, so the layer is refused).
    const noTarSplitDigest = await tamper((t) => { delete t.tarSplitDigest; });
    for (const threads of [1, 2]) {
      const work = new LayerWork({ threads });
      try {
        await assert.rejects(work.openToc(noTarSplitDigest), (e: Error & { code?: string }) => e.code === 'NO_TARSPLIT');
        const workers = work.stats.workers;
        await new Promise((r) => setTimeout(r, 200));
        assert.equal(work.stats.workers, workers, 'the unawaited tar-split answer did not take a worker down');
        assert.equal(work.stats.crashes, 0);
        await assert.rejects(work.openToc(modeChanged), (e: Error & { code?: string }) => e.code === 'TARSPLIT_MISMATCH' && /"d\/small": mode 384 vs 420/.test(e.message));
        await assert.rejects(work.openToc(otherTarSplit), (e: Error & { code?: string }) => e.code === 'DIGEST_MISMATCH' && /tar-split digest mismatch/.test(e.message));
        const { tree } = await work.openToc(intact);
        assert.equal(tree.meta.diffSize, good.diffSize, `${threads} thread(s)`);
        assert.deepEqual(listing(tree), listing(LayerTree.fromToc(good.toc)));
      } finally {
        await work.close();
      }
    }
  });

  it('is built on a worker, kept on disk with the tar-split, and loaded back only when intact', async () => {
    const work = new LayerWork({ threads: 1 });
    try {
      const files = { index: join(dir, 'x.tree'), tarSplit: join(dir, 'x.tarsplit') };
      const sections = await readLayerSections(mem, fx.descriptor.annotations);
      const { tree, saved } = await work.openToc(sections, files);
      assert.ok(saved);
      const inline = await openChunkedLayer(mem, fx.descriptor.annotations);
      assert.deepEqual(listing(tree), listing(LayerTree.fromToc(inline.toc)));
      const loaded = await work.loadIndex(files, tree.meta.tocDigest);
      assert.ok(loaded);
      assert.deepEqual(listing(loaded), listing(tree));
      const bytes = readFileSync(files.index);
      bytes[bytes.length - 40]! ^= 1;
      writeFileSync(files.index, bytes);
      assert.equal(await work.loadIndex(files, tree.meta.tocDigest), undefined, 'a corrupted index is not used');
      await work.openToc(sections, files);
      assert.equal(await work.loadIndex(files, `sha256:${'0'.repeat(64)}`), undefined, 'an index of another TOC is not used');
    } finally {
      await work.close();
    }
  });
});
