import { Command } from 'commander';
import { TocfsError } from '../util/index.js';
import { registerConvert } from './convert.js';
import { registerHint } from './hint.js';
import { registerInspect } from './inspect.js';
import { registerMount } from './mount.js';
import { registerGc } from './gc.js';
import { registerAuthHelper, registerReads, registerStatus } from './status.js';

/** Build the `tocfs` command tree. Each subcommand lives in its own module and is registered here. */
export function buildProgram(): Command {
  const program = new Command();
  program
    .name('tocfs')
    .description('Lazy-pulling FUSE additional layer store for podman and CRI-O (zstd:chunked)')
    .showHelpAfterError()
    .exitOverride();
  registerInspect(program);
  registerConvert(program);
  registerHint(program);
  registerMount(program);
  registerGc(program);
  registerStatus(program);
  registerReads(program);
  registerAuthHelper(program);
  return program;
}

/** Run the CLI; resolves to the process exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync([...argv]);
    return 0;
  } catch (err) {
    if (isCommanderExit(err)) return err.exitCode;
    // Errors we raise on purpose carry a message written for a person; print it without a stack trace.
    if (err instanceof TocfsError) {
      process.stderr.write(`tocfs: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}

function isCommanderExit(err: unknown): err is { exitCode: number; code: string } {
  return typeof err === 'object' && err !== null && 'exitCode' in err && 'code' in err &&
    typeof (err as { code: unknown }).code === 'string' && (err as { code: string }).code.startsWith('commander.');
}
