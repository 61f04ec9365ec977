// Scaffolding shared by the long benchmarks (bench:coldstart, bench:realworld): environment parameters checked up
// front, and a work directory whose cleanups run at the end, on Ctrl-C, or when the run overstays its timeout.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The numeric environment parameter `name` of `bench`, or `fallback`; exits 2 saying why when it is not `what`. */
export function envNumber(bench: string, name: string, fallback: number, check: (v: number) => boolean, what: string): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const v = Number(raw);
  if (!Number.isFinite(v) || !check(v)) {
    console.error(`${bench}: ${name}=${JSON.stringify(raw)} is not ${what}`);
    process.exit(2);
  }
  return v;
}

export interface BenchRun {
  /** A fresh directory under the system's temporary directory, removed by finish(). */
  work: string;
  /** Run by finish() in reverse order (a failing one is reported, the others still run). */
  cleanups: (() => Promise<void>)[];
  finish(): Promise<void>;
}

/** Start a run of `bench`: Ctrl-C cleans up and exits 130; no result within `timeoutS` cleans up and exits 1. */
export function startBenchRun(bench: string, timeoutS: number): BenchRun {
  const work = mkdtempSync(join(tmpdir(), `tocfs-${bench.replace(':', '-')}-`));
  const cleanups: (() => Promise<void>)[] = [];
  const cleanup = async (): Promise<void> => {
    for (const c of cleanups.reverse()) await c().catch((err: unknown) => console.error(`cleanup: ${(err as Error).message}`));
    cleanups.length = 0;
    rmSync(work, { recursive: true, force: true });
  };
  const watchdog = setTimeout(() => {
    console.error(`${bench}: no result after ${timeoutS} s; aborting`);
    void cleanup().finally(() => process.exit(1));
  }, timeoutS * 1000);
  watchdog.unref();
  process.once('SIGINT', () => { void cleanup().finally(() => process.exit(130)); });
  return {
    work, cleanups,
    finish: async () => {
      clearTimeout(watchdog);
      await cleanup();
    },
  };
}
