import { readFileSync } from 'node:fs';
import { parseReference, parseRegistriesConf, RegistriesConf, RegistryClient } from '../registry/index.js';

export interface RegistryFlags {
  registriesConf?: string;
  insecure?: boolean;
}

/**
 * A registry client for a command: the system registries.conf (or --registries-conf), plus, with --insecure,
 * plain-HTTP entries for the registries the command names (what skopeo's --tls-verify=false does).
 */
export function registryClientFor(flags: RegistryFlags, refs: string[]): RegistryClient {
  if (!flags.insecure) {
    return new RegistryClient(flags.registriesConf ? { registriesConfPaths: { path: flags.registriesConf, dropInDir: `${flags.registriesConf}.d` } } : {});
  }
  const base = flags.registriesConf ? readFileSync(flags.registriesConf, 'utf8') + '\n' : '';
  const hosts = [...new Set(refs.map((r) => parseReference(r).domain))];
  const extra = hosts.map((h) => `[[registry]]\nlocation = "${h}"\ninsecure = true\n`).join('\n');
  return new RegistryClient({ registriesConf: new RegistriesConf(parseRegistriesConf(base + extra, flags.registriesConf ?? '--insecure')) });
}
