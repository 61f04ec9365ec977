import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultConfig, loadConfig } from '../../src/daemon/config.js';

describe('daemon: config', () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'tocfs-config-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));
  const load = (text: string) => {
    const file = join(dir, 'tocfs.toml');
    writeFileSync(file, text);
    return loadConfig(file);
  };

  it('keeps the neighbour window fixed by default, and lets nearby_prefetch_max widen its range', async () => {
    const d = defaultConfig();
    assert.equal(d.nearbyPrefetchBytes, 512 << 10);
    assert.equal(d.nearbyPrefetchMaxBytes, d.nearbyPrefetchBytes, 'fixed unless asked');
    const adaptive = await load('nearby_prefetch = "1MiB"\nnearby_prefetch_max = "8MiB"\n');
    assert.equal(adaptive.nearbyPrefetchBytes, 1 << 20);
    assert.equal(adaptive.nearbyPrefetchMaxBytes, 8 << 20);
    await assert.rejects(load('nearby_prefetch_max = "lots"\n'), /nearby_prefetch_max/);
  });
});
