/**
 * The memfd file object (`struct file` of a shmem or hugetlbfs inode): the kernel-file face of a
 * {@link MemfdInode}. It owns only the file position; contents, size and seals are the inode's,
 * shared with every other file object of the same memfd (see `memfdReopen`). The core's generic
 * syscalls (`read`, `write`, `pread`, `pwrite`, `lseek`, `ftruncate`, `fallocate`, `fcntl` seals)
 * dispatch here. The file's identity for live update is the inode number, so two file objects
 * or fds of one memfd cannot both be preserved. Releasing the last file object frees the pages.
 *
 * @module
 */
import { KernelFile } from "@luo/core";
import type { MemfdInode } from "./inode.js";

/** A memfd file object. */
export class MemfdFile extends KernelFile {
  /** The inode: contents, size, seals. */
  readonly memfd: MemfdInode;

  /**
   * Opens a new file object on `memfd` (position 0, one reference).
   *
   * @param memfd - the inode
   */
  constructor(memfd: MemfdInode) {
    super(memfd.ino); // the identity for live update: shared by every file object of the memfd
    this.memfd = memfd;
    memfd.openFile();
  }

  /** `memfd:<name>`, as `/proc/<pid>/fd` shows it. */
  get description(): string {
    return `memfd:${this.memfd.name}`;
  }

  /** True for a hugetlbfs-backed memfd (`MFD_HUGETLB`). */
  get hugetlb(): boolean {
    return this.memfd.hugetlb;
  }

  protected override release(): void {
    this.memfd.closeFile();
  }

  /** Reads up to `length` bytes at `offset` (holes read as zeros; stops at the end). */
  override readAt(offset: number, length: number): Uint8Array {
    return this.memfd.read(offset, length);
  }

  /** Writes `data` at `offset`. `EPERM` (seals, frozen), `EINVAL` (hugetlb), `EFBIG`, `ENOMEM`. */
  override writeAt(offset: number, data: Uint8Array): number {
    return this.memfd.write(offset, data);
  }

  /** The file size. */
  override size(): number {
    return this.memfd.size;
  }

  /** Sets the size. `EPERM` (seals, frozen), `EINVAL` (hugetlb alignment). */
  override truncate(length: number): void {
    this.memfd.truncate(length);
  }

  /** Allocates or punches a range. `EPERM` (seals, frozen), `EFBIG`, `ENOMEM`. */
  override fallocate(mode: number, offset: number, length: number): void {
    this.memfd.fallocate(mode, offset, length);
  }

  /** `F_GET_SEALS`. */
  override getSeals(): number {
    return this.memfd.seals;
  }

  /** `F_ADD_SEALS`. `EINVAL` (unknown bits), `EPERM` (`F_SEAL_SEAL`), `EBUSY` (mappings, pins). */
  override addSeals(seals: number): void {
    this.memfd.addSeals(seals);
  }
}
