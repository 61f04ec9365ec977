import type { LayerTree } from './tree.js';

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
