/**
 * A process and its fd table, with the generic file syscalls.
 *
 * Every fd holds one reference on its {@link KernelFile}; `close` drops it, `dup` takes another,
 * `exit` closes every fd. fds are allocated lowest-free first, like Linux. A bad fd is `EBADF`.
 * File-type specific behaviour (memfd seals, sizes) lives in the file objects; the syscalls here
 * only do argument checking and dispatch. After the kernel halted, every syscall fails with
 * `ESHUTDOWN`.
 *
 * @module
 */
import { describeValue, LiveUpdateError } from "../errors.js";
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, SEEK_CUR, SEEK_END, SEEK_SET } from "./file.js";
import type { KernelFile } from "./file.js";
import type { KernelContext } from "./context.js";

/** `fcntl` command: add seals. */
export const F_ADD_SEALS = 1033;
/** `fcntl` command: read seals. */
export const F_GET_SEALS = 1034;

/** Largest file offset accepted by the syscalls (fits a JS safe integer). */
export const MAX_FILE_OFFSET = 2 ** 52;

/** Checks a file offset or length argument of syscall `op`; `EINVAL` naming what is wrong. */
function checkOffset(value: number, what: "offset" | "length", op: string): void {
  if (typeof value !== "number")
    throw new LiveUpdateError("EINVAL", `${op}: ${what} is ${describeValue(value)}, not a number`);
  if (!Number.isInteger(value))
    throw new LiveUpdateError("EINVAL", `${op}: ${what} ${value} is not an integer`);
  if (value < 0) throw new LiveUpdateError("EINVAL", `${op}: ${what} ${value} is negative`);
  if (value > MAX_FILE_OFFSET) {
    throw new LiveUpdateError("EINVAL", `${op}: ${what} ${value} is beyond the largest file offset 2^52`);
  }
}

/** A user process: a name, a pid and an fd table. */
export class Process {
  private readonly fds = new Map<number, KernelFile>();
  /** No fd below this is free (keeps lowest-free allocation O(1) amortized). */
  private lowestFree = 0;
  private exited = false;

  /**
   * @param kernel - the kernel this process runs on
   * @param name - a label for messages
   * @param pid - process id
   */
  constructor(
    readonly kernel: KernelContext,
    readonly name: string,
    readonly pid: number,
  ) {}

  private check(): void {
    this.kernel.assertRunning();
    if (this.exited) throw new LiveUpdateError("ESRCH", `process ${this.name} (pid ${this.pid}) has exited`);
  }

  /** The file behind `fd` (no new reference). `EBADF` if `fd` is not open. */
  file(fd: number): KernelFile {
    this.check();
    const f = this.fds.get(fd);
    if (!f) throw new LiveUpdateError("EBADF", `fd ${fd} is not open in process ${this.name}`);
    return f;
  }

  /** Installs `file` at the lowest free fd, consuming one reference the caller owns. */
  installFile(file: KernelFile): number {
    this.check();
    let fd = this.lowestFree;
    while (this.fds.has(fd)) fd++;
    this.fds.set(fd, file);
    this.lowestFree = fd + 1;
    return fd;
  }

  /** Opens a device node registered by the kernel or a plugin. `ENOENT` for unknown paths. */
  async open(path: string): Promise<number> {
    this.check();
    const file = await this.kernel.device(path)(this);
    return this.installFile(file);
  }

  /** Closes `fd`, dropping its reference. `EBADF` if not open. */
  close(fd: number): void {
    const f = this.file(fd);
    this.fds.delete(fd);
    if (fd < this.lowestFree) this.lowestFree = fd;
    f.put();
  }

  /** Duplicates `fd` onto the lowest free fd (same file object). */
  dup(fd: number): number {
    return this.installFile(this.file(fd).get());
  }

  /** Reads up to `length` bytes at the file position and advances it. */
  read(fd: number, length: number): Uint8Array {
    const f = this.file(fd);
    checkOffset(length, "length", "read");
    const out = f.readAt(f.pos, length);
    f.pos += out.length;
    return out;
  }

