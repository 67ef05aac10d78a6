/**
 * Kernel file objects (`struct file`) and the file-operations table a file type implements.
 *
 * A {@link KernelFile} has an explicit reference count: every fd that points at it holds one
 * reference, and so does LUO while the file is preserved or retrieved-but-not-finished. When the
 * last reference is dropped the file's `release` operation runs (a memfd frees its pages there).
 * File types (memfd, the test handler's file, device nodes) subclass it and fill in the
 * operations they support; the generic syscalls on `Process` dispatch to them and report the
 * kernel's errno for operations a type does not support.
 *
 * @module
 */
import { LiveUpdateError } from "../errors.js";
import type { Process } from "./process.js";

/**
 * `lseek` whence values.
 *
 * @category Kernel files and processes
 */
export const SEEK_SET = 0;
/**
 * `lseek` relative to the current position.
 *
 * @category Kernel files and processes
 */
export const SEEK_CUR = 1;
/**
 * `lseek` relative to the end of the file.
 *
 * @category Kernel files and processes
 */
export const SEEK_END = 2;

/**
 * `fallocate` mode bit: do not change the file size.
 *
 * @category Kernel files and processes
 */
export const FALLOC_FL_KEEP_SIZE = 0x01;
/**
 * `fallocate` mode bit: deallocate the range (must be combined with KEEP_SIZE).
 *
 * @category Kernel files and processes
 */
export const FALLOC_FL_PUNCH_HOLE = 0x02;

/** Options of the waiting syscalls ({@link Process.readAsync}, {@link Process.writeAsync}). */
export interface WaitOptions {
  /** Interrupts the wait: the call then fails with `EINTR` and changes nothing. */
  readonly signal?: AbortSignal;
}

let nextInode = 1;

/**
 * Allocates a fresh inode number for a new file object (identity for double preservation).
 *
 * @category Kernel files and processes
 */
export function allocInode(): number {
  return nextInode++;
}

/**
 * A kernel file object. Subclasses override the operations they support; the defaults fail with
 * the errno Linux returns for a file type without that operation.
 *
 * @category Entry points
 */
export abstract class KernelFile {
  /** File-type name shown in messages, e.g. `memfd:guest-ram`. */
  abstract readonly description: string;
  /** Inode number; default identity for the double-preservation registry. */
  readonly inode: number;
  /** The file position used by read/write/lseek. */
  pos = 0;
  private refs = 1;
  private released = false;

  /**
   * @param inode - the inode this file object opens; several file objects may share one (e.g.
   *   two opens of the same memfd). Default: a fresh inode number.
   */
  constructor(inode?: number) {
    this.inode = inode ?? allocInode();
  }

  /** Current number of references (fds and LUO's own). */
  get refCount(): number {
    return this.refs;
  }

  /** True once the last reference was dropped and `release` ran. */
  get isReleased(): boolean {
    return this.released;
  }

  /** Takes one more reference. Fails with `EBADF` on a released file. */
  get(): this {
    if (this.released) throw new LiveUpdateError("EBADF", `${this.description} was already released`);
    this.refs++;
    return this;
  }

  /** Drops one reference; the last one runs {@link KernelFile.release}. */
  put(): void {
    if (this.released || this.refs <= 0) return;
    this.refs--;
    if (this.refs === 0) {
      this.released = true;
      this.release();
    }
  }

  /** Called once when the last reference goes. */
  protected release(): void {}

  /** Reads up to `length` bytes at `offset`. Default: `EINVAL`. */
  readAt(_offset: number, _length: number): Uint8Array {
    throw new LiveUpdateError("EINVAL", `${this.description} does not support read`);
  }

  /** Writes `data` at `offset`, returns bytes written. Default: `EINVAL`. */
  writeAt(_offset: number, _data: Uint8Array): number {
    throw new LiveUpdateError("EINVAL", `${this.description} does not support write`);
  }

  /**
   * Read that may wait (`Process.readAsync`): a file type whose read can block (eventfd)
   * overrides it to wait until it can proceed. Default: {@link KernelFile.readAt}, never waits.
   */
  readWait(_proc: Process, offset: number, length: number, _options?: WaitOptions): Promise<Uint8Array> {
    try {
      return Promise.resolve(this.readAt(offset, length));
    } catch (e) {
      return Promise.reject(e as Error);
    }
  }

  /**
   * Write that may wait (`Process.writeAsync`); see {@link KernelFile.readWait}. Default:
   * {@link KernelFile.writeAt}, never waits.
   */
  writeWait(_proc: Process, offset: number, data: Uint8Array, _options?: WaitOptions): Promise<number> {
    try {
      return Promise.resolve(this.writeAt(offset, data));
    } catch (e) {
      return Promise.reject(e as Error);
    }
  }

  /**
   * False for a file whose position means nothing (an eventfd): reads and writes leave
   * {@link KernelFile.pos} alone, `lseek` returns it unchanged whatever the arguments (Linux
   * `noop_llseek`), and `pread`/`pwrite` fail with `ESPIPE`. Default: true.
   */
  get positional(): boolean {
    return true;
  }

  /** Current size in bytes, for `SEEK_END`. Default: `ESPIPE` (not seekable). */
  size(): number {
    throw new LiveUpdateError("ESPIPE", `${this.description} is not seekable`);
  }

  /**
   * A file type's own `lseek` (e.g. `/dev/null` always returns 0): returns the new position.
   * Absent: the generic seek over the position and {@link KernelFile.size}.
   */
  llseek?(offset: number, whence: number): number;

  /** Changes the size. Default: `EINVAL`. */
  truncate(_length: number): void {
    throw new LiveUpdateError("EINVAL", `${this.description} cannot be truncated`);
  }

  /** Allocates or punches a range. Default: `EOPNOTSUPP`. */
  fallocate(_mode: number, _offset: number, _length: number): void {
    throw new LiveUpdateError("EOPNOTSUPP", `${this.description} does not support fallocate`);
  }

  /**
   * Device-specific control (`ioctl`). `arg` is the user memory the argument points at
   * (`undefined` = NULL). Default: `ENOTTY`.
   */
  ioctl(_proc: Process, cmd: number, _arg: Uint8Array | undefined): Promise<number> {
    return Promise.reject(
      new LiveUpdateError("ENOTTY", `${this.description} has no ioctl 0x${cmd.toString(16)}`),
    );
  }

  /** Returns the seals (`F_GET_SEALS`). Default: `EINVAL`. */
  getSeals(): number {
    throw new LiveUpdateError("EINVAL", `${this.description} does not support seals`);
  }

  /** Adds seals (`F_ADD_SEALS`). Default: `EINVAL`. */
  addSeals(_seals: number): void {
    throw new LiveUpdateError("EINVAL", `${this.description} does not support seals`);
  }
}
