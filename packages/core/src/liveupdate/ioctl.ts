/**
 * The raw ioctl ABI of /dev/liveupdate and session fds (`include/uapi/linux/liveupdate.h`).
 *
 * The handle methods (`createSession`, `preserveFd`, …) are the convenient API; this module is
 * the byte-level one, for tests and tools that want the kernel's exact envelope. `arg` models the
 * user memory the pointer refers to: reading or writing past its end is `EFAULT`, `undefined` is
 * a NULL pointer. Dispatch follows the kernel:
 * command number outside the device's table → `EINVAL`; the leading `u32 size` unreadable →
 * `EFAULT`; command value not the table's (`_IO(0xBA, nr)`) → `ENOTTY`; session fds: wrong
 * session kind → `EINVAL`; `size` below the op's minimum → `EINVAL`; extensible-struct copy-in
 * (bytes beyond the kernel struct must be zero → `E2BIG`); run; copy back
 * `min(size, struct size)` bytes. CREATE/GET_NAME name rules: 1..63 bytes before the first NUL
 * (`EINVAL`); GET_NAME's `reserved` must be 0 (`EINVAL`); FINISH's is not checked (Q9).
 *
 * @module
 */
import { LiveUpdateError } from "../errors.js";
import { decodeUtf8, writeSessionName } from "../abi/index.js";
import type { KernelFile, Process } from "../kernel/index.js";
import type { LiveUpdate } from "./core.js";
import type { Session } from "./session.js";

/**
 * ioctl type byte of live update (`LIVEUPDATE_IOCTL_TYPE`).
 *
 * @category Sessions
 */
export const LIVEUPDATE_IOCTL_TYPE = 0xba;

/** `_IO(LIVEUPDATE_IOCTL_TYPE, nr)`: no direction or size bits, as in the uapi header. */
const io = (nr: number): number => (LIVEUPDATE_IOCTL_TYPE << 8) | nr;

/**
 * `LIVEUPDATE_IOCTL_CREATE_SESSION` = `_IO(0xBA, 0x00)`.
 *
 * @category Sessions
 */
export const LIVEUPDATE_IOCTL_CREATE_SESSION = io(0x00);
/**
 * `LIVEUPDATE_IOCTL_RETRIEVE_SESSION` = `_IO(0xBA, 0x01)`.
 *
 * @category Sessions
 */
export const LIVEUPDATE_IOCTL_RETRIEVE_SESSION = io(0x01);
/**
 * `LIVEUPDATE_SESSION_PRESERVE_FD` = `_IO(0xBA, 0x40)`.
 *
 * @category Sessions
 */
export const LIVEUPDATE_SESSION_PRESERVE_FD = io(0x40);
/**
 * `LIVEUPDATE_SESSION_RETRIEVE_FD` = `_IO(0xBA, 0x41)`.
 *
 * @category Sessions
 */
export const LIVEUPDATE_SESSION_RETRIEVE_FD = io(0x41);
/**
 * `LIVEUPDATE_SESSION_FINISH` = `_IO(0xBA, 0x42)`.
 *
 * @category Sessions
 */
export const LIVEUPDATE_SESSION_FINISH = io(0x42);
/**
 * `LIVEUPDATE_SESSION_GET_NAME` = `_IO(0xBA, 0x43)`.
 *
 * @category Sessions
 */
export const LIVEUPDATE_SESSION_GET_NAME = io(0x43);

/**
 * Byte sizes of the ioctl argument structs (all minimum sizes equal the full size).
 *
 * @category Sessions
 */
export const LIVEUPDATE_STRUCT_SIZE = {
  /** `{u32 size; s32 fd; u8 name[64]}` for CREATE and RETRIEVE_SESSION. */
  session: 72,
  /** `{u32 size; s32 fd; u64 token}` for PRESERVE_FD and RETRIEVE_FD. */
  fd: 16,
  /** `{u32 size; u32 reserved}` for FINISH. */
  finish: 8,
  /** `{u32 size; u32 reserved; u8 name[64]}` for GET_NAME. */
  getName: 72,
} as const;

/** Reads `length` bytes of user memory at `offset`; `EFAULT` past the end. */
function userBytes(arg: Uint8Array | undefined, offset: number, length: number): Uint8Array {
  if (!arg || offset + length > arg.length) {
    throw new LiveUpdateError("EFAULT", `ioctl argument: bad address (need ${offset + length} bytes)`);
  }
  return arg.subarray(offset, offset + length);
}

/** The struct's leading `u32 size` (user memory); `EFAULT` when unreadable. */
function userSize(arg: Uint8Array | undefined): number {
  const b = userBytes(arg, 0, 4);
  return new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true);
}

/** The common envelope: size read, command check, size check, extensible copy-in. */
function copyIn(
  arg: Uint8Array | undefined,
  cmd: number,
  expected: number,
  ksize: number,
  typeCheck?: () => void,
): Uint8Array {
  const size = userSize(arg);
  if (cmd !== expected) {
    throw new LiveUpdateError("ENOTTY", `ioctl 0x${cmd.toString(16)} is not 0x${expected.toString(16)}`);
  }
  typeCheck?.();
  if (size < ksize)
    throw new LiveUpdateError("EINVAL", `ioctl 0x${cmd.toString(16)}: size ${size} < ${ksize}`);
  const user = userBytes(arg, 0, size);
  for (let i = ksize; i < size; i++) {
    if (user[i] !== 0)
      throw new LiveUpdateError("E2BIG", `ioctl 0x${cmd.toString(16)}: non-zero byte ${i} past the struct`);
  }
  return user.slice(0, ksize);
}

