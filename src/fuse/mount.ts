// Mounting and unmounting through mount(8)/umount(8), finding our connection in /proc/self/mountinfo, and
// clearing a stale mount left by a daemon that died. Nothing here touches a live mountpoint of ours
// synchronously: a process serving FUSE must never block on its own mount.
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Run a command without a shell; `extraFd` is passed to the child as its fd 3. Never rejects on exit status. */
export function run(cmd: string, args: string[], extraFd?: number, timeoutMs = 30_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const stdio: Array<'ignore' | 'pipe' | number> = ['ignore', 'pipe', 'pipe'];
    if (extraFd !== undefined) stdio.push(extraFd);
    const child = spawn(cmd, args, { stdio });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Undo mountinfo's octal escapes (\040 for space, ...). */
function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export interface MountInfo {
  major: number;
  minor: number;
  mountPoint: string;
  fsType: string;
  source: string;
}

/** Mounts at `mountPoint` (last one = top of the stack), from /proc/self/mountinfo. */
export async function findMounts(mountPoint: string): Promise<MountInfo[]> {
  const text = await fsp.readFile('/proc/self/mountinfo', 'utf8');
  const out: MountInfo[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    if (unescapeMountPath(left[4] ?? '') !== mountPoint) continue;
    const [maj, min] = (left[2] ?? '0:0').split(':').map(Number);
    out.push({ major: maj ?? 0, minor: min ?? 0, mountPoint, fsType: right[0] ?? '', source: unescapeMountPath(right[1] ?? '') });
  }
  return out;
}

/**
 * A FUSE daemon that died leaves its mount behind: every access fails with ENOTCONN. Detach it (lazily, so it
 * cannot hang) and report whether anything was cleared. Repeats while stale mounts are stacked.
 */
export async function clearStaleMount(mountPoint: string): Promise<number> {
  let cleared = 0;
  for (let i = 0; i < 8; i++) {
    try {
      await fsp.stat(mountPoint);
      return cleared;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOTCONN') return cleared;
    }
    const r = await run('umount', ['-i', '-l', mountPoint]);
    if (r.code !== 0) throw new Error(`stale FUSE mount on ${mountPoint} could not be detached: ${r.stderr.trim()}`);
    cleared++;
  }
  return cleared;
}

/** Abort a FUSE connection through fusectl: every pending and future request fails, the daemon's reads ENODEV. */
export async function abortConnection(minor: number): Promise<boolean> {
  const dir = '/sys/fs/fuse/connections';
  try {
    await fsp.access(`${dir}/${minor}`);
  } catch {
    // fusectl is not mounted here (it usually is not in containers): mount it, root only.
    await run('mount', ['-t', 'fusectl', 'fusectl', dir]).catch(() => undefined);
  }
  try {
    await fsp.writeFile(`${dir}/${minor}/abort`, '1');
    return true;
  } catch {
    return false;
  }
}

/**
 * Detach a mount of ours for good: lazily (a busy mount cannot hang us), then abort its connection, so that what
 * still waits on it fails instead of hanging. For a process that keeps a connection's fd but does not serve it.
 */
export async function detachMount(mountPoint: string, minor: number | undefined): Promise<void> {
  const r = await run('umount', ['-i', '-l', mountPoint]);
  if (r.code !== 0 && !/not mounted|no mount point/i.test(r.stderr)) throw new Error(`umount of ${mountPoint} failed: ${r.stderr.trim()}`);
  if (minor !== undefined) await abortConnection(minor);
}
