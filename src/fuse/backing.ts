// FUSE passthrough's two /dev/fuse ioctls (FUSE_DEV_IOC_BACKING_OPEN/CLOSE, Linux 6.9+), through the optional native
// addon built from native/ by `npm install` (Node has no ioctl). Everything else of passthrough — the INIT flag, the
// open reply's backing id — is plain protocol in session.ts. Without the addon, passthrough is simply off.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

interface NativeAddon {
  backingOpen(fuseFd: number, fileFd: number): number;
  backingClose(fuseFd: number, backingId: number): void;
}

/** The addon's functions, or why they are not available (said once in the log by whoever asks). */
export type BackingIoctls = { ok: true; addon: NativeAddon } | { ok: false; why: string };

/** Where `npm install` leaves the addon, relative to this file in dist/src/fuse/ (or src/fuse/ under a TS loader). */
const CANDIDATES = ['../../../build/Release/tocfs_native.node', '../../build/Release/tocfs_native.node'];

let loaded: BackingIoctls | undefined;

/**
 * Load the native addon once. TOCFS_NO_PASSTHROUGH=1 pretends it is missing (tests, or an operator ruling
 * passthrough out without a config change).
 */
export function backingIoctls(): BackingIoctls {
  if (loaded) return loaded;
  if (process.env.TOCFS_NO_PASSTHROUGH === '1') return (loaded = { ok: false, why: 'TOCFS_NO_PASSTHROUGH=1 is set' });
  if (process.platform !== 'linux') return (loaded = { ok: false, why: `FUSE passthrough is Linux only (this is ${process.platform})` });
  const require = createRequire(import.meta.url);
  const path = CANDIDATES.map((c) => fileURLToPath(new URL(c, import.meta.url))).find((p) => existsSync(p));
  if (!path) {
    return (loaded = { ok: false, why: 'the native addon build/Release/tocfs_native.node is not built (npm install builds it; it needs a C compiler, make and python3)' });
  }
  try {
    const addon = require(path) as Partial<NativeAddon>;
    if (typeof addon.backingOpen !== 'function' || typeof addon.backingClose !== 'function') throw new Error('it lacks backingOpen/backingClose');
    return (loaded = { ok: true, addon: addon as NativeAddon });
  } catch (err) {
    return (loaded = { ok: false, why: `the native addon ${path} cannot be loaded: ${(err as Error).message} (rebuild it: npm rebuild)` });
  }
}
