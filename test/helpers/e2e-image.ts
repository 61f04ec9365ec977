import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import type { TreeItem } from './image-builder.js';
import { requireFile } from './tools.js';

// The two-layer image of the end-to-end suites (podman 4.3.1 and 5.4): every entry type overlay must get right.

export const BUSYBOX_TOOLS = ['sh', 'cat', 'sha256sum', 'find', 'ls', 'xargs', 'sort', 'echo', 'head', 'wc'];

/** The base layer: busybox, plain files, a big multi-chunk file with a hole, and things layer 2 will hide. */
export function baseLayer(): TreeItem[] {
  return [
    { path: 'bin/busybox', type: 'file', data: readFileSync(requireFile('/bin/busybox', 'busybox-static')), mode: 0o755 },
    ...BUSYBOX_TOOLS.map((t): TreeItem => ({ path: `bin/${t}`, type: 'symlink', target: 'busybox' })),
    { path: 'etc/passwd', type: 'file', data: 'root:x:0:0:root:/root:/bin/sh\n' },
    { path: 'data/keep.txt', type: 'file', data: 'kept from layer 1\n' },
    { path: 'data/gone.txt', type: 'file', data: 'whited out by layer 2\n' },
    { path: 'data/old/a.txt', type: 'file', data: 'hidden by the opaque dir\n' },
    { path: 'data/old/sub/b.txt', type: 'file', data: 'also hidden\n' },
    { path: 'data/big.bin', type: 'file', data: Buffer.concat([randomBytes(3 << 20), Buffer.alloc(200_000), randomBytes(2 << 20)]) },
    { path: 'data/owned', type: 'file', data: 'uid 1000\n', uid: 1000, gid: 1000, mode: 0o640 },
  ];
}

/** Layer 2: whiteout, opaque dir, hardlinks, symlinks, xattrs, devices, setuid. */
export function topLayer(): TreeItem[] {
  return [
    { path: 'data/gone.txt', type: 'whiteout' },
    { path: 'data/old', type: 'dir' },
    { path: 'data/old', type: 'opaque' },
    { path: 'data/old/new.txt', type: 'file', data: 'only this survives in data/old\n' },
    { path: 'data/h1', type: 'file', data: randomBytes(70_000) },
    { path: 'data/h2', type: 'hardlink', target: 'data/h1' },
    { path: 'data/rel-link', type: 'symlink', target: 'keep.txt' },
    { path: 'data/abs-link', type: 'symlink', target: '/data/keep.txt' },
    { path: 'data/x.txt', type: 'file', data: 'has xattrs\n', xattrs: { 'user.comment': 'hello', 'user.bin': '0x00ff10' } },
    { path: 'data/suid', type: 'file', data: 'setuid\n', mode: 0o4755 },
    { path: 'data/dev/null', type: 'char', major: 1, minor: 3, mode: 0o666 },
    { path: 'data/dev/loop9', type: 'block', major: 7, minor: 9, mode: 0o660 },
    { path: 'data/dev/fifo', type: 'fifo' },
    { path: 'data/empty', type: 'file', data: '' },
  ];
}


/** What a container must see of baseLayer + topLayer (lines of snapshotTree): the overlay effects of layer 2. */
export function assertLayerEffects(tree: readonly string[]): void {
  assert.ok(tree.some((l) => l.startsWith('data/dev/null char')), 'device present');
  assert.ok(!tree.some((l) => l.startsWith('data/gone.txt')), 'whiteout applied');
  assert.ok(!tree.some((l) => l.startsWith('data/old/a.txt')), 'opaque dir applied');
  assert.ok(tree.some((l) => l.startsWith('data/x.txt') && l.includes('user.comment')), 'xattrs served');
}

/** The container command that hashes every file of the image (the run comparison of the e2e suites). */
export const HASH_ALL_FILES = ['sh', '-c', 'find /data /bin /etc/passwd -type f | sort | xargs sha256sum'];
