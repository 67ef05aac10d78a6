/**
 * The eventfd file type (Linux `fs/eventfd.c`): a 64-bit counter that userspace and drivers use
 * to signal events (a VMM's interrupt lines, a device's completion notifications).
 *
 * Userspace makes one with {@link eventfd} and uses the generic syscalls on {@link Process}:
 * - write: the buffer must hold at least 8 bytes (else `EINVAL`); its first 8 bytes are a
 *   little-endian u64 that is added to the counter; `2^64-1` is `EINVAL`. The counter never goes
 *   past `2^64-2` by a write: a write that would is `EAGAIN` on a non-blocking eventfd and waits
 *   (with {@link Process.writeAsync}) until a read makes room. Returns 8.
 * - read: the buffer must hold at least 8 bytes (else `EINVAL`). With the counter at 0 it is
 *   `EAGAIN` on a non-blocking eventfd and waits (with {@link Process.readAsync}) until a write or
 *   a signal. Otherwise it returns 8 bytes: the counter, which becomes 0, or with
 *   {@link EFD_SEMAPHORE} the value 1, and the counter goes down by one.
 * - The synchronous {@link Process.read} / {@link Process.write} cannot wait: where Linux would
 *   block they fail with `EAGAIN` naming the async call to use instead (a deliberate difference).
 *   Waiting never spins: a waiter is a promise resolved by the write, read or signal that lets it
 *   proceed, in arrival order. A wait ends with `ESHUTDOWN` when the kernel halts and with `EINTR`
 *   when the caller's `AbortSignal` fires (the model of a signal interrupting the syscall).
 * - The file has no position: `lseek` returns 0 whatever its arguments (Linux `noop_llseek`),
 *   `pread`/`pwrite` are `ESPIPE`.
 *
 * In-kernel API (a driver that raises interrupts through a user's eventfd, e.g. vfio's
 * `SET_IRQS`): {@link eventfdCtxFdget} takes a reference on the eventfd behind a user's fd
 * (`EBADF` for a closed fd, `EINVAL` for a file of another type), {@link EventFdFile.signal}
 * adds to the counter from the kernel side (saturating at `2^64-1`, never waiting, waking
 * readers), and `put()` drops the reference when the driver is done.
 *
 * For live-update handlers: {@link EventFdFile.count} and {@link EventFdFile.flags} are the state
 * to capture; {@link EventFdFile.restore} rebuilds an eventfd from them in the next kernel.
 *
 * @module
 */
import { LiveUpdateError } from "../errors.js";
import { KernelFile, type WaitOptions } from "./file.js";
import type { KernelContext } from "./context.js";
import type { Process } from "./process.js";

/** eventfd flag: reads return 1 and decrement the counter (semaphore-like reads). */
export const EFD_SEMAPHORE = 0x1;
/** eventfd flag: reads and writes that would wait fail with `EAGAIN` (`O_NONBLOCK`). */
export const EFD_NONBLOCK = 0o4000;
/** eventfd flag: close-on-exec (`O_CLOEXEC`); accepted and recorded (the model has no exec). */
export const EFD_CLOEXEC = 0o2000000;
/** Every flag {@link eventfd} accepts; any other bit is `EINVAL`. */
export const EFD_FLAGS_SET = EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC;

/** Largest counter value (`ULLONG_MAX`, 2^64-1): reachable only through {@link EventFdFile.signal}. */
export const EVENTFD_COUNT_MAX = 0xffff_ffff_ffff_ffffn;
/** Bytes of an eventfd read or write (one u64). */
export const EVENTFD_VALUE_SIZE = 8;

/** One blocked read or write: `ready` is its wake-up condition, `complete` its effect. */
interface Waiter {
  ready(): boolean;
  complete(): void;
  fail(e: LiveUpdateError): void;
}

const isU64 = (v: unknown): v is bigint => typeof v === "bigint" && v >= 0n && v <= EVENTFD_COUNT_MAX;

function checkFlags(flags: unknown, what: string): number {
  if (typeof flags !== "number" || !Number.isInteger(flags) || flags < 0 || (flags & ~EFD_FLAGS_SET) !== 0) {
    throw new LiveUpdateError("EINVAL", `${what}: flags ${String(flags)} are not a set of EFD_* flags`);
  }
  return flags;
}

function u64Bytes(value: bigint): Uint8Array {
  const out = new Uint8Array(EVENTFD_VALUE_SIZE);
  new DataView(out.buffer).setBigUint64(0, value, true);
  return out;
}

/**
 * An eventfd file object: the counter, the flags and the queue of blocked readers and writers.
 * Made by {@link eventfd} (userspace) or {@link EventFdFile.restore} (a live-update handler).
 */
export class EventFdFile extends KernelFile {
  private counter: bigint;
  private readonly waiters: Waiter[] = [];
  private haltHooked = false;
  private waking = false;

