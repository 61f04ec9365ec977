import type { Command } from 'commander';
import {
  convertImage, ociDestination, ociSource, parseImageLocation, registryDestination, registrySource, tarSource,
  ConvertError, type ImageDestination, type ImageLocation, type ImageSource,
} from '../convert/index.js';
import type { RegistryClient } from '../registry/index.js';
import { mib, ProgressLine } from './progress.js';
import { registryClientFor, type RegistryFlags } from './registry-flags.js';

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
    .option('--json', 'print the result as JSON')
    .action(async (src: string, dst: string, opts: { level: number; json?: boolean } & RegistryFlags) => {
      if (!Number.isInteger(opts.level) || opts.level < 1 || opts.level > 19) {
        throw new ConvertError('BAD_OPTION', `--level ${opts.level}: use a whole number from 1 to 19`);
      }
      const progress = new ProgressLine();
      const from = parseImageLocation(src);
      const to = parseImageLocation(dst);
      let client: RegistryClient | undefined;
      const lazyClient = () => (client ??= registryClientFor(opts, [from, to].flatMap((l) => (l.transport === 'docker' ? [l.ref] : []))));
      const report = await convertImage(sourceFor(from, lazyClient), await destinationFor(to, lazyClient), {
        level: opts.level,
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
      process.stdout.write(`manifest ${report.manifestDigest}\n`);
    });
}
