// Integration tests of src/fuse: a MemFs served by test/fuse/server.js in a child process, checked with real
// syscalls and tools run as further child processes. Needs root and /dev/fuse (as CI has).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { InitFlag } from '../../src/fuse/index.js';
import { cleanupDir, hasFuse, mountsUnder, ok, sh, startServer, tempDir, type Msg, type TestServer } from './harness.js';

const PY_XATTR = `
import ctypes, os, sys, json
libc = ctypes.CDLL(None, use_errno=True)
p = sys.argv[1].encode()
out = {}
out['probe'] = libc.getxattr(p, b'user.big', None, 0)
buf = ctypes.create_string_buffer(10)
r = libc.getxattr(p, b'user.big', buf, 10)
out['small'] = [r, os.strerror(ctypes.get_errno())]
out['listprobe'] = libc.listxattr(p, None, 0)
r = libc.listxattr(p, buf, 3)
out['listsmall'] = [r, os.strerror(ctypes.get_errno())]
out['list'] = sorted(os.listxattr(sys.argv[1]))
out['big'] = len(os.getxattr(sys.argv[1], 'user.big'))
try:
    os.getxattr(sys.argv[1], 'user.none')
except OSError as e:
    out['missing'] = e.strerror
print(json.dumps(out))
`;

// d_type straight from getdents64 (os.scandir would hide DT_UNKNOWN behind a stat).
const PY_DTYPES = `
import ctypes, os, sys, json, struct
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
buf = ctypes.create_string_buffer(65536)
names = {1: 'fifo', 2: 'chr', 4: 'dir', 6: 'blk', 8: 'reg', 10: 'lnk', 12: 'sock', 0: 'unknown'}
out = {}
while True:
    n = libc.syscall(217, fd, buf, 65536)
    if n <= 0:
        break
    raw = buf.raw[:n]
    pos = 0
    while pos < n:
        ino, off, reclen, typ = struct.unpack_from('<QqHB', raw, pos)
        name = raw[pos + 19:pos + reclen].split(b'\\0', 1)[0].decode()
        out[name] = names.get(typ, str(typ))
        pos += reclen
print(json.dumps(out))
`;

