/**
 * The one error vocabulary of the project.
 *
 * Owns the errno table (Linux errno names and numbers) and the error classes every public API
 * fails with. A kernel `-EFOO` return becomes a rejected/thrown {@link LiveUpdateError} whose
 * `code` is `'EFOO'`, whose `errno` is the Node-style negative number, and whose message names
 * the object involved (session name, token, compatible, physical address). Corrupt incoming
 * handover state is a {@link KernelPanicError}; malformed device-tree blobs are {@link FdtError};
 * unreadable machine images are {@link MachineImageError}. Library code never throws a bare
 * `Error`.
 *
 * @module
 */

/**
 * Linux errno numbers used by the project (positive values, as in `errno.h`).
 *
 * @category Errors
 */
export const ERRNO = {
  EPERM: 1,
  ESRCH: 3,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  E2BIG: 7,
  ENOEXEC: 8,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EISDIR: 21,
  EINVAL: 22,
  EMFILE: 24,
  ENOTTY: 25,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EPIPE: 32,
  ERANGE: 34,
  EDEADLK: 35,
  ELOOP: 40,
  ENODATA: 61,
  EPROTO: 71,
  EOVERFLOW: 75,
  ENOTSOCK: 88,
  EMSGSIZE: 90,
  ESOCKTNOSUPPORT: 94,
  EOPNOTSUPP: 95,
  EAFNOSUPPORT: 97,
  EADDRINUSE: 98,
  ECONNRESET: 104,
  EISCONN: 106,
  ENOTCONN: 107,
  ESHUTDOWN: 108,
  ETOOMANYREFS: 109,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  /** Not a Linux errno: a kernel panic on corrupt incoming state. Userspace sees it as `EIO`. */
  EPANIC: 5,
} as const;

/**
 * An errno name from {@link ERRNO}, e.g. `'EBUSY'`.
 *
 * @category Errors
 */
export type ErrnoCode = keyof typeof ERRNO;

/**
 * Options accepted by {@link LiveUpdateError} and its subclasses.
 *
 * @category Errors
 */
export interface LiveUpdateErrorOptions {
  /** The underlying error this one wraps. */
  cause?: unknown;
}

/**
 * The error every public API of the project fails with (or a documented subclass).
 *
 * `code` is the Linux errno name, `errno` the Node-style negative number (`EBUSY` → -16).
 *
 * @category Entry points
 */
export class LiveUpdateError extends Error {
  /** Linux errno name, e.g. `'EBUSY'`. */
  readonly code: ErrnoCode;
  /** Node-style negative errno, e.g. -16 for `EBUSY`. */
  readonly errno: number;

  /**
   * @param code - errno name
   * @param message - what failed, naming the object involved
   * @param options - `cause` when wrapping another error
   */
  constructor(code: ErrnoCode, message: string, options?: LiveUpdateErrorOptions) {
    super(`${code}: ${message}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "LiveUpdateError";
    this.code = code;
    this.errno = -ERRNO[code];
  }
}

/**
 * Corrupt incoming handover state found while booting or deserializing: the model of the
 * kernel's `panic()`. The message names what was corrupt and where (physical address, index).
 *
 * @category Errors
 */
export class KernelPanicError extends LiveUpdateError {
  /** Physical address of the structure that was found corrupt, when known. */
  readonly phys: bigint | undefined;

  /**
   * @param message - what was corrupt and where
   * @param phys - the physical address of the corrupt structure, when known
   * @param options - `cause` when wrapping another error
   */
  constructor(message: string, phys?: bigint, options?: LiveUpdateErrorOptions) {
    super("EPANIC", `kernel panic: ${message}`, options);
    this.name = "KernelPanicError";
    this.phys = phys;
  }
}

/**
 * A device-tree blob that is malformed (bad header, offset, size, token or string).
 *
 * @category Errors
 */
export class FdtError extends LiveUpdateError {
  /** Byte offset inside the blob where the problem was found, when known. */
  readonly offset: number | undefined;

  /**
   * @param message - what is wrong with the blob
   * @param offset - byte offset inside the blob, when known
   */
  constructor(message: string, offset?: number) {
    super("EINVAL", offset === undefined ? `bad FDT: ${message}` : `bad FDT at offset ${offset}: ${message}`);
    this.name = "FdtError";
    this.offset = offset;
  }
}

/**
 * A machine image file that is truncated, corrupt or not a machine image at all.
 *
 * @category Errors
 */
export class MachineImageError extends LiveUpdateError {
  /**
   * @param path - the image file
   * @param message - what is wrong with it
   * @param options - `cause` when wrapping an I/O error
   */
  constructor(path: string, message: string, options?: LiveUpdateErrorOptions) {
    super("ENOEXEC", `machine image ${path}: ${message}`, options);
    this.name = "MachineImageError";
  }
}

/**
 * Names what a caller passed where something else was expected, for `EINVAL` messages from
 * plain-JavaScript misuse: `a string "7"`, `a number 1.5`, `null`, `an array`.
 */
export function describeValue(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  switch (typeof v) {
    case "string":
      return `a string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
    case "bigint":
      return `a bigint ${v}n`;
    case "number":
    case "boolean":
      return `a ${typeof v} ${String(v)}`;
    case "undefined":
      return "undefined";
    case "function":
      return "a function";
    case "symbol":
      return "a symbol";
    default:
      return "an object";
  }
}

/**
 * True when `e` is a {@link LiveUpdateError} (optionally with the given code).
 *
 * @category Errors
 */
export function isLiveUpdateError(e: unknown, code?: ErrnoCode): e is LiveUpdateError {
  return e instanceof LiveUpdateError && (code === undefined || e.code === code);
}

/**
 * Wraps anything thrown by foreign code (a handler callback) as a {@link LiveUpdateError}:
 * a `LiveUpdateError` passes through unchanged, anything else becomes `EIO` with `cause`.
 *
 * @param e - what was thrown
 * @param context - names the callback and object, e.g. `handler "memfd-v2" preserve of token 1`
 *
 * @category Errors
 */
export function toLiveUpdateError(e: unknown, context: string): LiveUpdateError {
  if (e instanceof LiveUpdateError) return e;
  const detail = e instanceof Error ? e.message : String(e);
  return new LiveUpdateError("EIO", `${context} failed: ${detail}`, { cause: e });
}
