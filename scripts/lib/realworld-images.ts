// The images of bench:realworld, built from Debian 12 packages and cached under BENCH_REALWORLD_CACHE
// (default /var/cache/tocfs/realworld), so only the first run pays for debootstrap:
//
//   rootfs-base      debootstrap --variant=minbase bookworm                    → layer 1 of every image
//   rootfs-<name>    a copy with the workload's packages installed by apt-get --no-install-recommends in a
//                    chroot → layer 2 = what differs from rootfs-base (new and changed entries,
//                    whiteouts for removed ones), like the layer `RUN apt-get install …` adds in a Containerfile
//   data-bigread     1 GiB of random files (seeded, so every build is the same) → layer 2 of "bigread"
//
// The layers are plain tars with an OCI config; bench-realworld.ts pushes them as gzip (skopeo of Debian 12, what
// podman 4.3.1 pulls in full) and as zstd:chunked (skopeo 1.18 of the Debian 13 root, the same c/image as podman
// 5.4's push), so the zstd:chunked layers come from the reference writer.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync, writeSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
const MiB = 1 << 20;

export const DONE_MARKER = 'REALWORLD-DONE';

export interface Workload {
  name: string;
  /** Debian 12 packages on top of minbase ('' for none). */
  packages: string;
  /** What the container runs; it prints DONE_MARKER when the workload is ready. */
  command: string[];
  what: string;
  /** A data layer of random files instead of packages. */
  bigData?: boolean;
}

const sh = (script: string): string[] => ['sh', '-c', script];

export const WORKLOADS: readonly Workload[] = [
  {
    name: 'python', packages: 'python3-numpy,python3-scipy,python3-pandas', what: 'python3: import numpy, scipy.linalg, scipy.stats, pandas',
    command: ['python3', '-c', `import numpy, scipy.linalg, scipy.stats, pandas; print(numpy.__version__, scipy.__version__, pandas.__version__); print('${DONE_MARKER}')`],
  },
  {
    name: 'gcc', packages: 'gcc,g++,gfortran,libc6-dev', what: 'compile and run hello in C, C++ and Fortran',
    command: sh([
      'cd /tmp',
      `printf '#include <stdio.h>\\nint main(void){puts("hello c");return 0;}\\n' > h.c && gcc -O2 h.c -o hc && ./hc`,
      `printf '#include <iostream>\\nint main(){std::cout<<"hello c++"<<std::endl;}\\n' > h.cc && g++ -O2 h.cc -o hcc && ./hcc`,
      `printf 'program h\\nprint *, "hello fortran"\\nend program h\\n' > h.f90 && gfortran h.f90 -o hf && ./hf`,
      `echo ${DONE_MARKER}`,
    ].join(' && ')),
  },
  {
    name: 'node', packages: 'nodejs,npm', what: 'node, then npm init and npm ls in an empty project',
    command: sh([
      'cd /tmp', 'export NPM_CONFIG_UPDATE_NOTIFIER=false NPM_CONFIG_FUND=false NPM_CONFIG_AUDIT=false',
      'node -e "console.log(process.version, require(\'zlib\').constants.Z_BEST_COMPRESSION)"',
      'npm --version', 'npm init -y >/dev/null', 'npm ls', `echo ${DONE_MARKER}`,
    ].join(' && ')),
  },
  {
    name: 'bigread', packages: '', bigData: true, what: 'sha256sum of every file of a 1 GiB layer (read everything)',
    command: sh(`find /data -type f | sort | xargs sha256sum | sha256sum && echo ${DONE_MARKER}`),
  },
];

export interface CachePaths {
  dir: string;
  mirror: string;
  say: (msg: string) => void;
}

const recipeOf = (packages: string): string => (packages ? `v2 bookworm minbase + apt-get install --no-install-recommends ${packages}` : 'v1 bookworm minbase');

function ready(marker: string, recipe: string): boolean {
  return existsSync(marker) && readFileSync(marker, 'utf8').trim() === recipe.trim();
}

/**
 * A Debian 12 minbase root (debootstrap), or a copy of it with `packages` installed by apt-get in a chroot (what
 * `RUN apt-get install --no-install-recommends …` does in a Containerfile), built once: a marker holds the recipe.
 */
