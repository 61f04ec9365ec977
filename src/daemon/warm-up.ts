// Registries contacted ahead of use after a start: the references a daemon resolved images from are kept (one per
// registry host, newest first), and a fresh start pings those registries at once. A warm `podman pull` then finds
// the scheme and auth challenge learned and a connection open, instead of paying a ping on a new connection
// (bench:realworld: ~80 ms of a ~1.1 s warm pull) before the manifest.
import { readFile } from 'node:fs/promises';
import { parseReference } from '../registry/index.js';
import { writeStateFile } from '../util/index.js';

/** Registries remembered at most (one reference each). */
const MAX_HOSTS = 16;

export class SeenRegistries {
  private refs: string[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly file: string) {}

  /** The references kept by earlier runs (none if the file is missing or unreadable). */
  async load(): Promise<string[]> {
    try {
      const raw = JSON.parse(await readFile(this.file, 'utf8')) as unknown;
      this.refs = Array.isArray(raw) ? raw.filter((r): r is string => typeof r === 'string' && hostOf(r) !== undefined).slice(0, MAX_HOSTS) : [];
    } catch {
      this.refs = [];
    }
    return [...this.refs];
  }

  /** An image was resolved from `ref`'s registry: it goes first (saved a second later; failing only loses a ping). */
  record(ref: string): void {
    const host = hostOf(ref);
    if (host === undefined || hostOf(this.refs[0] ?? '') === host) return;
    this.refs = [ref, ...this.refs.filter((r) => hostOf(r) !== host)].slice(0, MAX_HOSTS);
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      void writeStateFile(this.file, JSON.stringify(this.refs)).catch(() => {});
    }, 1000);
    this.timer.unref();
  }
}

function hostOf(ref: string): string | undefined {
  try {
    return parseReference(ref).domain;
  } catch {
    return undefined;
  }
}
