/**
 * Reading and writing ioctl arguments in user memory (`Uint8Array`, little-endian), with the
 * kernel's answers: a NULL or too short buffer is `EFAULT`; an `argsz` below the struct's
 * minimum is `EINVAL` (`copy_from_user` of `minsz`, then the `argsz < minsz` check).
 *
 * @module
 */
import { LiveUpdateError } from "@luo/core";

/** A DataView over `arg`, `EFAULT` when it is missing or shorter than `need` bytes. */
export function userView(arg: Uint8Array | undefined, need: number, what: string): DataView {
  if (!arg || arg.length < need) {
    throw new LiveUpdateError("EFAULT", `${what}: bad address (need ${need} bytes of argument)`);
  }
  return new DataView(arg.buffer, arg.byteOffset, arg.length);
}

/** The struct's `argsz` (u32 at 0), checked against `minsz` (`EINVAL`); the view of the struct. */
export function argszView(
  arg: Uint8Array | undefined,
  minsz: number,
  what: string,
): { dv: DataView; argsz: number } {
  const dv = userView(arg, minsz, what);
  const argsz = dv.getUint32(0, true);
  if (argsz < minsz) throw new LiveUpdateError("EINVAL", `${what}: argsz ${argsz} is below ${minsz}`);
  return { dv, argsz };
}

/** An `int` argument (4 bytes). */
export function userInt(arg: Uint8Array | undefined, what: string): number {
  return userView(arg, 4, what).getInt32(0, true);
}

/** A NUL-terminated string argument. `EFAULT` without a NUL. */
export function userString(arg: Uint8Array | undefined, what: string): string {
  if (!arg) throw new LiveUpdateError("EFAULT", `${what}: bad address`);
  const end = arg.indexOf(0);
  if (end < 0) throw new LiveUpdateError("EFAULT", `${what}: string is not NUL-terminated`);
  return new TextDecoder().decode(arg.subarray(0, end));
}
