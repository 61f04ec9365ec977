import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import {
  convertImage, ociDestination, ociSource, parseImageLocation, registryDestination, registrySource, tarSource,
  ConvertError, type ImageDestination, type ImageLocation, type ImageSource,
} from '../convert/index.js';
import { parseHintLine, type PrefetchHintList } from '../format/index.js';
import type { RegistryClient } from '../registry/index.js';
import { mib, ProgressLine } from './progress.js';
import { registryClientFor, type RegistryFlags } from './registry-flags.js';
import { readStdin } from './stdin.js';

function sourceFor(loc: ImageLocation, client: () => RegistryClient): ImageSource {
  switch (loc.transport) {
    case 'oci': return ociSource(loc.dir, loc.tag);
    case 'tar': return tarSource(loc.path);
    case 'docker': return registrySource(client(), loc.ref);
  }
}

async function destinationFor(loc: ImageLocation, client: () => RegistryClient): Promise<ImageDestination> {
  switch (loc.transport) {
    case 'oci': return ociDestination(loc.dir, loc.tag);
    case 'tar': throw new ConvertError('BAD_LOCATION', `"${loc.path}": the destination must be oci:<dir>[:<tag>] or docker://<ref>`);
    case 'docker': return registryDestination(client(), loc.ref);
  }
}

export function registerConvert(program: Command): void {
  program
    .command('convert')
    .description('convert an image (or a layer tar) to zstd:chunked; DiffIDs and the config stay the same')
    .argument('<src>', 'a layer tar file, oci:<dir>[:<tag>], or docker://<ref>')
    .argument('<dst>', 'oci:<dir>[:<tag>] or docker://<ref>')
    .option('--registries-conf <file>', 'registries.conf to use instead of the system one')
    .option('--insecure', 'talk plain HTTP (or unverified TLS) to the registries named in <src> and <dst>')
    .option('--level <n>', 'zstd compression level (1-19)', (v) => Number(v), 3)
    .option('--prefetch <file>', 'paths a container reads first, one per line (e.g. from `tocfs reads <ref>`); '
      + 'tocfs fetches them first when it serves the image ("-" reads standard input)')
    .option('--json', 'print the result as JSON')
    .action(async (src: string, dst: string, opts: { level: number; json?: boolean; prefetch?: string } & RegistryFlags) => {
      if (!Number.isInteger(opts.level) || opts.level < 1 || opts.level > 19) {
        throw new ConvertError('BAD_OPTION', `--level ${opts.level}: use a whole number from 1 to 19`);
      }
      const prefetch = opts.prefetch === undefined ? undefined : await readPathList(opts.prefetch);
      const progress = new ProgressLine();
      const from = parseImageLocation(src);
      const to = parseImageLocation(dst);
      let client: RegistryClient | undefined;
      const lazyClient = () => (client ??= registryClientFor(opts, [from, to].flatMap((l) => (l.transport === 'docker' ? [l.ref] : []))));
      const report = await convertImage(sourceFor(from, lazyClient), await destinationFor(to, lazyClient), {
        level: opts.level, ...(prefetch ? { prefetch } : {}),
        onProgress: (p) => progress.update(`layer ${p.layer}/${p.layers} ${p.digest.slice(7, 19)}: ${mib(p.read)} of ${mib(p.total)}`, p.read),
      }).finally(async () => {
        progress.done();
        await client?.close();
      });
      if (opts.json) {
        process.stdout.write(JSON.stringify(report, null, 2) + '\n');
        return;
      }
      for (const l of report.layers) {
        process.stdout.write(`${l.converted ? 'converted' : 'kept     '} ${l.from} → ${l.to} (${l.size} bytes, TOC ${l.tocDigest})\n`);
      }
      if (report.prefetch) {
        const { hinted, missing } = report.prefetch;
        process.stdout.write(`prefetch hint: ${hinted.reduce((a, b) => a + b, 0)} paths (per layer: ${hinted.join(', ')})\n`);
        if (missing.length > 0) {
          process.stderr.write(`tocfs convert: ${missing.length} path(s) of ${opts.prefetch} name no regular file a container of the image reads (absent, not a regular file, or deleted by an upper layer); left out: `
            + `${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', …' : ''}\n`);
        }
      }
      process.stdout.write(`manifest ${report.manifestDigest}\n`);
    });
}

/** A list of absolute paths, one per line; blank lines and # comments are skipped. `what` names it in errors. */
export async function readPathList(file: string, what = '--prefetch'): Promise<string[]> {
  return (await readHintList(file, what)).paths;
}

/**
 * A list of absolute paths, one per line ('#' comments and blank lines skipped), each optionally followed by the
 * byte ranges read of it (` @start-end,…`, as `tocfs reads` prints them).
 */
export async function readHintList(file: string, what: string): Promise<PrefetchHintList> {
  let text: string;
  try {
    text = file === '-' ? await readStdin() : await readFile(file, 'utf8');
  } catch (err) {
    throw new ConvertError('BAD_OPTION', `${what} ${file}: cannot read it (${(err as Error).message})`);
  }
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  const hint: PrefetchHintList = { paths: [], ranges: new Map() };
  for (const [i, line] of lines.entries()) {
    let entry: ReturnType<typeof parseHintLine>;
    try {
      entry = parseHintLine(line);
    } catch (err) {
      throw new ConvertError('BAD_OPTION', `${what} ${file} line ${i + 1}: ${(err as Error).message}`);
    }
    if (!entry.path.startsWith('/')) {
      throw new ConvertError('BAD_OPTION', `${what} ${file}: "${entry.path}" is not an absolute path; list paths as a container sees them, e.g. /usr/bin/python3`);
    }
    hint.paths.push(entry.path);
    if (entry.ranges) hint.ranges.set(entry.path, entry.ranges);
  }
  return hint;
}
