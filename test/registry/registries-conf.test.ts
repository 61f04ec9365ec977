import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlockedRegistryError, loadRegistriesConf, parseReference, parseRegistriesConf, RegistriesConf, RegistryConfigError }
  from '../../src/registry/index.js';

describe('registry/registries-conf', () => {
  let dir: string;
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'tocfs-regconf-')); });
  after(async () => { await rm(dir, { recursive: true, force: true }); });

  const conf = (text: string): RegistriesConf => new RegistriesConf(parseRegistriesConf(text, 'test.conf'));

  it('uses the primary location when nothing matches', () => {
    const eps = RegistriesConf.empty().pullEndpoints(parseReference('alpine'));
    assert.equal(eps.length, 1);
    assert.equal(eps[0]!.apiHost, 'registry-1.docker.io');
    assert.equal(eps[0]!.insecure, false);
    assert.equal(eps[0]!.reference.string, 'docker.io/library/alpine:latest');
  });

  it('lists mirrors in order, then the primary, and rewrites prefixes', () => {
    const c = conf(`
      unqualified-search-registries = ["docker.io"]
      [[registry]]
      prefix = "docker.io"
      location = "docker.io"
      [[registry.mirror]]
      location = "mirror-a.example:5000/hub"
      insecure = true
      [[registry.mirror]]
      location = "mirror-b.example"
    `);
    const eps = c.pullEndpoints(parseReference('alpine:3'));
    assert.deepEqual(eps.map((e) => [e.reference.string, e.apiHost, e.insecure, e.mirror]), [
      ['mirror-a.example:5000/hub/library/alpine:3', 'mirror-a.example:5000', true, true],
      ['mirror-b.example/library/alpine:3', 'mirror-b.example', false, true],
      ['docker.io/library/alpine:3', 'registry-1.docker.io', false, false],
    ]);
    assert.equal(c.pushEndpoint(parseReference('alpine:3')).reference.string, 'docker.io/library/alpine:3');
  });

  it('picks the longest matching prefix, on component boundaries', () => {
    const c = conf(`
      [[registry]]
      prefix = "example.com"
      location = "one.example"
      [[registry]]
      prefix = "example.com/team"
      location = "two.example/t"
      insecure = true
    `);
    assert.equal(c.pullEndpoints(parseReference('example.com/team/app:1'))[0]!.reference.string, 'two.example/t/app:1');
    assert.equal(c.pullEndpoints(parseReference('example.com/teamx/app'))[0]!.reference.string, 'one.example/teamx/app:latest');
    assert.equal(c.pullEndpoints(parseReference('example.com/team/app'))[0]!.insecure, true);
    assert.equal(c.pullEndpoints(parseReference('example.community/x'))[0]!.reference.domain, 'example.community');
  });

  it('matches *.domain wildcards and keeps the host', () => {
    const c = conf(`
      [[registry]]
      prefix = "*.internal.example"
      insecure = true
      [[registry.mirror]]
      location = "cache.example"
    `);
    const eps = c.pullEndpoints(parseReference('reg.internal.example/a/b'));
    assert.deepEqual(eps.map((e) => [e.reference.string, e.insecure]), [
      ['cache.example/a/b:latest', false], ['reg.internal.example/a/b:latest', true],
    ]);
    assert.equal(c.pullEndpoints(parseReference('internal.example/a'))[0]!.insecure, false);
  });

  it('honours pull-from-mirror', () => {
    const c = conf(`
      [[registry]]
      location = "quay.io"
      [[registry.mirror]]
      location = "digests.example"
      pull-from-mirror = "digest-only"
      [[registry.mirror]]
      location = "tags.example"
      pull-from-mirror = "tag-only"
    `);
    const byTag = c.pullEndpoints(parseReference('quay.io/a/b:1')).map((e) => e.apiHost);
    const byDigest = c.pullEndpoints(parseReference(`quay.io/a/b@sha256:${'1'.repeat(64)}`)).map((e) => e.apiHost);
    assert.deepEqual(byTag, ['tags.example', 'quay.io']);
    assert.deepEqual(byDigest, ['digests.example', 'quay.io']);
  });

  it('refuses blocked registries with a typed error naming the entry', () => {
    const c = conf(`
      [[registry]]
      prefix = "evil.example"
      location = "evil.example"
      blocked = true
    `);
    for (const op of [() => c.pullEndpoints(parseReference('evil.example/x')), () => c.pushEndpoint(parseReference('evil.example/x'))]) {
      assert.throws(op, (err: unknown) => err instanceof BlockedRegistryError && err.code === 'REGISTRY_BLOCKED' && /evil\.example.*test\.conf/.test(err.message));
    }
  });

  it('rejects malformed files with the file name', () => {
    assert.throws(() => parseRegistriesConf('[[registry]]\nprefix = 3', 'x.conf'), (e: unknown) => e instanceof RegistryConfigError && /x\.conf/.test(e.message));
    assert.throws(() => parseRegistriesConf('this is not toml', 'y.conf'), /y\.conf: not valid TOML/);
    assert.throws(() => parseRegistriesConf('[[registry]]\nprefix="a*.b"\nlocation="x"', 'z.conf'), /"\*" is only allowed/);
    assert.throws(() => parseRegistriesConf('[registries.search]\nregistries=["a"]', 'v1.conf'), /v1/);
  });

  it('reads the main file and drop-ins in lexical order; later entries replace same-prefix ones', async () => {
    const main = join(dir, 'registries.conf');
    const d = join(dir, 'registries.conf.d');
    await mkdir(d);
    await writeFile(main, '[[registry]]\nprefix = "a.example"\nlocation = "main.example"\n');
    await writeFile(join(d, '20-b.conf'), '[[registry]]\nprefix = "a.example"\nlocation = "second.example"\n');
    await writeFile(join(d, '10-a.conf'), '[[registry]]\nprefix = "a.example"\nlocation = "first.example"\n');
    await writeFile(join(d, 'ignored.txt'), 'not toml at all [[[');
    const c = await loadRegistriesConf({ path: main, dropInDir: d });
    assert.equal(c.pullEndpoints(parseReference('a.example/x'))[0]!.apiHost, 'second.example');
    const none = await loadRegistriesConf({ path: join(dir, 'missing.conf'), dropInDir: join(dir, 'missing.d') });
    assert.equal(none.entries.length, 0);
  });
});
