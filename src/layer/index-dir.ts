import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';

const ENTRY = /^([0-9a-f]{64})\.(tree|tarsplit)$/;

/**
 * Remove the kept trees (and their tar-splits) of layers not resolved for `maxAgeMs`: `<root>/index` gains one
 * pair per TOC digest ever served (~80–160 B per entry: 15 MiB for a 200k-entry layer) and would otherwise only
 * grow. A tree's mtime is refreshed each time a daemon loads it. Safe while the daemon runs: a removed tree only
 * costs a TOC fetch at the layer's next resolution.
 */
export async function pruneIndexDir(dir: string, maxAgeMs: number, now = Date.now()): Promise<{ removed: number; kept: number; freedBytes: number }> {
  const names = await readdir(dir).catch(() => [] as string[]);
  const trees = new Map<string, number>();
  for (const name of names) {
    const m = ENTRY.exec(name);
    if (m?.[2] === 'tree') trees.set(m[1]!, (await stat(join(dir, name)).catch(() => undefined))?.mtimeMs ?? 0);
  }
  let removed = 0;
  let freedBytes = 0;
  for (const name of names) {
    const m = ENTRY.exec(name);
    // Temporary files of a write that died, and tar-splits whose tree is gone, go too.
    const stale = !m ? name.includes('.tmp-') : now - (trees.get(m[1]!) ?? 0) > maxAgeMs;
    if (!stale) continue;
    const path = join(dir, name);
    freedBytes += (await stat(path).catch(() => undefined))?.size ?? 0;
    await rm(path, { force: true });
    if (m?.[2] === 'tree') removed++;
  }
  return { removed, kept: trees.size - removed, freedBytes };
}
