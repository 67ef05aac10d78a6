/**
 * The core character devices every kernel has: `/dev/null` and `/dev/zero` (`drivers/char/mem.c`).
 *
 * Happy paths, as Linux: `/dev/null` reads end of file (0 bytes) and swallows every write (the
 * whole count is reported written); `/dev/zero` reads as many zero bytes as asked (at most
 * {@link MAX_RW_COUNT} per call, the kernel's cap on one read) and swallows writes. `read`/`pread`
 * and `write`/`pwrite` behave alike (no file position matters), and `lseek` returns 0 whatever
 * its arguments. Each open is a new file object on the device's one inode.
 *
 * Unhappy paths: `ftruncate` is `EINVAL`, `fallocate` `ENODEV` (not a regular file), `ioctl`
 * `ENOTTY`, seals `EINVAL`. No LUO handler accepts these files, so `PRESERVE_FD` of an fd of
 * `/dev/null` fails with `ENOENT` and changes nothing.
 *
 * @module
 */
import { LiveUpdateError } from "../errors.js";
import type { KernelContext } from "./context.js";
import { KernelFile, allocInode } from "./file.js";

/** Path of the null device. */
export const DEV_NULL_PATH = "/dev/null";
/** Path of the zero device. */
export const DEV_ZERO_PATH = "/dev/zero";
/** Most bytes one read returns (Linux `MAX_RW_COUNT`: `INT_MAX` rounded down to a page). */
export const MAX_RW_COUNT = 0x7ffff000;

/** What the two devices share: swallowed writes, `lseek` always 0, no size, no fallocate. */
abstract class MemCharDevice extends KernelFile {
  override writeAt(_offset: number, data: Uint8Array): number {
    return data.length;
  }

  /** `lseek` on these devices always returns 0 (Linux `null_lseek`). */
  override llseek(): number {
    this.pos = 0;
    return 0;
  }

  override fallocate(): void {
    throw new LiveUpdateError("ENODEV", `${this.description} is not a regular file (fallocate)`);
  }
}

/** An open `/dev/null`: reads end of file, swallows writes. */
export class NullDevice extends MemCharDevice {
  /** `chardev:/dev/null`. */
  get description(): string {
    return `chardev:${DEV_NULL_PATH}`;
  }

  override readAt(): Uint8Array {
    return new Uint8Array(0);
  }
}

/** An open `/dev/zero`: reads zeros, swallows writes. */
export class ZeroDevice extends MemCharDevice {
  /** `chardev:/dev/zero`. */
  get description(): string {
    return `chardev:${DEV_ZERO_PATH}`;
  }

  override readAt(_offset: number, length: number): Uint8Array {
    return new Uint8Array(Math.min(length, MAX_RW_COUNT));
  }
}

/** Registers `/dev/null` and `/dev/zero` on `kernel` (done by every kernel at boot). */
export function registerCharDevices(kernel: KernelContext): void {
  const nullInode = allocInode();
  const zeroInode = allocInode();
  kernel.registerDevice(DEV_NULL_PATH, () => new NullDevice(nullInode));
  kernel.registerDevice(DEV_ZERO_PATH, () => new ZeroDevice(zeroInode));
}