async function rootfs(cache: CachePaths, name: string, packages: string): Promise<string> {
  const dir = join(cache.dir, `rootfs-${name}`);
  const marker = `${dir}.ready`;
  const recipe = recipeOf(packages);
  if (ready(marker, recipe)) return dir;
  const base = packages ? await rootfs(cache, 'base', '') : undefined;
  rmSync(dir, { recursive: true, force: true });
  rmSync(marker, { force: true });
  const log = `${dir}.log`;
  const script = base === undefined
    ? `mkdir -p "$1/debs" && debootstrap --variant=minbase --cache-dir="$1/debs" bookworm "$2" "$3" > "$4" 2>&1`
    // A private mount namespace: /proc and /dev for the maintainer scripts, gone when apt is done.
    : `cp -a "$5" "$2" && cp /etc/resolv.conf "$2/etc/resolv.conf" && unshare -m sh -c 'mount -t proc proc "$1/proc" && mount --rbind /dev "$1/dev" `
      + `&& chroot "$1" apt-get update -qq && DEBIAN_FRONTEND=noninteractive chroot "$1" apt-get install -y -qq --no-install-recommends ${packages.split(',').join(' ')} `
      + `&& chroot "$1" apt-get clean' sh "$2" > "$4" 2>&1`;
  cache.say(base === undefined ? `debootstrap bookworm minbase into ${dir} (a minute, once)` : `apt-get install ${packages} into a copy of the base (${dir}, once)`);
  try {
    await execFileP('sh', ['-c', script, 'sh', cache.dir, dir, cache.mirror, log, base ?? ''], { timeout: 1800_000 });
  } catch {
    throw new Error(`building the ${name} root failed (log: ${log}); is ${cache.mirror} reachable? (BENCH_DEBIAN_MIRROR sets another mirror)`);
  }
  writeFileSync(marker, `${recipe}\n`);
  return dir;
}

/** What a layer leaves out of a root: mount points' contents, apt's lists and caches (as image builders clean them). */
const EXCLUDED = [/^dev\/./, /^proc\/./, /^sys\/./, /^run\/./, /^tmp\/./, /^var\/lib\/apt\/lists\/./, /^var\/cache\/apt\/./, /^var\/cache\/debconf\/.*-old$/, /^var\/log\/./];
const excluded = (rel: string): boolean => EXCLUDED.some((re) => re.test(rel));

function sameEntry(a: Stats, b: Stats, aPath: string, bPath: string): boolean {
  if ((a.mode & 0o170000) !== (b.mode & 0o170000) || a.mode !== b.mode || a.uid !== b.uid || a.gid !== b.gid) return false;
  if (a.isSymbolicLink()) return readlinkSync(aPath) === readlinkSync(bPath);
  if (a.isFile()) return a.size === b.size && a.mtimeMs === b.mtimeMs && (a.nlink > 1 || b.nlink > 1 ? sameContent(aPath, bPath) : true);
  return true;
}

function sameContent(a: string, b: string): boolean {
  const h = (p: string): string => createHash('sha256').update(readFileSync(p)).digest('hex');
  return h(a) === h(b);
}

interface LayerDiff {
  /** Entries of `full` to put in the layer (relative paths, parents before children). */
  entries: string[];
  /** Paths of `base` that `full` lacks: whiteouts. */
  removed: string[];
}

/** What `full` adds to or changes in `base`, the way a container build's layer records it. */
function diffTrees(base: string, full: string): LayerDiff {
  const entries: string[] = [];
  const removed: string[] = [];
  const walk = (rel: string): boolean => {
    const names = readdirSync(join(full, rel)).sort();
    let any = false;
    for (const n of names) {
      const r = rel ? `${rel}/${n}` : n;
      if (excluded(r)) continue;
      const f = lstatSync(join(full, r));
      const b = existsSync(join(base, r)) || isDanglingLink(join(base, r)) ? lstatSync(join(base, r)) : undefined;
      const changed = b === undefined || !sameEntry(b, f, join(base, r), join(full, r));
      const at = entries.length;
      if (changed) entries.push(r);
      let inner = false;
      if (f.isDirectory()) inner = walk(r);
      // A directory holding changes goes in too, before its children, so its mode and owner are the image's.
      if (inner && !changed) entries.splice(at, 0, r);
      any ||= changed || inner;
    }
    const baseDir = join(base, rel);
    if (existsSync(baseDir) && lstatSync(baseDir).isDirectory()) {
      for (const n of readdirSync(baseDir)) {
        const r = rel ? `${rel}/${n}` : n;
        if (!excluded(r) && !existsSync(join(full, r)) && !isDanglingLink(join(full, r))) {
          removed.push(r);
          any = true;
        }
      }
    }
    return any;
  };
  walk('');
  return { entries, removed };
}

