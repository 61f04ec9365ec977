/**
 * Base class of every error tocfs raises on purpose. `code` is stable and machine-readable (tests and the
 * control socket match on it); `message` is written for a person: what failed, on what, and what to do.
 */
export class TocfsError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** Narrow an unknown thrown value to a Node system error (has `code`, maybe `errno`). */
export function isErrnoException(err: unknown): err is NodeJS.ErrnoException {
  return err instanceof Error && typeof (err as NodeJS.ErrnoException).code === 'string';
}
