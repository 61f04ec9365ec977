import type { Command } from 'commander';
import { ARTIFACT_TYPE_PREFETCH, formatPrefetchArtifact } from '../format/index.js';
import { attachArtifact, parseReference, referrersTag } from '../registry/index.js';
import { readHintList } from './convert.js';
import { registryClientFor, type RegistryFlags } from './registry-flags.js';

export function registerHint(program: Command): void {
  program
    .command('hint')
    .description('attach a prefetch hint to an image in a registry without changing it (an OCI 1.1 artifact referring to '
      + 'the image; signed and digest-pinned images keep their digest). tocfs fetches the listed files first when it serves the image')
    .argument('<ref>', 'the image (registry/repository:tag or @digest; an optional docker:// prefix is ignored)')
    .argument('<file>', 'paths a container reads first, one per line, e.g. from `tocfs reads`, each optionally followed by " @start-end,…" '
      + '(the byte ranges read of it: only those go first) ("-" reads standard input)')
    .option('--registries-conf <file>', 'registries.conf to use instead of the system one')
    .option('--insecure', 'talk plain HTTP (or unverified TLS) to the registry')
    .action(async (refArg: string, file: string, opts: RegistryFlags) => {
      const refString = refArg.replace(/^docker:\/\//, '');
      const hint = await readHintList(file, 'hint');
      const ref = parseReference(refString);
      const client = registryClientFor(opts, [refString]);
      try {
        // The hint refers to what the reference names (an index or a manifest): the store looks it up by that digest.
        const m = await client.fetchManifest(ref);
        const digest = await attachArtifact(client, ref, { mediaType: m.mediaType, digest: m.digest, size: m.bytes.length }, ARTIFACT_TYPE_PREFETCH, formatPrefetchArtifact(hint.paths, hint.ranges));
        const partly = hint.ranges.size > 0 ? ` (${hint.ranges.size} of them only the parts read)` : '';
        process.stdout.write(`attached a prefetch hint of ${hint.paths.length} paths${partly} to ${ref.name}@${m.digest}\n`
          + `artifact ${digest} (listed under tag ${referrersTag(m.digest)})\n`);
      } finally {
        await client.close();
      }
    });
}