function isDanglingLink(p: string): boolean {
  try {
    return lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

/** Write a GNU tar of `entries` of `root` (and whiteouts for `removed`) to `out`. */
async function tarOf(root: string, entries: string[], removed: string[], out: string): Promise<void> {
  const list = `${out}.list`;
  writeFileSync(list, entries.map((e) => `./${e}`).join('\n') + '\n');
  await execFileP('tar', ['--create', '--file', out, '--directory', root, '--no-recursion', '--no-unquote', '--numeric-owner', '--format=posix', '--pax-option=delete=atime,delete=ctime', '--files-from', list], { timeout: 1800_000, maxBuffer: 64 << 20 });
  if (removed.length > 0) {
    const wh = `${out}.wh`;
    rmSync(wh, { recursive: true, force: true });
    const names: string[] = [];
    for (const r of removed) {
      const slash = r.lastIndexOf('/');
      const name = slash < 0 ? `.wh.${r}` : `${r.slice(0, slash)}/.wh.${r.slice(slash + 1)}`;
      mkdirSync(join(wh, name, '..'), { recursive: true });
      writeFileSync(join(wh, name), '');
      names.push(`./${name}`);
    }
    writeFileSync(list, names.join('\n') + '\n');
    await execFileP('tar', ['--append', '--file', out, '--directory', wh, '--no-recursion', '--no-unquote', '--numeric-owner', '--format=posix', '--owner=0', '--group=0', '--files-from', list], { timeout: 600_000 });
    rmSync(wh, { recursive: true, force: true });
  }
  rmSync(list, { force: true });
}

/** Every entry of a root (sorted, parents first), for the base layer. */
function allEntries(root: string): string[] {
  const out: string[] = [];
  const walk = (rel: string): void => {
    for (const n of readdirSync(join(root, rel)).sort()) {
      const r = rel ? `${rel}/${n}` : n;
      if (excluded(r)) continue;
      out.push(r);
      if (lstatSync(join(root, r)).isDirectory()) walk(r);
    }
  };
  walk('');
  return out;
}

/** A deterministic pseudo-random stream (xorshift128+ over 32-bit words), so the data layer is the same every build. */
function fillRandom(buf: Buffer, state: Uint32Array): void {
  for (let i = 0; i + 4 <= buf.length; i += 4) {
    let t = state[0]! ^ (state[0]! << 11);
    state[0] = state[1]!; state[1] = state[2]!; state[2] = state[3]!;
    state[3] = (state[3]! ^ (state[3]! >>> 19) ^ t ^ (t >>> 8)) >>> 0;
    buf.writeUInt32LE(state[3]!, i);
  }
}

/** 1 GiB in /data: 8 files of 64 MiB, 96 of 4 MiB and 512 of 256 KiB (a model-and-assets shape). */
function writeBigData(dir: string): void {
  const state = new Uint32Array([0x9e3779b9, 0x243f6a88, 0xb7e15162, 0x12345678]);
  const buf = Buffer.alloc(4 * MiB);
  const plan: [string, number, number][] = [['models', 8, 64 * MiB], ['shards', 96, 4 * MiB], ['assets', 512, 256 * 1024]];
  for (const [sub, count, size] of plan) {
    mkdirSync(join(dir, 'data', sub), { recursive: true });
    for (let i = 0; i < count; i++) {
      const fd = openSync(join(dir, 'data', sub, `${sub}-${String(i).padStart(3, '0')}.bin`), 'w', 0o644);
      for (let left = size; left > 0; left -= buf.length) {
        fillRandom(buf, state);
        writeSync(fd, buf, 0, Math.min(left, buf.length));
      }
      closeSync(fd);
    }
  }
}

export interface WorkloadLayers {
  /** Uncompressed layer tars, lowest first. */
  tars: string[];
  /** For bigread: the expected output (sha256sum of the sorted sha256sum lines). */
  expected?: string;
}

/** The layer tars of one workload, built (or found) in the cache. */
export async function workloadLayers(cache: CachePaths, w: Workload): Promise<WorkloadLayers> {
  const base = await rootfs(cache, 'base', '');
  const baseTar = join(cache.dir, 'layer-base.tar');
  if (!ready(`${baseTar}.ready`, recipeOf(''))) {
    cache.say('writing the base layer tar');
    await tarOf(base, allEntries(base), [], baseTar);
    writeFileSync(`${baseTar}.ready`, `${recipeOf('')}\n`);
  }
  const appTar = join(cache.dir, `layer-${w.name}.tar`);
  const recipe = w.bigData ? 'v1 bigdata 1GiB xorshift' : recipeOf(w.packages);
  let expected: string | undefined;
  if (w.bigData) {
    const dataDir = join(cache.dir, 'data-bigread');
    if (!ready(`${appTar}.ready`, recipe)) {
      cache.say('writing the 1 GiB data layer');
      rmSync(dataDir, { recursive: true, force: true });
      writeBigData(dataDir);
      await tarOf(dataDir, allEntries(dataDir), [], appTar);
      writeFileSync(join(cache.dir, 'bigread.expected'), await expectedBigread(dataDir));
      writeFileSync(`${appTar}.ready`, `${recipe}\n`);
    }
    expected = readFileSync(join(cache.dir, 'bigread.expected'), 'utf8');
  } else if (!ready(`${appTar}.ready`, recipe)) {
    const full = await rootfs(cache, w.name, w.packages);
    cache.say(`writing the ${w.name} layer tar (what ${w.packages} add to the base)`);
    const diff = diffTrees(base, full);
    await tarOf(full, diff.entries, diff.removed, appTar);
    writeFileSync(`${appTar}.ready`, `${recipe}\n`);
  }
  return { tars: [baseTar, appTar], ...(expected !== undefined ? { expected } : {}) };
}

/** What `find /data -type f | sort | xargs sha256sum | sha256sum` prints for the data layer. */
async function expectedBigread(dataDir: string): Promise<string> {
  const files = allEntries(dataDir).filter((r) => statSync(join(dataDir, r)).isFile()).map((r) => `/${r}`).sort();
  const lines = files.map((f) => `${createHash('sha256').update(readFileSync(join(dataDir, f))).digest('hex')}  ${f}\n`).join('');
  return `${createHash('sha256').update(lines).digest('hex')}  -\n`;
}

/** Write an OCI image layout of uncompressed `tars` (hard links into the cache) at `dir`, tagged `tag`. */
export async function writeOciLayout(dir: string, tars: string[], tag: string, cmd: string[]): Promise<void> {
  mkdirSync(join(dir, 'blobs', 'sha256'), { recursive: true });
  const blob = (data: Buffer): { digest: string; size: number } => {
    const hex = createHash('sha256').update(data).digest('hex');
    writeFileSync(join(dir, 'blobs', 'sha256', hex), data);
    return { digest: `sha256:${hex}`, size: data.length };
  };
  const layers: { digest: string; size: number }[] = [];
  for (const t of tars) {
    const hex = (await execFileP('sha256sum', [t], { timeout: 600_000 })).stdout.split(' ')[0]!;
    const target = join(dir, 'blobs', 'sha256', hex);
    if (!existsSync(target)) await execFileP('ln', [t, target]).catch(() => execFileP('cp', [t, target]));
    layers.push({ digest: `sha256:${hex}`, size: statSync(t).size });
  }
  const config = blob(Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux', created: '2026-01-01T00:00:00Z',
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'LANG=C.UTF-8'], Cmd: cmd },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
  })));
  const manifest = blob(Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...l })),
  })));
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(join(dir, 'index.json'), JSON.stringify({
    schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': tag } }],
  }));
}