function copyOut(arg: Uint8Array | undefined, kstruct: Uint8Array): void {
  const size = userSize(arg);
  userBytes(arg, 0, Math.min(size, kstruct.length)).set(kstruct.subarray(0, Math.min(size, kstruct.length)));
}

function nameOf(k: Uint8Array, offset: number, validate: boolean): string | undefined {
  const field = k.subarray(offset, offset + 64);
  const end = field.indexOf(0);
  const len = end < 0 ? 64 : end;
  if (validate && (len === 0 || len === 64)) {
    throw new LiveUpdateError("EINVAL", `session name must be 1..63 bytes followed by NUL (got ${len})`);
  }
  const name = decodeUtf8(field.subarray(0, len));
  if (name === undefined && validate) throw new LiveUpdateError("EINVAL", "session name is not valid UTF-8");
  return name;
}

/**
 * Opens a session file for the caller (given by device.ts, which owns the file classes).
 *
 * @category Sessions
 */
export type SessionFileFactory = (luo: LiveUpdate, session: Session) => KernelFile;

/**
 * ioctl on /dev/liveupdate: CREATE_SESSION and RETRIEVE_SESSION. Returns 0 and writes the new fd
 * into the struct. Errors: see the module comment, then the operation's own.
 */
export async function deviceIoctl(
  luo: LiveUpdate,
  proc: Process,
  cmd: number,
  arg: Uint8Array | undefined,
  open: SessionFileFactory,
): Promise<number> {
  const nr = cmd & 0xff;
  if (nr > 0x01)
    throw new LiveUpdateError("EINVAL", `/dev/liveupdate has no ioctl number 0x${nr.toString(16)}`);
  const k = copyIn(arg, cmd, io(nr), LIVEUPDATE_STRUCT_SIZE.session);
  let session: Session;
  if (nr === 0x00) {
    session = await luo.createSession(nameOf(k, 8, true)!);
  } else {
    const name = nameOf(k, 8, false);
    if (name === undefined)
      throw new LiveUpdateError("ENOENT", "no incoming session with that (non-UTF-8) name");
    session = await luo.retrieveSession(name);
  }
  const file = open(luo, session);
  const fd = proc.installFile(file);
  new DataView(k.buffer, k.byteOffset).setInt32(4, fd, true);
  try {
    copyOut(arg, k);
  } catch (e) {
    // The kernel drops the file (running its release) and gives the fd back.
    proc.close(fd);
    throw e;
  }
  return 0;
}

/**
 * ioctl on a session fd: PRESERVE_FD, RETRIEVE_FD, FINISH, GET_NAME. Returns 0 and fills the
 * output fields. Errors: see the module comment, then the operation's own.
 */
export async function sessionIoctl(
  luo: LiveUpdate,
  session: Session,
  proc: Process,
  cmd: number,
  arg: Uint8Array | undefined,
): Promise<number> {
  const nr = cmd & 0xff;
  if (nr < 0x40 || nr > 0x43)
    throw new LiveUpdateError("EINVAL", `session fds have no ioctl number 0x${nr.toString(16)}`);
  const kind = nr === 0x40 ? "outgoing" : nr === 0x43 ? undefined : "incoming";
  const typeCheck = (): void => {
    if (kind !== undefined && session.kind !== kind) {
      throw new LiveUpdateError(
        "EINVAL",
        `ioctl 0x${cmd.toString(16)} needs an ${kind} session; "${session.name}" is ${session.kind}`,
      );
    }
  };
  const ksize = [
    LIVEUPDATE_STRUCT_SIZE.fd,
    LIVEUPDATE_STRUCT_SIZE.fd,
    LIVEUPDATE_STRUCT_SIZE.finish,
    LIVEUPDATE_STRUCT_SIZE.getName,
  ][nr - 0x40]!;
  const k = copyIn(arg, cmd, io(nr), ksize, typeCheck);
  const dv = new DataView(k.buffer, k.byteOffset, k.byteLength);
  switch (nr) {
    case 0x40:
      await luo.preserveFd(session, proc, dv.getInt32(4, true), dv.getBigUint64(8, true));
      break;
    case 0x41: {
      const file = await luo.retrieveFile(session, dv.getBigUint64(8, true));
      const fd = proc.installFile(file);
      dv.setInt32(4, fd, true);
      try {
        copyOut(arg, k);
      } catch (e) {
        proc.close(fd); // LUO keeps its own reference and the retrieved state
        throw e;
      }
      return 0;
    }
    case 0x42:
      await luo.finish(session);
      break;
    default: {
      if (dv.getUint32(4, true) !== 0)
        throw new LiveUpdateError("EINVAL", "GET_NAME: reserved field must be 0");
      const name = await luo.getName(session);
      k.fill(0, 8);
      writeSessionName(k, 8, name);
      break;
    }
  }
  copyOut(arg, k);
  return 0;
}
