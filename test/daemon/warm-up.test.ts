import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SeenRegistries } from '../../src/daemon/warm-up.js';
import { startDaemon } from '../helpers/daemon.js';
import { startFaultProxy } from '../helpers/fault-proxy.js';
import { loopbackClient, startRegistry } from '../helpers/registry-server.js';

describe('daemon: registries contacted ahead of use after a start', () => {
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'tocfs-warm-up-')); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('keeps one reference per registry host, newest first, across restarts', async () => {
    const file = join(dir, 'registries.json');
    const seen = new SeenRegistries(file);
    await seen.load();
    for (const r of ['a.example/x:1', 'b.example:5000/y:2', 'a.example/z:3', 'not a reference']) seen.record(r);
    await new Promise((r) => setTimeout(r, 1300)); // saved a second after the last change
    assert.deepEqual(JSON.parse(await readFile(file, 'utf8')), ['a.example/z:3', 'b.example:5000/y:2']);
    assert.deepEqual(await new SeenRegistries(file).load(), ['a.example/z:3', 'b.example:5000/y:2']);
    writeFileSync(file, '{"not": "a list"}');
    assert.deepEqual(await new SeenRegistries(file).load(), [], 'an unreadable file is no list');
    writeFileSync(file, JSON.stringify(['ok.example/a:1', 3, '::bad::']));
    assert.deepEqual(await new SeenRegistries(file).load(), ['ok.example/a:1']);
  });

  it('warmUp pings the registry once (later calls reuse what it learned) and never throws', async () => {
    const registry = await startRegistry({});
    const proxy = await startFaultProxy(registry.url);
    const client = loopbackClient(proxy.host);
    try {
      await client.warmUp(`${proxy.host}/app:1`);
      assert.equal(proxy.count('GET', /^\/v2\/$/), 1, 'one ping');
      await client.warmUp(`${proxy.host}/other:2`);
      assert.equal(proxy.count('GET', /^\/v2\/$/), 1, 'the same registry is not pinged twice');
      const dead = loopbackClient('127.0.0.1:9');
      await dead.warmUp('127.0.0.1:9/app:1'); // nothing listens there: logged, not thrown
      await dead.close();
    } finally {
      await client.close();
      await proxy.stop();
      await registry.stop();
    }
  });
});

describe('daemon: a start pings the registries it resolved images from before', () => {
  it('pings them at start, before any lookup', async function () {
    this.timeout(60_000);
    const work = mkdtempSync(join(tmpdir(), 'tocfs-warm-up-daemon-'));
    const registry = await startRegistry({});
    const proxy = await startFaultProxy(registry.url);
    try {
      const state = join(work, 'state');
      mkdirSync(state, { recursive: true });
      writeFileSync(join(state, 'registries.json'), JSON.stringify([`${proxy.host}/app:1`]));
      const d = await startDaemon(work, { insecureHosts: [proxy.host] });
      try {
        const until = Date.now() + 10_000;
        while (proxy.count('GET', /^\/v2\/$/) === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
        assert.equal(proxy.count('GET', /^\/v2\/$/), 1, 'the registry was pinged once, with no lookup');
      } finally {
        await d.stop();
      }
    } finally {
      await proxy.stop();
      await registry.stop();
      rmSync(work, { recursive: true, force: true });
    }
  });
});