  private constructor(
    count: bigint,
    /** The `EFD_*` flags the eventfd was made with. */
    readonly flags: number,
  ) {
    super();
    this.counter = count;
  }

  /**
   * Rebuilds an eventfd with `count` and `flags` (e.g. in a live-update handler's `retrieve`),
   * holding one reference the caller owns. `EINVAL` if `count` is not a u64 bigint or `flags`
   * has bits outside {@link EFD_FLAGS_SET}.
   */
  static restore(count: bigint, flags: number): EventFdFile {
    if (!isU64(count)) throw new LiveUpdateError("EINVAL", `eventfd: count ${String(count)} is not a u64`);
    return new EventFdFile(count, checkFlags(flags, "eventfd"));
  }

  /** `eventfd:<inode>` (Linux names the anonymous inode `[eventfd]`). */
  get description(): string {
    return `eventfd:${this.inode}`;
  }

  /** The counter (read-only; change it with reads, writes or {@link EventFdFile.signal}). */
  get count(): bigint {
    return this.counter;
  }

  /** True with {@link EFD_SEMAPHORE}. */
  get semaphore(): boolean {
    return (this.flags & EFD_SEMAPHORE) !== 0;
  }

  /** True with {@link EFD_NONBLOCK}. */
  get nonblocking(): boolean {
    return (this.flags & EFD_NONBLOCK) !== 0;
  }

  /** Number of blocked readers and writers. */
  get waiting(): number {
    return this.waiters.length;
  }

  /**
   * Kernel-side signal (`eventfd_signal`): adds `n` (default 1) to the counter, saturating at
   * 2^64-1, and wakes waiting readers; never waits. Returns what was added. `EINVAL` if `n` is
   * not a u64 bigint; `EBADF` on a released eventfd (a driver must hold a reference).
   */
  signal(n: bigint = 1n): bigint {
    if (!isU64(n))
      throw new LiveUpdateError("EINVAL", `${this.description}: signal ${String(n)} is not a u64`);
    if (this.isReleased) throw new LiveUpdateError("EBADF", `${this.description} was already released`);
    const added = n < EVENTFD_COUNT_MAX - this.counter ? n : EVENTFD_COUNT_MAX - this.counter;
    this.counter += added;
    this.wake();
    return added;
  }

  /** False: an eventfd has no position (see the module comment). */
  override get positional(): boolean {
    return false;
  }

  override readAt(_offset: number, length: number): Uint8Array {
    this.checkReadLength(length);
    if (this.counter === 0n) throw this.wouldBlock("read", "readAsync");
    return this.doRead();
  }

  override writeAt(_offset: number, data: Uint8Array): number {
    const value = this.writeValue(data);
    if (!this.canAdd(value)) throw this.wouldBlock("write", "writeAsync");
    return this.doWrite(value);
  }

  override async readWait(
    proc: Process,
    offset: number,
    length: number,
    options?: WaitOptions,
  ): Promise<Uint8Array> {
    this.checkReadLength(length);
    if (this.counter !== 0n || this.nonblocking) return this.readAt(offset, length);
    return this.wait(
      proc,
      options,
      () => this.counter !== 0n,
      () => this.doRead(),
    );
  }

  override async writeWait(
    proc: Process,
    offset: number,
    data: Uint8Array,
    options?: WaitOptions,
  ): Promise<number> {
    const value = this.writeValue(data);
    if (this.canAdd(value) || this.nonblocking) return this.writeAt(offset, data);
    return this.wait(
      proc,
      options,
      () => this.canAdd(value),
      () => this.doWrite(value),
    );
  }

  private checkReadLength(length: number): void {
    if (length < EVENTFD_VALUE_SIZE) {
      throw new LiveUpdateError(
        "EINVAL",
        `${this.description}: read of ${length} bytes, need ${EVENTFD_VALUE_SIZE}`,
      );
    }
  }

  private writeValue(data: Uint8Array): bigint {
    if (!(data instanceof Uint8Array)) {
      throw new LiveUpdateError("EINVAL", `${this.description}: write data is not a Uint8Array`);
    }
    if (data.length < EVENTFD_VALUE_SIZE) {
      throw new LiveUpdateError(
        "EINVAL",
        `${this.description}: write of ${data.length} bytes, need ${EVENTFD_VALUE_SIZE}`,
      );
    }
    const value = new DataView(data.buffer, data.byteOffset, EVENTFD_VALUE_SIZE).getBigUint64(0, true);
    if (value === EVENTFD_COUNT_MAX) {
      throw new LiveUpdateError("EINVAL", `${this.description}: 2^64-1 cannot be written`);
    }
    return value;
  }

  /** Linux: `ULLONG_MAX - count > value` (so a write never reaches 2^64-1). */
  private canAdd(value: bigint): boolean {
    return EVENTFD_COUNT_MAX - this.counter > value;
  }

