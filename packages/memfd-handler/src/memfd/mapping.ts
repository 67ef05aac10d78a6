/**
 * Shared mappings of a memfd (`mmap(MAP_SHARED)`), reduced to what the seal and live-update rules
 * need: loads and stores go straight to the memfd's physical pages (stores fault holes in), a
 * writable mapping blocks `F_SEAL_WRITE` (`EBUSY`) for as long as it exists, and a write-sealed
 * memfd cannot get a new writable mapping (`EPERM`; `F_SEAL_FUTURE_WRITE` leaves existing ones
 * working). A mapping holds a reference on its file object (the kernel's `vm_file`) until
 * {@link MemfdMapping.unmap}.
 *
 * Simplifications: mappings are not tied to a process's address space (process exit does not
 * unmap them), and any access past the end of the file is `EFAULT` (Linux raises SIGBUS only for
 * pages wholly past the end). Stores keep working while the memfd is preserved, like a running
 * VM's stores to guest RAM.
 *
 * @module
 */
import { LiveUpdateError, MAX_FILE_OFFSET, type Process } from "@luo/core";
import { MemfdFile } from "./file.js";

/** Arguments of {@link memfdMmap}. */
export interface MemfdMmapOptions {
  /** File offset of the mapping: a multiple of the folio size (4 KiB; 2 MiB for hugetlb). Default 0. */
  readonly offset?: number;
  /** Length of the mapping in bytes (> 0). */
  readonly length: number;
  /** Map writable (`PROT_READ | PROT_WRITE`); default read-only. */
  readonly write?: boolean;
}

/** A shared mapping of a memfd (see the module comment). Made by {@link memfdMmap}. */
export class MemfdMapping {
  #file: MemfdFile | undefined;

  /**
   * Use {@link memfdMmap}; this constructor does no seal checks.
   *
   * @param file - the mapped file object (the mapping takes its own reference)
   * @param offset - file offset of the first mapped byte
   * @param length - mapped bytes
   * @param writable - whether stores are allowed
   */
  constructor(
    file: MemfdFile,
    readonly offset: number,
    readonly length: number,
    readonly writable: boolean,
  ) {
    this.#file = file.get();
  }

  /** The mapped file object, or undefined after {@link MemfdMapping.unmap}. */
  get file(): MemfdFile | undefined {
    return this.#file;
  }

  private target(offset: number, length: number, what: string): MemfdFile {
    const file = this.#file;
    if (!file) throw new LiveUpdateError("EFAULT", `${what} through an unmapped mapping`);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new LiveUpdateError("EFAULT", `${what} at ${offset}+${length}: bad range`);
    }
    if (offset + length > this.length) {
      throw new LiveUpdateError(
        "EFAULT",
        `${what} at ${offset}+${length} lies outside the ${this.length}-byte mapping of ${file.description}`,
      );
    }
    return file;
  }

  /**
   * Loads `length` bytes at `offset` within the mapping (holes read as zeros).
   * `EFAULT` outside the mapping or past the end of the file, `ESHUTDOWN` after the kernel went away.
   */
  read(offset: number, length: number): Uint8Array {
    return this.target(offset, length, "load").memfd.loadMapped(this.offset + offset, length);
  }

  /**
   * Stores `data` at `offset` within the mapping. `EFAULT` for a read-only mapping, outside the
   * mapping or past the end of the file; `ENOMEM` when a hole cannot be faulted in.
   */
  write(offset: number, data: Uint8Array): void {
    const file = this.target(offset, data.length, "store");
    if (!this.writable)
      throw new LiveUpdateError("EFAULT", `store through a read-only mapping of ${file.description}`);
    file.memfd.storeMapped(this.offset + offset, data);
  }

  /** `munmap`: drops the mapping and its file reference. Idempotent. */
  unmap(): void {
    const file = this.#file;
    if (!file) return;
    this.#file = undefined;
    file.memfd.unmapShared(this.writable);
    file.put();
  }
}

/**
 * `mmap(NULL, length, PROT_READ[|PROT_WRITE], MAP_SHARED, fd, offset)` of a memfd.
 *
 * @throws `LiveUpdateError` `EBADF` (fd not open), `ENODEV` (not a memfd), `EINVAL`
 *   (length not positive, offset not folio-aligned or negative), `EPERM` (writable mapping of a
 *   memfd sealed with `F_SEAL_WRITE` or `F_SEAL_FUTURE_WRITE`), `ESHUTDOWN`
 */
export function memfdMmap(proc: Process, fd: number, options: MemfdMmapOptions): MemfdMapping {
  const file = proc.file(fd);
  if (!(file instanceof MemfdFile)) {
    throw new LiveUpdateError("ENODEV", `mmap: fd ${fd} (${file.description}) is not a memfd`);
  }
  const offset = options.offset ?? 0;
  const { length } = options;
  const align = file.memfd.folioBytes;
  if (!Number.isSafeInteger(length) || length <= 0) {
    throw new LiveUpdateError("EINVAL", `mmap: bad length ${String(length)}`);
  }
  if (
    !Number.isSafeInteger(offset) ||
    offset < 0 ||
    offset % align !== 0 ||
    offset + length > MAX_FILE_OFFSET
  ) {
    throw new LiveUpdateError("EINVAL", `mmap: offset ${String(offset)} is not a multiple of ${align}`);
  }
  const writable = options.write === true;
  file.memfd.mapShared(writable);
  return new MemfdMapping(file, offset, length, writable);
}
