import type { Command } from 'commander';
import {
  convertImage, ociDestination, ociSource, parseImageLocation, tarSource, ConvertError,
  type ImageDestination, type ImageLocation, type ImageSource,
} from '../convert/index.js';
import { mib, ProgressLine } from './progress.js';

function sourceFor(loc: ImageLocation): ImageSource {
  switch (loc.transport) {
    case 'oci': return ociSource(loc.dir, loc.tag);
    case 'tar': return tarSource(loc.path);
    case 'docker': throw new ConvertError('UNSUPPORTED', 'docker:// sources need the registry client (not wired yet)');
  }
}

async function destinationFor(loc: ImageLocation): Promise<ImageDestination> {
  switch (loc.transport) {
    case 'oci': return ociDestination(loc.dir, loc.tag);
    case 'tar': throw new ConvertError('BAD_LOCATION', `"${loc.path}": the destination must be oci:<dir>[:<tag>] or docker://<ref>`);
    case 'docker': throw new ConvertError('UNSUPPORTED', 'docker:// destinations need the registry client (not wired yet)');
  }
}

export function registerConvert(program: Command): void {
  program
    .command('convert')
    .description('convert an image (or a layer tar) to zstd:chunked; DiffIDs and the config stay the same')
    .argument('<src>', 'a layer tar file, or oci:<dir>[:<tag>]')
    .argument('<dst>', 'oci:<dir>[:<tag>]')
    .option('--level <n>', 'zstd compression level (1-19)', (v) => Number(v), 3)
    .option('--json', 'print the result as JSON')
    .action(async (src: string, dst: string, opts: { level: number; json?: boolean }) => {
      if (!Number.isInteger(opts.level) || opts.level < 1 || opts.level > 19) {
        throw new ConvertError('BAD_OPTION', `--level ${opts.level}: use a whole number from 1 to 19`);
      }
      const progress = new ProgressLine();
      const report = await convertImage(sourceFor(parseImageLocation(src)), await destinationFor(parseImageLocation(dst)), {
        level: opts.level,
        onProgress: (p) => progress.update(`layer ${p.layer}/${p.layers} ${p.digest.slice(7, 19)}: ${mib(p.read)} of ${mib(p.total)}`, p.read),
      }).finally(() => progress.done());
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
