/**
 * npm run bench:tree — resident memory of a layer's inode tree per TOC entry (design goal ≤ 300 B), for a
 * synthetic layer of BENCH_ENTRIES (default 200 000) entries shaped like a distribution image: directories of
 * ~50 files, names of 10–30 characters, one chunk per file. Baseline in the same run: the format library's
 * LayerToc (an object per entry), which is what a naive tree would keep. Run with --expose-gc.
 */
import { buildLayerToc, type TocDocument, type TocEntry } from '../src/format/index.js';
import { LayerTree } from '../src/layer/index.js';

const N = Number(process.env.BENCH_ENTRIES ?? 200_000);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with node --expose-gc');

function synthetic(): TocDocument {
  const entries: TocEntry[] = [];
  let offset = 100;
  const digest = (i: number) => `sha256:${i.toString(16).padStart(64, '0')}`;
  for (let d = 0; entries.length < N; d++) {
    const dir = `usr/share/pkg-${d.toString(36)}/data`;
    entries.push({ type: 'dir', name: `${dir}/`, mode: 0o755, modtime: { sec: 1_700_000_000, nsec: 0 } });
    for (let f = 0; f < 50 && entries.length < N; f++) {
      const size = 100 + ((d * 50 + f) % 5000);
      entries.push({
        type: 'reg', name: `${dir}/file-${f}-${'x'.repeat(f % 20)}.txt`, mode: 0o644, size, modtime: { sec: 1_700_000_000, nsec: 0 },
        digest: digest(entries.length), offset, endOffset: offset + 60,
      });
      offset += 600;
    }
  }
  return { version: 1, entries };
}

function used(): number {
  gc!();
  gc!();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

const base = used();
const doc = synthetic();
const toc = buildLayerToc(doc, `sha256:${'a'.repeat(64)}`, Number.MAX_SAFE_INTEGER);
const withToc = used();
const tree = LayerTree.fromToc(toc);
const withBoth = used();
(toc as { files: unknown[] }).files = [];
doc.entries = [];
const treeOnly = used() - base;
const perEntry = (withBoth - withToc) / N;
console.log(`entries: ${N} (${tree.nodeCount} nodes, ${tree.chunkTotal} chunks)`);
console.log('| structure | bytes per entry |');
console.log('| --- | --- |');
console.log(`| TOC entries + LayerToc (objects per entry, baseline) | ${((withToc - base) / N).toFixed(0)} |`);
console.log(`| LayerTree (typed arrays) | ${perEntry.toFixed(0)} |`);
console.log(`| ratio | ${((withToc - base) / (withBoth - withToc)).toFixed(1)}× smaller |`);
console.log(`(after dropping the TOC the tree holds ${(treeOnly / 2 ** 20).toFixed(0)} MiB; tree keeps ~${(tree.approximateBytes() / N).toFixed(0)} B/entry by its own estimate)`);