  private wouldBlock(op: "read" | "write", async: string): LiveUpdateError {
    const why = op === "read" ? "the counter is 0" : `the counter ${this.counter} has no room`;
    return new LiveUpdateError(
      "EAGAIN",
      this.nonblocking
        ? `${this.description}: ${op} would block (${why})`
        : `${this.description}: ${op} would block (${why}); use Process.${async} to wait`,
    );
  }

  private doRead(): Uint8Array {
    const value = this.semaphore ? 1n : this.counter;
    this.counter -= value;
    this.wake();
    return u64Bytes(value);
  }

  private doWrite(value: bigint): number {
    this.counter += value;
    this.wake();
    return EVENTFD_VALUE_SIZE;
  }

  /**
   * Queues a waiter until `ready()`; then `run()` is its effect, done at the moment the
   * condition holds (as under the kernel's wait-queue lock), and its result resolves the promise.
   */
  private wait<T>(
    proc: Process,
    options: WaitOptions | undefined,
    ready: () => boolean,
    run: () => T,
  ): Promise<T> {
    const signal = options?.signal;
    if (signal?.aborted) {
      return Promise.reject(new LiveUpdateError("EINTR", `${this.description}: wait interrupted`));
    }
    this.hookHalt(proc.kernel);
    this.get(); // a blocked syscall holds the file, as fdget does
    return new Promise<T>((resolve, reject) => {
      const onAbort = (): void =>
        this.dropWaiter(waiter, new LiveUpdateError("EINTR", `${this.description}: wait interrupted`));
      const done = (): void => {
        signal?.removeEventListener("abort", onAbort);
        this.put();
      };
      const waiter: Waiter = {
        ready,
        complete: () => {
          const result = run();
          done();
          resolve(result);
        },
        fail: (e) => {
          done();
          reject(e);
        },
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  private dropWaiter(waiter: Waiter, e: LiveUpdateError): void {
    const i = this.waiters.indexOf(waiter);
    if (i < 0) return;
    this.waiters.splice(i, 1);
    waiter.fail(e);
  }

  /**
   * Completes every waiter whose condition holds, in arrival order, until none can proceed. A
   * completing waiter changes the counter and calls back here; that nested call only rescans
   * from the front after it returns, so waiters resolve in the order they complete.
   */
  private wake(): void {
    if (this.waking) return;
    this.waking = true;
    try {
      for (let i = 0; i < this.waiters.length;) {
        const w = this.waiters[i]!;
        if (!w.ready()) {
          i++;
          continue;
        }
        this.waiters.splice(i, 1);
        w.complete();
        i = 0;
      }
    } finally {
      this.waking = false;
    }
  }

  private hookHalt(kernel: KernelContext): void {
    if (this.haltHooked) return;
    this.haltHooked = true;
    kernel.onHalt((e) => {
      for (const w of this.waiters.splice(0)) w.fail(e);
    });
  }
}

/**
 * `eventfd(initval, flags)`: makes an eventfd in `proc` with the counter at `initval` (a u32, as
 * the syscall takes) and returns its fd. Flags: {@link EFD_SEMAPHORE}, {@link EFD_NONBLOCK},
 * {@link EFD_CLOEXEC}. Errors: `EINVAL` for another flag bit or an `initval` that is not an
 * integer in `[0, 2^32-1]`; `ESHUTDOWN` on a halted kernel; `ESRCH` for an exited process.
 */
export function eventfd(proc: Process, initval = 0, flags = 0): number {
  if (typeof initval !== "number" || !Number.isInteger(initval) || initval < 0 || initval > 0xffff_ffff) {
    throw new LiveUpdateError("EINVAL", `eventfd: initval ${String(initval)} is not a u32`);
  }
  const file = EventFdFile.restore(BigInt(initval), checkFlags(flags, "eventfd"));
  return proc.installFile(file);
}

/**
 * The eventfd behind `fd` in `proc`, without a new reference (for reading its state). `EBADF`
 * if `fd` is not open, `EINVAL` if it is not an eventfd.
 */
export function eventfdFile(proc: Process, fd: number): EventFdFile {
  const file = proc.file(fd);
  if (!(file instanceof EventFdFile)) {
    throw new LiveUpdateError("EINVAL", `fd ${fd} of ${proc.name} is ${file.description}, not an eventfd`);
  }
  return file;
}

/**
 * `eventfd_ctx_fdget`: takes a reference on the eventfd behind a user's `fd`, for a driver that
 * signals it later; drop it with `put()`. `EBADF` if `fd` is not open, `EINVAL` if it is not an
 * eventfd.
 */
export function eventfdCtxFdget(proc: Process, fd: number): EventFdFile {
  return eventfdFile(proc, fd).get();
}
