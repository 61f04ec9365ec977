import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { requireTool } from './tools.js';

/** Everything a container can observe of one path, as a comparable line. */
async function describe(root: string, rel: string, xattrs: Map<string, string>): Promise<string> {
  const p = join(root, rel);
  const st = await lstat(p);
  const type = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : st.isCharacterDevice() ? 'char'
    : st.isBlockDevice() ? 'block' : st.isFIFO() ? 'fifo' : 'other';
  const parts = [rel || '/', type, (st.mode & 0o7777).toString(8), `${st.uid}:${st.gid}`, `mtime=${Math.floor(st.mtimeMs / 1000)}`];
  if (type !== 'dir') parts.push(`nlink=${st.nlink}`);
  if (type === 'file') {
    parts.push(`size=${st.size}`);
    const h = createHash('sha256');
    for await (const b of createReadStream(p)) h.update(b as Buffer);
    parts.push(h.digest('hex'));
  }
  if (type === 'symlink') parts.push(`-> ${await readlink(p)}`);
  if (type === 'char' || type === 'block') parts.push(`rdev=${st.rdev}`);
  const x = xattrs.get(p);
  if (x) parts.push(`xattrs{${x}}`);
  return parts.join(' ');
}

/** Extended attributes of every path under root (getfattr, not following symlinks), overlay's own excluded. */
async function allXattrs(root: string): Promise<Map<string, string>> {
  // getfattr exits non-zero when some entry (a fifo, a device) has no xattr support; its output is still right.
  // Its failures are ignored below, so a missing getfattr must not pass for "no xattrs anywhere".
  const getfattr = requireTool('getfattr');
  const out = await new Promise<string>((resolve) => {
    execFile(getfattr, ['-R', '-P', '-d', '-m', '-', '-e', 'base64', '--absolute-names', root], { maxBuffer: 64 << 20 }, (_e, stdout) => resolve(stdout));
  });
  const map = new Map<string, string>();
  for (const block of out.split('\n\n')) {
    const lines = block.split('\n').filter(Boolean);
    if (!lines[0]?.startsWith('# file: ')) continue;
    const attrs = lines.slice(1).filter((l) => !l.startsWith('trusted.overlay.') && !l.startsWith('security.selinux')).sort();
    if (attrs.length) map.set(lines[0].slice('# file: '.length), attrs.join(','));
  }
  return map;
}

/** A sorted description of a whole tree (type, mode, owner, mtime, nlink, size, content, link target, xattrs). */
export async function snapshotTree(root: string, skip: (rel: string) => boolean = () => false): Promise<string[]> {
  const xattrs = await allXattrs(root);
  const lines: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    lines.push(await describe(root, rel, xattrs));
    const st = await lstat(join(root, rel));
    if (!st.isDirectory()) return;
    for (const name of (await readdir(join(root, rel))).sort()) {
      const child = rel ? `${rel}/${name}` : name;
      if (!skip(child)) await walk(child);
    }
  };
  await walk('');
  return lines;
}
