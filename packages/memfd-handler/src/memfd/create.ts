/**
 * The memfd syscalls and accessors a process uses: `memfd_create(2)`, reopening a memfd through
 * `/proc/self/fd` (a second file object on the same inode), and read-only views of a memfd's
 * physical pages for tests and reports.
 *
 * `memfdCreate` models the flags `MFD_ALLOW_SEALING`, `MFD_HUGETLB` and `MFD_NOEXEC_SEAL`:
 * without `allowSealing` (or `noExecSeal`) the memfd starts with `F_SEAL_SEAL`, so any later
 * `F_ADD_SEALS` is `EPERM`, exactly like Linux.
 *
 * @module
 */
import { LiveUpdateError, type Process } from "@luo/core";
import { F_SEAL_EXEC, F_SEAL_SEAL, MFD_NAME_MAX_LEN } from "../seals.js";
import { MemfdFile } from "./file.js";
import { memfdFsOf } from "./fs.js";
import { MemfdInode } from "./inode.js";

/** Flags of {@link memfdCreate} (the `MFD_*` flags of `memfd_create(2)`). */
export interface MemfdCreateOptions {
  /** `MFD_ALLOW_SEALING`: start without `F_SEAL_SEAL`, so seals can be added. Default false. */
  readonly allowSealing?: boolean;
  /**
   * `MFD_HUGETLB`: back the memfd with 2 MiB huge pages (hugetlbfs). Such a memfd has no
   * `write()` (`EINVAL`; use a mapping), sizes must be multiples of 2 MiB, and live update
   * does not preserve it (`ENOENT` at PRESERVE_FD). Default false.
   */
  readonly hugetlb?: boolean;
  /**
   * `MFD_NOEXEC_SEAL`: not executable (mode 0666), starts with `F_SEAL_EXEC` and allows sealing.
   * Default false (mode 0777).
   */
  readonly noExecSeal?: boolean;
}

/**
 * `memfd_create(name, flags)`: creates an anonymous memory file in the kernel `proc` runs on and
 * installs it at the lowest free fd, which is returned. Its contents live in the machine's
 * physical pages, allocated as they are first written.
 *
 * @param proc - the calling process
 * @param name - the name (shown as `memfd:<name>`), at most 249 UTF-8 bytes, no NUL
 * @param options - the `MFD_*` flags
 * @throws `LiveUpdateError` `EINVAL` (name too long or with a NUL), `EOPNOTSUPP` (the kernel
 *   was booted without the `memfd()` plugin), `ESHUTDOWN` (the kernel was replaced), `ESRCH`
 *   (the process exited)
 *
 * @example
 * ```ts
 * import { F_ADD_SEALS, F_GET_SEALS, Machine } from "@luo/core";
 * import { F_SEAL_GROW, F_SEAL_SHRINK, formatSeals, memfd, memfdCreate, memfdFile } from "@luo/memfd-handler";
 *
 * const kernel = await new Machine({ memory: "16 MiB" }).boot({ plugins: [memfd()] });
 * const proc = kernel.spawn("vmm");
 * const fd = memfdCreate(proc, "config", { allowSealing: true });
 * proc.write(fd, new TextEncoder().encode('{"vcpus":4}'));
 * proc.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
 * console.log(memfdFile(proc, fd).size(), formatSeals(proc.fcntl(fd, F_GET_SEALS))); // 11 "SHRINK|GROW"
 * ```
 */
export function memfdCreate(proc: Process, name: string, options: MemfdCreateOptions = {}): number {
  if (typeof name !== "string" || name.includes("\0")) {
    throw new LiveUpdateError("EINVAL", `memfd_create: the name must be a string without NUL`);
  }
  const bytes = new TextEncoder().encode(name).length;
  if (bytes > MFD_NAME_MAX_LEN) {
    throw new LiveUpdateError("EINVAL", `memfd_create: name of ${bytes} bytes exceeds ${MFD_NAME_MAX_LEN}`);
  }
  const fs = memfdFsOf(proc);
  const noExec = options.noExecSeal === true;
  let seals = F_SEAL_SEAL;
  if (noExec) seals = F_SEAL_EXEC;
  else if (options.allowSealing) seals = 0;
  const inode = new MemfdInode(fs, {
    name,
    hugetlb: options.hugetlb === true,
    seals,
    executable: !noExec,
  });
  return installMemfd(proc, inode);
}

/**
 * The memfd file object behind `fd`.
 *
 * @throws `LiveUpdateError` `EBADF` (not open), `EINVAL` (not a memfd), `ESHUTDOWN`
 */
export function memfdFile(proc: Process, fd: number): MemfdFile {
  const file = proc.file(fd);
  if (!(file instanceof MemfdFile)) {
    throw new LiveUpdateError("EINVAL", `fd ${fd} (${file.description}) is not a memfd`);
  }
  return file;
}

/**
 * Opens the memfd behind `fd` again, as `open("/proc/self/fd/<fd>", O_RDWR)` does: a new file
 * object (own position, starting at 0) on the same inode, installed at the lowest free fd. Both
 * file objects share contents, size and seals — and the live-update identity, so they cannot
 * both be preserved (`EBUSY`).
 *
 * @throws `LiveUpdateError` `EBADF` (not open), `EINVAL` (not a memfd), `ESHUTDOWN`
 */
export function memfdReopen(proc: Process, fd: number): number {
  const inode = memfdFile(proc, fd).memfd;
  inode.fs.assertActive();
  return installMemfd(proc, inode);
}

/**
 * Where a memfd's contents live: page offset of each folio in the file → physical address of the
 * folio, in file order (holes are absent). A copy; use it to check that a live update handed the
 * pages over instead of copying them.
 *
 * @param file - a memfd file object (see {@link memfdFile})
 */
export function memfdPages(file: MemfdFile): Map<number, bigint> {
  return new Map(file.memfd.folios().map((f) => [f.index, f.phys]));
}

/** Opens a new file object on `inode` in `proc` (dropped again if the fd table is full). */
function installMemfd(proc: Process, inode: MemfdInode): number {
  const file = new MemfdFile(inode);
  try {
    return proc.installFile(file);
  } catch (e) {
    file.put();
    throw e;
  }
}