  /** Writes `data` at the file position and advances it; returns bytes written. */
  write(fd: number, data: Uint8Array): number {
    const f = this.file(fd);
    const n = f.writeAt(f.pos, data);
    f.pos += n;
    return n;
  }

  /** Reads up to `length` bytes at `offset` without moving the position. */
  pread(fd: number, length: number, offset: number): Uint8Array {
    const f = this.file(fd);
    checkOffset(length, "length", "pread");
    checkOffset(offset, "offset", "pread");
    return f.readAt(offset, length);
  }

  /** Writes `data` at `offset` without moving the position; returns bytes written. */
  pwrite(fd: number, data: Uint8Array, offset: number): number {
    const f = this.file(fd);
    checkOffset(offset, "offset", "pwrite");
    return f.writeAt(offset, data);
  }

  /** Moves the file position (`SEEK_SET`/`SEEK_CUR`/`SEEK_END`); returns the new position. */
  lseek(fd: number, offset: number, whence: number): number {
    const f = this.file(fd);
    const size = f.size(); // ESPIPE for files that cannot seek
    let base: number;
    if (whence === SEEK_SET) base = 0;
    else if (whence === SEEK_CUR) base = f.pos;
    else if (whence === SEEK_END) base = size;
    else throw new LiveUpdateError("EINVAL", `lseek: bad whence ${whence} on fd ${fd}`);
    const pos = base + offset;
    if (!Number.isSafeInteger(pos) || pos < 0) {
      throw new LiveUpdateError("EINVAL", `lseek: resulting offset ${pos} is invalid on fd ${fd}`);
    }
    f.pos = pos;
    return pos;
  }

  /** Sets the file size. */
  ftruncate(fd: number, length: number): void {
    const f = this.file(fd);
    checkOffset(length, "length", "ftruncate");
    f.truncate(length);
  }

  /** Allocates (or with `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`, punches) a range. */
  fallocate(fd: number, mode: number, offset: number, length: number): void {
    const f = this.file(fd);
    checkOffset(offset, "offset", "fallocate");
    checkOffset(length, "length", "fallocate");
    if (length === 0) throw new LiveUpdateError("EINVAL", `fallocate: zero length on fd ${fd}`);
    if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE)) {
      throw new LiveUpdateError("EOPNOTSUPP", `fallocate: unsupported mode 0x${mode.toString(16)}`);
    }
    if (mode & FALLOC_FL_PUNCH_HOLE && !(mode & FALLOC_FL_KEEP_SIZE)) {
      throw new LiveUpdateError("EOPNOTSUPP", `fallocate: PUNCH_HOLE requires KEEP_SIZE`);
    }
    f.fallocate(mode, offset, length);
  }

  /** `fcntl`: `F_ADD_SEALS` (returns 0) and `F_GET_SEALS` (returns the seals). */
  fcntl(fd: number, cmd: number, arg = 0): number {
    const f = this.file(fd);
    if (cmd === F_GET_SEALS) return f.getSeals();
    if (cmd === F_ADD_SEALS) {
      f.addSeals(arg);
      return 0;
    }
    throw new LiveUpdateError("EINVAL", `fcntl: unsupported command ${cmd} on fd ${fd}`);
  }

  /** `ioctl(fd, cmd, arg)`: `arg` is the argument's user memory (`undefined` = NULL). `EBADF`, `ENOTTY`, … */
  async ioctl(fd: number, cmd: number, arg?: Uint8Array): Promise<number> {
    return this.file(fd).ioctl(this, cmd, arg);
  }

  /** Closes every fd; the process can make no further calls. */
  exit(): void {
    if (this.exited) return;
    const files = [...this.fds.values()];
    this.fds.clear();
    this.exited = true;
    for (const f of files) f.put();
  }
}
