import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The reference-writer fixtures of test/fixtures/zstd-chunked (skopeo 1.18, c/storage 1.57; see its README.md). */
export interface Fixture {
  name: string;
  dir: string;
  blobPath: string;
  descriptor: { mediaType: string; digest: string; size: number; annotations: Record<string, string> };
  facts: { diffID: string; blobDigest: string; tocDigest: string; blobSize: number; tarSize: number };
  tocJson: string;
  tarSplitText: string;
}

const here = dirname(fileURLToPath(import.meta.url));
// The compiled file lives in <outDir>/test/format (dist/ in CI, dist-<x>/ in development); the fixtures are not
// compiled, so they are read from the source tree: up to the repository root, then test/fixtures.
export const FIXTURE_ROOT = resolve(here, '..', '..', '..', 'test', 'fixtures', 'zstd-chunked');

export function loadFixtures(): Fixture[] {
  if (!existsSync(FIXTURE_ROOT)) throw new Error(`the reference fixtures are missing: ${FIXTURE_ROOT} (they are part of the repository)`);
  // One directory per fixture; README.md next to them describes them.
  const names = readdirSync(FIXTURE_ROOT, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
  return names.sort().map((name) => {
    const dir = join(FIXTURE_ROOT, name);
    return {
      name, dir, blobPath: join(dir, 'blob'),
      descriptor: JSON.parse(readFileSync(join(dir, 'descriptor.json'), 'utf8')),
      facts: JSON.parse(readFileSync(join(dir, 'facts.json'), 'utf8')),
      tocJson: readFileSync(join(dir, 'toc.json'), 'utf8'),
      tarSplitText: readFileSync(join(dir, 'tar-split.jsonl'), 'utf8'),
    };
  });
}
