import type { Command } from 'commander';
import { join } from 'node:path';
import { callControl, loadConfig, type DaemonStatus } from '../daemon/index.js';
import { formatHintLine } from '../format/index.js';
import type { LayerReads } from '../store/index.js';
import { TocfsError } from '../util/index.js';
import { mib } from './progress.js';
import { readStdin } from './stdin.js';

/** Where the daemon's control socket is: $TOCFS_SOCKET, else <root>/tocfs.sock. */
export async function socketPath(opts: { root?: string; config?: string; socket?: string }): Promise<string> {
  if (opts.socket) return opts.socket;
  if (process.env.TOCFS_SOCKET) return process.env.TOCFS_SOCKET;
  const cfg = await loadConfig(opts.config);
  return join(opts.root ?? cfg.root, 'tocfs.sock');
}

function render(s: DaemonStatus): string {
  const lines = [`tocfs ${s.mountpoint} (pid ${s.pid}, since ${s.startedAt})`];
  const m = s.cache.memory;
  lines.push(`memory cache  ${mib(m.bytes)} of ${mib(m.maxBytes)}, ${m.hits} hits, ${m.misses} misses`);
  if (s.cache.disk) {
    const d = s.cache.disk;
    lines.push(`disk cache    ${mib(d.bytes)} of ${mib(d.maxBytes)} in ${d.chunks} chunks (${d.dir}), ${d.hits} hits, ${d.misses} misses, ${d.evictions} evicted`);
  }
  lines.push(`fuse          ${s.fuse.requests} requests (${s.fuse.errors} answered with an error, mostly ENOENT for names podman probes), ${s.fuse.inFlight} in flight`);
  if (s.passthrough) {
    const p = s.passthrough;
    lines.push(p.on
      ? `passthrough   on: ${p.opens} opens read by the kernel directly, ${p.active} backing files now; ${p.files} complete files (${mib(p.bytes)}) assembled (${p.assembled} by this run, ${p.reused} checked from before${p.running ? `, ${p.running} under way` : ''}${p.failed ? `, ${p.failed} failed` : ''})`
      : `passthrough   off: ${p.why}`);
  }
  if (s.workers) lines.push(`workers       ${s.workers.running} running, ${s.workers.tasks} tasks done off the FUSE thread${s.workers.crashes ? `, ${s.workers.crashes} lost to a dead worker` : ''}`);
  lines.push('');
  if (s.layers.length === 0) lines.push('no layers looked up yet');
  for (const l of s.layers) {
    lines.push(`${l.ref}  ${l.key} (${l.generation === 'toc' ? 'TOC digest, podman ≥ 5.1' : 'blob digest'})`);
    lines.push(`  zstd:chunked, TOC ${l.tocDigest}, ${l.entries} entries, ${mib(l.compressedSize)} compressed / ${mib(l.diffSize)} tar`);
    lines.push(`  local ${mib(l.localBytes)} of ${mib(l.contentBytes)} (${l.localPercent}%), fetched ${mib(l.fetchedBytes)}, served ${mib(l.servedBytes)}; background ${l.background}${l.hintedFiles ? ` (${l.hintedFiles} hinted files first)` : ''}; DiffID proof ${l.proof}; in use ${l.uses}`);
    if (l.verifyFailures) lines.push(`  ${l.verifyFailures} chunk verification failures`);
    if (l.quarantined) lines.push(`  ${l.quarantined}`);
  }
  if (s.registryErrors.length) {
    lines.push('', 'recent resolution errors:');
    for (const e of s.registryErrors.slice(-10)) lines.push(`  ${e.time} ${e.code}: ${e.message}`);
  }
  return lines.join('\n') + '\n';
}

export function registerStatus(program: Command): void {
  program
    .command('status')
    .description('what the running daemon serves: layers, bytes fetched and local, background and proof state, caches, errors')
    .option('--root <dir>', 'state directory of the daemon (default /var/lib/tocfs)')
    .option('--config <file>', 'config file (default /etc/tocfs/config.toml, if present)')
    .option('--socket <path>', 'control socket (default <root>/tocfs.sock, or $TOCFS_SOCKET)')
    .option('--json', 'print the status as JSON')
    .action(async (opts: { root?: string; config?: string; socket?: string; json?: boolean }) => {
      const r = await callControl(await socketPath(opts), 'GET', '/status');
      if (r.status !== 200) throw new TocfsError('DAEMON_ERROR', `the daemon answered ${r.status}: ${r.body}`);
      process.stdout.write(opts.json ? JSON.stringify(JSON.parse(r.body), null, 2) + '\n' : render(JSON.parse(r.body) as DaemonStatus));
    });
}

export function registerAuthHelper(program: Command): void {
  program
    .command('auth-helper')
    .description("podman's additional-layer-store-auth-helper: forwards the credentials podman writes on stdin to the daemon")
    .option('--socket <path>', 'control socket (default $TOCFS_SOCKET, else /var/lib/tocfs/tocfs.sock)')
    .option('--root <dir>', 'state directory of the daemon')
    .action(async (opts: { socket?: string; root?: string }) => {
      const r = await callControl(await socketPath(opts), 'POST', '/credentials', await readStdin());
      if (r.status !== 200) throw new TocfsError('DAEMON_ERROR', `the daemon refused the credentials (${r.status}): ${r.body}`);
    });
}

export function registerReads(program: Command): void {
  program
    .command('reads')
    .description('the files containers read first from the layers the daemon serves, in that order, with " @start-end,…" '
      + 'after files read only in part (the byte ranges read); feed them to `tocfs hint` or `tocfs convert --prefetch` so every node fetches them first')
    .argument('[ref]', 'only the layers looked up for this image reference (as podman names it, e.g. registry.example/app:1)')
    .option('--root <dir>', 'state directory of the daemon (default /var/lib/tocfs)')
    .option('--config <file>', 'config file (default /etc/tocfs/config.toml, if present)')
    .option('--socket <path>', 'control socket (default <root>/tocfs.sock, or $TOCFS_SOCKET)')
    .option('--json', 'print the reads per layer as JSON')
    .action(async (ref: string | undefined, opts: { root?: string; config?: string; socket?: string; json?: boolean }) => {
      const r = await callControl(await socketPath(opts), 'GET', '/reads');
      if (r.status !== 200) throw new TocfsError('DAEMON_ERROR', `the daemon answered ${r.status}: ${r.body}`);
      const all = JSON.parse(r.body) as LayerReads[];
      const layers = ref === undefined ? all : all.filter((l) => l.ref === ref);
      if (ref !== undefined && layers.length === 0) {
        const known = [...new Set(all.map((l) => l.ref))];
        throw new TocfsError('NO_SUCH_IMAGE', `the daemon has served no layer of ${ref}${known.length ? `; it knows ${known.join(', ')}` : ''}`);
      }
      if (opts.json) {
        process.stdout.write(JSON.stringify(layers, null, 2) + '\n');
        return;
      }
      const seen = new Set<string>();
      for (const l of layers) {
        for (const p of l.paths) {
          if (seen.has(p)) continue;
          seen.add(p);
          process.stdout.write(`${formatHintLine(p, l.ranges?.[p])}\n`);
        }
      }
    });
}
