import { constants } from 'node:os';

const ERRNO = constants.errno as Readonly<Record<string, number>>;
const NAMES = new Map<number, string>(Object.entries(ERRNO).map(([name, value]) => [value, name]));

/** An errno name known to this platform (ENOENT, ENODATA, ERANGE, ...). */
export type ErrnoCode = keyof typeof constants.errno;

/**
 * The one error an `Operations` method throws on purpose: the request is answered with this errno.
 * `new Errno('ENOENT')`, `new Errno(2)`, or the shared instances `Errno.ENOENT` etc. Anything else thrown by an
 * operation is a bug: the request gets EIO and the error is logged.
 */
export class Errno extends Error {
  /** Positive errno value, as in os.constants.errno. */
  readonly errno: number;
  /** Its name, e.g. 'ENOENT'. */
  readonly code: string;

  constructor(code: ErrnoCode | number, message?: string) {
    const errno = typeof code === 'number' ? code : ERRNO[code];
    if (errno === undefined || !Number.isInteger(errno) || errno <= 0) throw new TypeError(`unknown errno ${String(code)}`);
    const name = typeof code === 'number' ? NAMES.get(code) ?? `E${code}` : code;
    super(message ?? name);
    this.errno = errno;
    this.code = name;
    this.name = 'Errno';
  }

  /**
   * Convert a Node system error (fs, net...) into the errno it carries; anything else (or an unknown code)
   * becomes EIO. For operations that pass errors of a backing store through on purpose.
   */
  static from(err: unknown): Errno {
    if (err instanceof Errno) return err;
    const code = (err as { code?: unknown } | null)?.code;
    if (typeof code === 'string' && ERRNO[code] !== undefined) return new Errno(code as ErrnoCode, (err as Error).message);
    return new Errno('EIO', err instanceof Error ? err.message : String(err));
  }

  static readonly EPERM = new Errno('EPERM');
  static readonly ENOENT = new Errno('ENOENT');
  static readonly EIO = new Errno('EIO');
  static readonly EBADF = new Errno('EBADF');
  static readonly EAGAIN = new Errno('EAGAIN');
  static readonly EACCES = new Errno('EACCES');
  static readonly EEXIST = new Errno('EEXIST');
  static readonly EXDEV = new Errno('EXDEV');
  static readonly ENOTDIR = new Errno('ENOTDIR');
  static readonly EISDIR = new Errno('EISDIR');
  static readonly EINVAL = new Errno('EINVAL');
  static readonly ENOSPC = new Errno('ENOSPC');
  static readonly EROFS = new Errno('EROFS');
  static readonly ERANGE = new Errno('ERANGE');
  static readonly ENAMETOOLONG = new Errno('ENAMETOOLONG');
  static readonly ENOSYS = new Errno('ENOSYS');
  static readonly ENOTEMPTY = new Errno('ENOTEMPTY');
  static readonly ELOOP = new Errno('ELOOP');
  static readonly ENODATA = new Errno('ENODATA');
  static readonly E2BIG = new Errno('E2BIG');
  static readonly EINTR = new Errno('EINTR');
  static readonly ENOTSUP = new Errno('ENOTSUP');
  static readonly EOPNOTSUPP = new Errno('EOPNOTSUPP');
  static readonly ETIMEDOUT = new Errno('ETIMEDOUT');
}

/** The errno a thrown value answers with, or undefined when it is not an Errno (a bug: EIO + log). */
export function errnoOf(err: unknown): number | undefined {
  if (err instanceof Errno) return err.errno;
  return undefined;
}
