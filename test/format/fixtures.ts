import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The reference-writer fixtures of ../shared/fixtures/zstd-chunked (skopeo 1.18, c/storage 1.57). */
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
// dist/test/format → repository root → ../shared
export const FIXTURE_ROOT = resolve(here, '..', '..', '..', '..', 'shared', 'fixtures', 'zstd-chunked');

export function loadFixtures(): Fixture[] {
  return readdirSync(FIXTURE_ROOT).sort().map((name) => {
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
