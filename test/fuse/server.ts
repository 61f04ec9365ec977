// A FUSE server in its own process, for the integration tests and the benchmark: the process that serves a
// mount must never make blocking syscalls on it, so the checks run elsewhere. Driven over IPC:
//   argv[2] = JSON ServerConfig; sends {type:'ready'} once mounted, {type:'event'} for memfs events;
//   answers {cmd:'stats'} with {type:'stats'}; {cmd:'close'} unmounts, answers {type:'closed'} and exits.
// Spawn it with UV_THREADPOOL_SIZE in its environment (the pool size must be set before the pool starts).
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FuseSession, makedev, type FuseLogger, type SessionOptions } from '../../src/fuse/index.js';
import { MemFs } from './memfs.js';

export interface ServerConfig {
  mountPoint: string;
  tree: 'test' | 'bench';
  /** bench: number of entries in the listing tree, and size of the big file. */
  entries?: number;
  bigFileBytes?: number;
  session?: SessionOptions;
  xattrPolicy?: 'enodata' | 'eopnotsupp';
  /** Serve a minimal filesystem: READDIR only (no readdirplus), no open/opendir (NO_OPEN(DIR)_SUPPORT). */
  minimal?: boolean;
}

/** Deterministic pseudo-random bytes (xorshift32). */
export function prng(size: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i + 4 <= size; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b.writeUInt32LE(x >>> 0, i);
  }
  for (let i = size & ~3; i < size; i++) b[i] = i & 0xff;
  return b;
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

function buildTest(fs: MemFs): Record<string, string> {
  const hashes: Record<string, string> = {};
  fs.writeFile('/hello.txt', 'hello world\n');
  fs.writeFile('/secret', 'root only\n', undefined, 0o600);
  const data = prng(8 << 20, 42);
  fs.writeFile('/data.bin', data);
  hashes['data.bin'] = sha256(data);
  const pattern = prng(1 << 20, 7);
  fs.writeFile('/big.bin', { size: 64 << 20, pattern });
  fs.writeFile('/direct.bin', { size: 16 << 20, pattern }, { directIo: true });
  fs.symlink('/link', 'hello.txt');
  fs.writeFile('/hard1', 'same inode\n');
  fs.link('/hard1', '/hard2');
  fs.whiteout('/gone');
  fs.mknod('/null', constants.S_IFCHR | 0o666, makedev(1, 3));
  fs.mkdir('/dir');
  fs.writeFile('/dir/a.txt', 'a\n');
  fs.mkdir('/dir/sub');
  fs.writeFile('/dir/sub/b.txt', 'b\n');
  fs.mkdir('/opaque');
  fs.setxattr('/opaque', 'trusted.overlay.opaque', 'y');
  fs.writeFile('/opaque/x', 'x\n');
  fs.writeFile('/xattr.txt', 'has xattrs\n');
  fs.setxattr('/xattr.txt', 'user.a', '1');
  fs.setxattr('/xattr.txt', 'user.big', Buffer.alloc(300, 0x61));
  fs.writeFile('/slow.txt', 'slow\n', { delayMs: 2000 });
  fs.writeFile('/block.bin', Buffer.alloc(4096), { blockUntilAbort: true, directIo: true });
  fs.writeFile('/buggy.txt', 'never\n', { throwBug: true, directIo: true }); // direct: exactly one READ
  fs.mkdir('/many');
  for (let i = 0; i < 2000; i++) fs.writeFile(`/many/file-${String(i).padStart(5, '0')}-with-a-longish-name`, `${i}\n`);
  fs.mkdir('/par');
  for (let i = 0; i < 64; i++) {
    const b = prng(1 << 20, 1000 + i);
    fs.writeFile(`/par/f${i}`, b, { gather: 8 });
    hashes[`par/f${i}`] = sha256(b);
  }
  return hashes;
}

