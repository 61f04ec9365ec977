import { cleanAbsPath, rebuildTar, type TarSplitEntry } from '../format/index.js';
import type { Digest } from '../util/index.js';
import type { LayerContent } from './content.js';
import type { LayerTree } from './tree.js';

const PIECE = 1 << 20;

/** The node at an absolute path of the layer, or undefined. */
export function nodeAt(tree: LayerTree, path: string): number | undefined {
  let node = 0;
  for (const part of path.split('/')) {
    if (part === '') continue;
    const next = tree.lookup(node, part);
    if (next === undefined) return undefined;
    node = next;
  }
  return node;
}

/**
 * The DiffID proof (design.md §5): rebuild the layer's tar from its tar-split and the verified contents served
 * by `content`, and hash it. Equal to the config's DiffID means the TOC view podman mounts and the tar view
 * every other tool sees are the same layer. `pace` is awaited before every piece (see BackgroundScheduler.slot).
 */
export async function rebuildDiffId(
  tree: LayerTree, content: LayerContent, tarSplit: readonly TarSplitEntry[], pace?: () => Promise<void>,
): Promise<{ diffID: Digest; size: number }> {
  return rebuildTar(tarSplit, (name, size) => {
    const path = cleanAbsPath(name);
    const node = nodeAt(tree, path);
    if (node === undefined) throw new Error(`the tar-split names "${name}", which is not in the layer tree`);
    return (async function* () {
      for (let off = 0; off < size; off += PIECE) {
        // Hashing a layer takes seconds of CPU: step aside whenever a container uses the store.
        if (pace) await pace();
        for (const b of await content.read(node, off, Math.min(PIECE, size - off), undefined, true)) yield b;
      }
    })();
  });
}