for (const transport of ['epoll', 'pool'] as const) describe(`fuse: kernel protocol layer (integration, ${transport} transport)`, function () {
  this.timeout(120_000);
  let dir: string;
  let mnt: string;
  let srv: TestServer;

  before(async function () {
    // No skip: a machine without /dev/fuse must fail this suite, not pass it silently.
    assert.ok(hasFuse(), '/dev/fuse is missing: the FUSE suite needs it (CI runs as root with FUSE)');
    dir = tempDir('tocfs-fuse-');
    chmodSync(dir, 0o755); // other users must reach the mount (permission test)
    mnt = join(dir, 'mnt');
    mkdirSync(mnt);
    // The pool run also covers mounting without default_permissions (ACCESS requests reach the filesystem).
    srv = await startServer({ mountPoint: mnt, tree: 'test', session: { transport, defaultPermissions: transport === 'epoll' } });
  });

  after(async function () {
    if (!dir) return;
    await srv?.close();
    await cleanupDir(dir);
    assert.deepEqual(mountsUnder(dir), []);
  });

  it('mounts and negotiates the protocol', () => {
    const n = srv.ready.negotiated as { minor: number; flags: number; maxPages: number; maxWrite: number; transport: string };
    assert.equal(n.transport, transport);
    assert.ok(n.minor >= 31, `minor ${n.minor}`);
    for (const f of ['ASYNC_READ', 'PARALLEL_DIROPS', 'DO_READDIRPLUS', 'READDIRPLUS_AUTO', 'MAX_PAGES', 'CACHE_SYMLINKS'] as const) {
      assert.ok(n.flags & InitFlag[f], `${f} negotiated`);
    }
    assert.equal(n.maxPages, 256);
    assert.equal(n.maxWrite, transport === 'pool' ? 1 << 20 : 60 << 10);
    assert.deepEqual(mountsUnder(mnt), [mnt]);
  });

  it('serves names, types, sizes, symlinks, devices and hardlinks to ls, stat and readlink', async () => {
    const ls = await ok('ls', ['-l', mnt]);
    assert.match(ls, /^-rw-r--r-- 1 root root\s+12 .* hello\.txt$/m);
    assert.match(ls, /^lrwxrwxrwx 1 root root\s+9 .* link -> hello\.txt$/m);
    assert.match(ls, /^c--------- 1 root root\s+0, 0 .* gone$/m);
    assert.match(ls, /^crw-rw-rw- 1 root root\s+1, 3 .* null$/m);
    assert.match(ls, /^-rw-r--r-- 2 root root\s+11 .* hard1$/m);
    assert.match(ls, /^drwxr-xr-x 3 root root\s+4096 .* dir$/m);
    const st = await ok('stat', ['-c', '%n|%F|%h|%i|%t:%T|%s', join(mnt, 'hard1'), join(mnt, 'hard2'), join(mnt, 'gone'), join(mnt, 'dir')]);
    const rows = st.trim().split('\n').map((l) => l.split('|'));
    assert.equal(rows[0]![2], '2');
    assert.equal(rows[0]![3], rows[1]![3], 'hardlinks share an inode');
    assert.equal(rows[2]![1], 'character special file');
    assert.equal(rows[2]![4], '0:0');
    assert.equal(rows[3]![1], 'directory');
    assert.equal((await ok('readlink', [join(mnt, 'link')])).trim(), 'hello.txt');
    assert.equal(await ok('cat', [join(mnt, 'link')]), 'hello world\n');
    assert.equal(await ok('cat', [join(mnt, 'dir/sub/b.txt')]), 'b\n');
    const missing = await sh('stat', [join(mnt, 'nope')]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /No such file or directory/);
  });

  it('gives file types in readdir (DT_CHR for the whiteout) and pages long directories by offset', async () => {
    const types = JSON.parse(await ok('python3', ['-c', PY_DTYPES, mnt])) as Record<string, string>;
    assert.equal(types.gone, 'chr');
    assert.equal(types.null, 'chr');
    assert.equal(types['hello.txt'], 'reg');
    assert.equal(types.link, 'lnk');
    assert.equal(types.dir, 'dir');
    assert.equal(types['.'], 'dir');
    const many = (await ok('ls', ['-f', join(mnt, 'many')])).trim().split('\n');
    assert.equal(many.length, 2002, 'all 2000 entries plus . and .., each exactly once');
    assert.equal(new Set(many).size, 2002);
    const lsl = (await ok('ls', ['-l', join(mnt, 'many')])).trim().split('\n');
    assert.equal(lsl.length, 2001);
  });

  it('answers xattrs: values, lists, size probes and ERANGE', async () => {
    const g = await ok('getfattr', ['-d', '-m', '-', join(mnt, 'xattr.txt')]);
    assert.match(g, /user\.a="1"/);
    assert.match(g, /user\.big="a{300}"/);
    assert.equal(await ok('getfattr', ['-n', 'user.a', '--only-values', join(mnt, 'xattr.txt')]), '1');
    const none = await sh('getfattr', ['-n', 'user.none', join(mnt, 'xattr.txt')]);
    assert.match(none.stderr, /No such attribute/);
    const r = JSON.parse(await ok('python3', ['-c', PY_XATTR, join(mnt, 'xattr.txt')])) as Record<string, unknown>;
    assert.equal(r.probe, 300);
    assert.deepEqual(r.small, [-1, 'Numerical result out of range']);
    assert.equal(r.listprobe, 'user.a\0user.big\0'.length);
    assert.deepEqual(r.listsmall, [-1, 'Numerical result out of range']);
    assert.deepEqual(r.list, ['user.a', 'user.big']);
    assert.equal(r.big, 300);
    assert.equal(r.missing, 'No data available');
    assert.match(await ok('getfattr', ['-n', 'trusted.overlay.opaque', '--only-values', join(mnt, 'opaque')]), /^y$/);
  });

  it('create and rmdir reach the filesystem and answer ENOENT; access answers 0', async () => {
    const from = srv.messages.length;
    const c = await sh('python3', ['-c', 'import sys; open(sys.argv[1], "w")', join(mnt, 'use')]);
    assert.match(c.stderr, /FileNotFoundError/);
    await srv.waitFor((m) => m.event === 'create' && m.path === '//use', 5000, from);
    const d = await sh('python3', ['-c', 'import os, sys; os.rmdir(sys.argv[1])', join(mnt, 'dir')]);
    assert.match(d.stderr, /FileNotFoundError/);
    await srv.waitFor((m) => m.event === 'rmdir' && m.path === '//dir', 5000, from);
    const a = await ok('python3', ['-c', 'import os, sys; print(os.access(sys.argv[1], os.R_OK | os.W_OK))', join(mnt, 'hello.txt')]);
    assert.equal(a.trim(), 'True');
    // With default_permissions the kernel answers access(2) itself from the mode bits; without, ACCESS reaches us.
    if (transport === 'pool') await srv.waitFor((m) => m.event === 'access', 5000, from);
    const df = await ok('stat', ['-f', '-c', '%S %b %l', mnt]);
    assert.equal(df.trim(), '4096 1000 255');
    // Not implemented: ENOSYS.
    assert.match((await sh('mkdir', [join(mnt, 'newdir')])).stderr, /Function not implemented/);
    assert.match((await sh('ln', ['-s', 'x', join(mnt, 'newlink')])).stderr, /Function not implemented/);
  });

  // Only the epoll run mounts with default_permissions (the pool run turns it off on purpose).
  if (transport === 'epoll') it('enforces mode bits for other users with default_permissions (the default)', async function () {
    const asNobody = (args: string[]): Promise<{ code: number; stderr: string; stdout: string }> =>
      sh('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', ...args]);
    const denied = await asNobody(['cat', join(mnt, 'secret')]);
    assert.match(denied.stderr, /Permission denied/);
    assert.equal((await asNobody(['cat', join(mnt, 'hello.txt')])).stdout, 'hello world\n');
    assert.equal(await ok('cat', [join(mnt, 'secret')]), 'root only\n');
  });

  it('streams data: sha256 of a file, partial reads, and 1 MiB READ requests', async () => {
    const hashes = srv.ready.hashes as Record<string, string>;
    const sum = (await ok('sha256sum', [join(mnt, 'data.bin')])).split(' ')[0];
    assert.equal(sum, hashes['data.bin']);
    const part = await ok('sh', ['-c', `dd if="$1" bs=4096 skip=1000 count=3 status=none | sha256sum`, 'sh', join(mnt, 'data.bin')]);
    const expect = await ok('sh', ['-c', `python3 -c "
import sys, hashlib
sys.stdout.write(hashlib.sha256(open(sys.argv[1],'rb').read()[4096*1000:4096*1003]).hexdigest())" "$1"`, 'sh', join(mnt, 'data.bin')]);
    assert.equal(part.split(' ')[0], expect);
    await ok('dd', [`if=${join(mnt, 'direct.bin')}`, 'of=/dev/null', 'bs=1M', 'status=none']);
    const st = (await srv.stats()).memfs as { maxReadSize: number };
    assert.equal(st.maxReadSize, 1 << 20, 'the kernel sent 1 MiB READs');
    await ok('dd', [`if=${join(mnt, 'big.bin')}`, 'of=/dev/null', 'bs=4M', 'status=none']);
  });

  it('serves 64 concurrent readers, replies out of order', async () => {
    const hashes = srv.ready.hashes as Record<string, string>;
    const files = Array.from({ length: 64 }, (_, i) => `par/f${i}`);
    const sums = await Promise.all(files.map((f) => ok('sha256sum', [join(mnt, f)])));
    sums.forEach((s, i) => assert.equal(s.split(' ')[0], hashes[files[i]!], files[i]));
    const st = (await srv.stats()).memfs as { maxConcurrentReads: number };
    assert.ok(st.maxConcurrentReads >= 8, `max concurrent reads ${st.maxConcurrentReads}`);
  });

  it('a slow operation (2 s) does not hold up others', async () => {
    const t0 = Date.now();
    let slowDone = false;
    const slow = ok('cat', [join(mnt, 'slow.txt')]).then((out) => ((slowDone = true), out));
    await srv.waitFor((m) => m.event === 'read-start' && m.path === '/slow.txt', 5000, srv.messages.length - 1);
    const t1 = Date.now();
    assert.equal(await ok('cat', [join(mnt, 'hello.txt')]), 'hello world\n');
    await ok('ls', ['-lR', join(mnt, 'dir')]);
    await ok('stat', [join(mnt, 'par/f1'), join(mnt, 'many')]);
    assert.ok(!slowDone, 'the others finished while the slow read was still pending');
    assert.ok(Date.now() - t1 < 1500, `others took ${Date.now() - t1} ms`);
    assert.equal(await slow, 'slow\n');
    assert.ok(Date.now() - t0 >= 1900);
  });

  it('an INTERRUPT (reader killed) aborts the operation signal', async () => {
    const from = srv.messages.length;
    const dd = spawn('dd', [`if=${join(mnt, 'block.bin')}`, 'of=/dev/null', 'bs=4096', 'count=1'], { stdio: 'ignore' });
    const exited = new Promise<void>((r) => dd.on('exit', () => r()));
    await srv.waitFor((m) => m.event === 'read-start' && m.path === '/block.bin', 10_000, from);
    dd.kill('SIGKILL');
    await srv.waitFor((m) => m.event === 'aborted' && m.path === '/block.bin', 10_000, from);
    await exited;
    const st = (await srv.stats()).session as { interrupts: number };
    assert.ok(st.interrupts >= 1);
  });

  it('answers EIO for a bug in an operation, logs it, and keeps serving', async () => {
    const before = (await srv.stats()).errorsLogged as number;
    const r = await sh('cat', [join(mnt, 'buggy.txt')]);
    assert.match(r.stderr, /Input\/output error/);
    assert.equal(await ok('cat', [join(mnt, 'hello.txt')]), 'hello world\n');
    const after = (await srv.stats()).errorsLogged as number;
    assert.equal(after - before, 1, 'logged exactly once');
  });

  it('counts READDIRPLUS entries as lookups, which the kernel gives back with FORGET', async () => {
    await ok('ls', ['-lR', mnt]);
    const mid = (await srv.stats()).outstandingLookups as number;
    assert.ok(mid >= 2000, `outstanding lookups after ls -lR: ${mid}`);
    await ok('sh', ['-c', 'echo 2 > /proc/sys/vm/drop_caches']);
    let left = mid;
    for (let i = 0; i < 50 && left > 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      left = (await srv.stats()).outstandingLookups as number;
    }
    assert.equal(left, 0, 'every lookup was forgotten');
  });

  it('notifications drop cached data and names (KEEP_CACHE and long TTLs otherwise hide changes)', async () => {
    const req = async (cmd: object, reply: string): Promise<Msg> => {
      const n = srv.messages.length;
      srv.child.send(cmd);
      return srv.waitFor((m) => m.type === reply, 10_000, n);
    };
    const file = join(mnt, 'dir/a.txt');
    assert.equal(await ok('cat', [file]), 'a\n');
    const ino1 = (await ok('stat', ['-c', '%i', file])).trim();
    // Same size, new bytes, same inode: the page cache (KEEP_CACHE) still serves the old ones...
    await req({ cmd: 'mutate', kind: 'inode', path: '/dir/a.txt', content: 'A\n' }, 'mutated');
    assert.equal(await ok('cat', [file]), 'a\n');
    // ...until the inode is invalidated.
    assert.equal((await req({ cmd: 'notify', kind: 'inode', path: '/dir/a.txt' }, 'notified')).ok, true);
    assert.equal(await ok('cat', [file]), 'A\n');
    // A new inode under the same name: the cached entry (TTL 60 s) still points to the old one...
    await req({ cmd: 'mutate', kind: 'entry', path: '/dir/a.txt', content: 'new inode\n' }, 'mutated');
    assert.equal((await ok('stat', ['-c', '%i', file])).trim(), ino1);
    // ...until the name is invalidated.
    assert.equal((await req({ cmd: 'notify', kind: 'entry', path: '/dir/a.txt' }, 'notified')).ok, true);
    assert.notEqual((await ok('stat', ['-c', '%i', file])).trim(), ino1);
    assert.equal(await ok('cat', [file]), 'new inode\n');
  });

  it('works as an overlayfs lower layer: whiteouts and opaque directories hide lower entries', async () => {
    const lower = join(dir, 'lower');
    const merged = join(dir, 'merged');
    mkdirSync(join(lower, 'opaque'), { recursive: true });
    mkdirSync(merged);
    writeFileSync(join(lower, 'gone'), 'must be hidden\n');
    writeFileSync(join(lower, 'lower-only.txt'), 'from below\n');
    writeFileSync(join(lower, 'opaque', 'below'), 'hidden by opaque\n');
    await ok('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${mnt}:${lower}`, merged]);
    try {
      const names = (await ok('ls', ['-A', merged])).trim().split('\n');
      assert.ok(names.includes('hello.txt'));
      assert.ok(names.includes('lower-only.txt'));
      assert.ok(!names.includes('gone'), 'the whiteout hides the lower file');
      assert.equal((await sh('stat', [join(merged, 'gone')])).code, 1);
      assert.deepEqual((await ok('ls', ['-A', join(merged, 'opaque')])).trim().split('\n'), ['x']);
      assert.equal(await ok('cat', [join(merged, 'hello.txt')]), 'hello world\n');
      assert.equal(await ok('cat', [join(merged, 'lower-only.txt')]), 'from below\n');
    } finally {
      await ok('umount', [merged]);
    }
  });
});