/** The benchmark tree: `entries` entries in directories of 1000, one big patterned file, 8 readers' files. */
export function buildBench(fs: MemFs, entries: number, bigFileBytes: number): void {
  fs.mkdir('/tree');
  let made = 1;
  for (let d = 0; made < entries; d++) {
    const dir = `/tree/d${d}`;
    fs.mkdir(dir);
    made++;
    for (let i = 0; i < 999 && made < entries; i++, made++) {
      if (i % 10 === 9) fs.symlink(`${dir}/l${i}`, `f${i - 1}`);
      else fs.writeFile(`${dir}/f${i}`, 'x');
    }
  }
  const pattern = prng(1 << 20, 99);
  fs.writeFile('/big.bin', { size: bigFileBytes, pattern });
  for (let i = 0; i < 8; i++) fs.writeFile(`/par${i}.bin`, { size: bigFileBytes / 8, pattern });
}

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2] ?? '{}') as ServerConfig;
  const send = (m: object): void => {
    if (process.connected) process.send!(m);
  };
  const memfs = new MemFs();
  let hashes: Record<string, string> = {};
  if (cfg.tree === 'bench') buildBench(memfs, cfg.entries ?? 50_000, cfg.bigFileBytes ?? 1 << 30);
  else hashes = buildTest(memfs);
  if (cfg.xattrPolicy) memfs.xattrPolicy = cfg.xattrPolicy;
  if (cfg.minimal) {
    const self = memfs as unknown as Record<string, unknown>;
    self.readdir = MemFs.prototype.readdirplus.bind(memfs);
    self.readdirplus = undefined;
    self.open = undefined;
    self.opendir = undefined;
  }
  memfs.onEvent = (e) => send({ type: 'event', event: e.type, path: e.path });
  const logged: string[] = [];
  const logger: FuseLogger = {
    error: (o, m) => {
      logged.push(m);
      send({ type: 'log', level: 'error', msg: m, err: String((o as { err?: unknown }).err ?? '') });
    },
    warn: (_o, m) => send({ type: 'log', level: 'warn', msg: m }),
    info: () => {},
  };
  const session = await FuseSession.mount(cfg.mountPoint, memfs, { logger, ...cfg.session });
  session.on('close', () => {
    send({ type: 'closed' });
    setTimeout(() => process.exit(0), 50);
  });
  process.on('message', (m: {
    cmd: string; xattrPolicy?: 'enodata' | 'eopnotsupp'; id?: number; file?: string; args?: string[];
    path?: string; content?: string; kind?: 'inode' | 'entry' | 'delete';
  }) => {
    if (m.cmd === 'mutate') {
      if (m.kind === 'inode') memfs.replaceContent(m.path!, m.content!);
      else memfs.relink(m.path!, m.content!);
      send({ type: 'mutated' });
    }
    if (m.cmd === 'notify') {
      const path = m.path!;
      const parentPath = path.slice(0, path.lastIndexOf('/')) || '/';
      const name = path.slice(path.lastIndexOf('/') + 1);
      const p = m.kind === 'inode'
        ? session.notifyInvalInode(memfs.inoOf(path))
        : session.notifyInvalEntry(memfs.inoOf(parentPath), name);
      p.then((ok) => send({ type: 'notified', ok }), (err: unknown) => send({ type: 'notified', ok: false, error: String(err) }));
    }
    if (m.cmd === 'exec') {
      // Run a check from inside this process's namespaces (rootless test), asynchronously: never a blocking
      // syscall on our own mount from this process.
      execFile(m.file!, m.args ?? [], { timeout: 30_000, encoding: 'utf8' }, (err, stdout, stderr) => {
        send({ type: 'exec-result', id: m.id, code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
      });
    }
    if (m.cmd === 'config') {
      if (m.xattrPolicy) memfs.xattrPolicy = m.xattrPolicy;
      send({ type: 'configured' });
    }
    if (m.cmd === 'stats') {
      send({
        type: 'stats', memfs: memfs.stats, session: session.stats, outstandingLookups: memfs.outstandingLookups(),
        errorsLogged: logged.length,
      });
    } else if (m.cmd === 'close') {
      void session.close();
    }
  });
  process.on('disconnect', () => void session.close());
  send({ type: 'ready', negotiated: session.negotiated, devMinor: session.devMinor, hashes, pid: process.pid });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main().catch((err: unknown) => {
  console.error(err);
  if (process.connected) process.send!({ type: 'error', message: String((err as Error)?.message ?? err) });
  process.exit(1);
});