describe('fuse: session lifecycle (integration)', function () {
  this.timeout(120_000);
  let dir: string;
  const servers: TestServer[] = [];
  const start = async (mnt: string): Promise<TestServer> => {
    const s = await startServer({ mountPoint: mnt, tree: 'test' });
    servers.push(s);
    return s;
  };

  before(function () {
    assert.ok(hasFuse(), '/dev/fuse is missing: the FUSE suite needs it (CI runs as root with FUSE)');
    dir = tempDir('tocfs-fuse-life-');
  });

  afterEach(async () => {
    for (const s of servers.splice(0)) {
      s.child.kill('SIGKILL');
      await s.exited;
    }
    if (dir) {
      for (const m of mountsUnder(dir).sort((a, b) => b.length - a.length)) await sh('umount', ['-l', m]);
    }
  });

  after(async () => {
    if (dir) await cleanupDir(dir);
  });

  it('unmounts cleanly on SIGTERM', async () => {
    const mnt = join(dir, 'term');
    mkdirSync(mnt);
    const s = await start(mnt);
    assert.deepEqual(mountsUnder(mnt), [mnt]);
    s.child.kill('SIGTERM');
    assert.equal(await s.exited, 0);
    assert.deepEqual(mountsUnder(mnt), []);
  });

  it('unmounts while busy: lazily, aborting pending operations', async () => {
    const mnt = join(dir, 'busy');
    mkdirSync(mnt);
    const s = await start(mnt);
    const sleeper = spawn('sleep', ['60'], { cwd: mnt, stdio: 'ignore' });
    const from = s.messages.length;
    const reader = spawn('dd', [`if=${join(mnt, 'block.bin')}`, 'of=/dev/null', 'bs=4096', 'count=1'], { stdio: 'ignore' });
    const readerExit = new Promise<number | null>((r) => reader.on('exit', (c) => r(c)));
    try {
      await s.waitFor((m) => m.event === 'read-start', 10_000, from);
      const t0 = Date.now();
      await s.close();
      assert.ok(Date.now() - t0 < 10_000);
      assert.deepEqual(mountsUnder(mnt), []);
      assert.ok(s.messages.some((m: Msg) => m.event === 'aborted'), 'the blocked read saw its signal');
      assert.notEqual(await readerExit, 0, 'the blocked reader got an error');
    } finally {
      sleeper.kill('SIGKILL');
      reader.kill('SIGKILL');
    }
  });

  it('serves a minimal filesystem: plain READDIR, no open/opendir round trips', async () => {
    const mnt = join(dir, 'minimal');
    mkdirSync(mnt);
    const s = await startServer({ mountPoint: mnt, tree: 'test', minimal: true });
    servers.push(s);
    const flags = (s.ready.negotiated as { flags: number }).flags;
    assert.equal(flags & InitFlag.DO_READDIRPLUS, 0);
    assert.ok(flags & InitFlag.NO_OPEN_SUPPORT);
    assert.ok(flags & InitFlag.NO_OPENDIR_SUPPORT);
    assert.match(await ok('ls', ['-l', mnt]), /hello\.txt/);
    assert.equal((await ok('ls', ['-f', join(mnt, 'many')])).trim().split('\n').length, 2002);
    assert.equal(await ok('cat', [join(mnt, 'hello.txt')]), 'hello world\n');
    assert.equal(await ok('cat', [join(mnt, 'dir/sub/b.txt')]), 'b\n');
    const byOp = ((await s.stats()).session as { byOp: Record<string, number> }).byOp;
    assert.ok(!byOp.READDIRPLUS && byOp.READDIR, JSON.stringify(byOp));
    assert.ok((byOp.OPEN ?? 0) <= 1 && (byOp.OPENDIR ?? 0) <= 1, 'ENOSYS once, then the kernel stops asking');
    await s.close();
    assert.deepEqual(mountsUnder(mnt), []);
  });

  it('mounts inside a user namespace (rootless: unshare -Urm, as podman unshare)', async function () {
    assert.equal((await sh('unshare', ['-Urm', 'true'])).code, 0, 'user namespaces are unavailable: the rootless case cannot be tested here');
    const mnt = join(dir, 'userns');
    mkdirSync(mnt);
    const s = await startServer({ mountPoint: mnt, tree: 'test' }, {}, ['unshare', '-Urm', '--propagation', 'private']);
    servers.push(s);
    assert.deepEqual(mountsUnder(mnt), [], 'the mount lives in the private mount namespace only');
    const inside = await s.exec('cat', [join(mnt, 'hello.txt')]);
    assert.equal(inside.stdout, 'hello world\n');
    const ls = await s.exec('ls', ['-l', mnt]);
    assert.match(ls.stdout, /link -> hello\.txt/);
    await s.close();
  });

  it('recovers the mountpoint from a daemon killed with SIGKILL', async () => {
    const mnt = join(dir, 'stale');
    mkdirSync(mnt);
    const a = await start(mnt);
    a.child.kill('SIGKILL');
    await a.exited;
    const st = await sh('stat', [mnt]);
    assert.match(st.stderr, /Transport endpoint is not connected/);
    const b = await start(mnt);
    assert.equal(await ok('cat', [join(mnt, 'hello.txt')]), 'hello world\n');
    assert.deepEqual(mountsUnder(mnt), [mnt], 'exactly one mount left');
    await b.close();
    assert.deepEqual(mountsUnder(mnt), []);
  });
});
