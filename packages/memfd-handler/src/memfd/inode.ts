/**
 * The memfd inode (shmem's `shmem_inode_info`, or hugetlbfs's for `MFD_HUGETLB`): the contents
 * as a sparse table of folios in the machine's physical pages, the size, the seals, and the
 * live-update "frozen mapping" state. Every file object of one memfd shares its inode.
 *
 * Contents: folio `n` covers bytes `[n·F, (n+1)·F)` with `F` = 4 KiB (shmem, order-0 folios) or
 * 2 MiB (hugetlb, order-9 folios). Folios are allocated on the first write, fallocate or store
 * through a mapping, zeroed; a missing folio is a hole and reads as zeros. Truncating down frees
 * the folios past the end and zeroes the tail of the last one; punching a hole frees the folios
 * it covers and zeroes the partial ones. The last file reference frees every folio.
 *
 * Rules (Linux `mm/shmem.c`, `mm/memfd.c`, `fs/hugetlbfs`), every one `EPERM` unless noted:
 * - write / pwrite: `F_SEAL_WRITE` or `F_SEAL_FUTURE_WRITE`; past the end with `F_SEAL_GROW` or
 *   while frozen; a hugetlb memfd has no write (`EINVAL`); past the largest offset `EFBIG`.
 * - ftruncate: shrinking with `F_SEAL_SHRINK`, growing with `F_SEAL_GROW`, any change while
 *   frozen; hugetlb sizes must be multiples of 2 MiB (`EINVAL`).
 * - fallocate: anything while frozen; punch-hole with `F_SEAL_WRITE`/`F_SEAL_FUTURE_WRITE`;
 *   allocating past the end with `F_SEAL_GROW`.
 * - F_ADD_SEALS: unknown bits `EINVAL`; `F_SEAL_SEAL` set (always, unless created with
 *   `allowSealing`); adding `F_SEAL_WRITE` while a writable shared mapping exists or pages are
 *   pinned → `EBUSY`. `F_SEAL_EXEC` on an executable memfd implies SHRINK|GROW|WRITE|FUTURE_WRITE.
 * Simplification: a write that would be refused part-way (e.g. crossing the end under
 * `F_SEAL_GROW`) is refused as a whole; Linux writes the pages before the offending one first.
 *
 * Frozen (shmem's `SHMEM_F_MAPPING_FROZEN`) is set while the memfd is preserved for a live
 * update: the size and the set of folios cannot change, writes inside the file still land in
 * the same physical pages — which is how the contents are captured at reboot, not at preserve.
 *
 * @module
 */
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  LiveUpdateError,
  MAX_FILE_OFFSET,
  MAX_ORDER,
  PAGE_SIZE,
  allocInode,
} from "@luo/core";
import {
  F_ALL_SEALS,
  F_SEAL_EXEC,
  F_SEAL_FUTURE_WRITE,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
} from "../seals.js";
import type { MemfdFs } from "./fs.js";

/** How an inode starts (see `memfdCreate`). */
export interface MemfdInodeOptions {
  /** The memfd name (without the `memfd:` prefix). */
  readonly name: string;
  /** hugetlbfs-backed: 2 MiB folios, no `write()`. */
  readonly hugetlb: boolean;
  /** Initial seals. */
  readonly seals: number;
  /** Whether the exec permission bits are set (mode 0777, else 0666). */
  readonly executable: boolean;
}

/** One folio of a memfd: its page offset in the file and where it lives. */
export interface MemfdFolio {
  /** Page offset of the folio's first byte in the file (the kernel's folio `index`). */
  readonly index: number;
  /** Physical address of the folio's first page. */
  readonly phys: bigint;
}

const WRITE_SEALS = F_SEAL_WRITE | F_SEAL_FUTURE_WRITE;

/** The shared state of one memfd (see the module comment). */
export class MemfdInode {
  /** Inode number: the memfd's identity (shared by every file object of it). */
  readonly ino: number = allocInode();
  /** The memfd name. */
  readonly name: string;
  /** hugetlbfs-backed. */
  readonly hugetlb: boolean;
  /** Order of every folio: 0 (4 KiB) or {@link MAX_ORDER} (2 MiB, hugetlb). */
  readonly folioOrder: number;
  /** Bytes per folio. */
  readonly folioBytes: number;
  #size = 0;
  #seals: number;
  #executable: boolean;
  #frozen = false;
  #pins = 0;
  #writableMappings = 0;
  #files = 0;
  #released = false;
  /** Folio number → physical address. */
  readonly #folios = new Map<number, bigint>();
  /** DMA pins per folio (by physical address), from {@link MemfdInode.pinRange}. */
  readonly #dmaPins = new Map<bigint, number>();
  /** Folios dropped from the file while DMA-pinned: freed when their last pin goes. */
  readonly #orphans = new Set<bigint>();

  /**
   * @param fs - the kernel's memfd filesystem (machine, accounting)
   * @param options - name, hugetlb, initial seals, exec bits
   */
  constructor(
    readonly fs: MemfdFs,
    options: MemfdInodeOptions,
  ) {
    this.name = options.name;
    this.hugetlb = options.hugetlb;
    this.folioOrder = options.hugetlb ? MAX_ORDER : 0;
    this.folioBytes = PAGE_SIZE << this.folioOrder;
    this.#seals = options.seals;
    this.#executable = options.executable;
  }

  /** `memfd:<name>` as Linux shows it, with the inode number. */
  get description(): string {
    return `memfd:${this.name} (inode ${this.ino})`;
  }

  /** Size in bytes (`i_size`). */
  get size(): number {
    return this.#size;
  }

  /** Current seals (`F_GET_SEALS`). */
  get seals(): number {
    return this.#seals;
  }

  /** Folios in file order. */
  folios(): MemfdFolio[] {
    return [...this.#folios.keys()]
      .sort((a, b) => a - b)
      .map((n) => ({ index: n << this.folioOrder, phys: this.#folios.get(n)! }));
  }

  // ---------------------------------------------------------------- references

  /** A file object was opened on this inode. */
  openFile(): void {
    this.#files++;
  }

  /** A file object was released; the last one frees every folio. */
  closeFile(): void {
    if (this.#files > 0) this.#files--;
    if (this.#files === 0 && !this.#released) {
      this.#released = true;
      for (const phys of this.#folios.values()) this.#drop(phys);
      this.#folios.clear();
    }
  }

  // ---------------------------------------------------------------- byte access

  private fail(code: "EPERM" | "EINVAL" | "EFBIG" | "EBUSY" | "EFAULT", what: string): never {
    throw new LiveUpdateError(code, `${this.description}: ${what}`);
  }

  /** Calls `fn(folio, offsetInFolio, offsetInRange, length)` for each folio piece of `[start, end)`. */
  private pieces(
    start: number,
    end: number,
    fn: (n: number, inFolio: number, at: number, len: number) => void,
  ): void {
    const fb = this.folioBytes;
    for (let pos = start; pos < end;) {
      const n = Math.floor(pos / fb);
      const inFolio = pos - n * fb;
      const len = Math.min(fb - inFolio, end - pos);
      fn(n, inFolio, pos - start, len);
      pos += len;
    }
  }

  /**
   * Allocates every missing folio of `[start, end)`; on failure frees the ones it allocated.
   * Every caller has checked `fs.assertActive()` already (`ESHUTDOWN` comes from there).
   */
  private populate(start: number, end: number): void {
    if (end <= start) return;
    const fb = this.folioBytes;
    const added: number[] = [];
    let what: string | undefined;
    try {
      for (let n = Math.floor(start / fb), last = Math.ceil(end / fb); n < last; n++) {
        if (this.#folios.has(n)) continue;
        what ??= this.description;
        this.#folios.set(n, this.fs.allocFolio(this.folioOrder, what));
        added.push(n);
      }
    } catch (e) {
      for (const n of added) {
        this.fs.freeFolio(this.#folios.get(n)!, this.folioOrder);
        this.#folios.delete(n);
      }
      throw e;
    }
  }

  /** Copies `[offset, offset + length)` out (holes as zeros), ignoring the size. */
  private copyOut(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    const machine = this.fs.machine;
    this.pieces(offset, offset + length, (n, inFolio, at, len) => {
      const phys = this.#folios.get(n);
      if (phys !== undefined) out.set(machine.view(phys + BigInt(inFolio), len), at);
    });
    return out;
  }

  /** Copies `data` in at `offset`, allocating folios first (all or nothing), ignoring the size. */
  private copyIn(offset: number, data: Uint8Array): void {
    this.populate(offset, offset + data.length);
    const machine = this.fs.machine;
    this.pieces(offset, offset + data.length, (n, inFolio, at, len) => {
      machine.view(this.#folios.get(n)! + BigInt(inFolio), len).set(data.subarray(at, at + len));
    });
  }

  /** Zeroes `[start, end)` inside existing folios (holes stay holes). */
  private zeroRange(start: number, end: number): void {
    const machine = this.fs.machine;
    this.pieces(start, end, (n, inFolio, _at, len) => {
      const phys = this.#folios.get(n);
      if (phys !== undefined) machine.zero(phys + BigInt(inFolio), len);
    });
  }

  /** Frees the folios wholly inside `[start, end)` and zeroes the partial ones (punch / truncate). */
  private discard(start: number, end: number): void {
    const fb = this.folioBytes;
    const firstWhole = Math.ceil(start / fb);
    const lastWhole = Math.floor(end / fb); // exclusive
    if (firstWhole >= lastWhole) {
      this.zeroRange(start, end);
      return;
    }
    this.zeroRange(start, firstWhole * fb);
    this.zeroRange(lastWhole * fb, end);
    // Whichever is smaller: the folio numbers of the range, or the folios held.
    if (lastWhole - firstWhole <= this.#folios.size) {
      for (let n = firstWhole; n < lastWhole; n++) {
        const phys = this.#folios.get(n);
        if (phys === undefined) continue;
        this.#drop(phys);
        this.#folios.delete(n);
      }
    } else {
      // Deleting the current entry while iterating a Map is safe.
      for (const [n, phys] of this.#folios) {
        if (n < firstWhole || n >= lastWhole) continue;
        this.#drop(phys);
        this.#folios.delete(n);
      }
    }
  }

  /** `read`: up to `length` bytes at `offset`, stopping at the end of the file. */
  read(offset: number, length: number): Uint8Array {
    this.fs.assertActive();
    const end = Math.min(offset + length, this.#size);
    return end <= offset ? new Uint8Array(0) : this.copyOut(offset, end - offset);
  }

  /** `write`: `data` at `offset`, growing the file; returns the bytes written. Errors: module comment. */
  write(offset: number, data: Uint8Array): number {
    this.fs.assertActive();
    if (this.hugetlb) this.fail("EINVAL", "hugetlbfs files do not support write(); map them instead");
    if (data.length === 0) return 0;
    const end = offset + data.length;
    if (end > MAX_FILE_OFFSET) this.fail("EFBIG", `write to ${end} exceeds the largest file size`);
    if (this.#seals & WRITE_SEALS) this.fail("EPERM", "write on a memfd sealed against writes");
    if (end > this.#size) {
      if (this.#seals & F_SEAL_GROW)
        this.fail("EPERM", `write past the end (${this.#size}) with F_SEAL_GROW`);
      if (this.#frozen)
        this.fail("EPERM", `write past the end (${this.#size}) while preserved for live update`);
    }
    this.copyIn(offset, data);
    if (end > this.#size) this.#size = end;
    return data.length;
  }

  /** `ftruncate`: sets the size. Errors: module comment. */
  truncate(length: number): void {
    this.fs.assertActive();
    const old = this.#size;
    if (length < old && this.#seals & F_SEAL_SHRINK) this.fail("EPERM", "shrinking with F_SEAL_SHRINK");
    if (length > old && this.#seals & F_SEAL_GROW) this.fail("EPERM", "growing with F_SEAL_GROW");
    if (length !== old && this.#frozen)
      this.fail("EPERM", `resizing (${old} → ${length}) while preserved for live update`);
    if (this.hugetlb && length % this.folioBytes !== 0) {
      this.fail("EINVAL", `hugetlb size ${length} is not a multiple of ${this.folioBytes}`);
    }
    this.#size = length;
    // Like shmem_setattr: a size that does not grow drops everything past it.
    if (length <= old) this.discard(length, Math.max(old, this.maxFolioEnd()));
  }

  private maxFolioEnd(): number {
    let max = -1;
    for (const n of this.#folios.keys()) if (n > max) max = n;
    return (max + 1) * this.folioBytes;
  }

  /** `fallocate`: allocate (optionally keeping the size) or punch a hole. Errors: module comment. */
  fallocate(mode: number, offset: number, length: number): void {
    this.fs.assertActive();
    const end = offset + length;
    if (this.#frozen) this.fail("EPERM", "fallocate while preserved for live update");
    if (mode & FALLOC_FL_PUNCH_HOLE) {
      if (this.#seals & WRITE_SEALS) this.fail("EPERM", "punching a hole in a memfd sealed against writes");
      this.discard(offset, end);
      return;
    }
    if (end > MAX_FILE_OFFSET) this.fail("EFBIG", `fallocate to ${end} exceeds the largest file size`);
    if (end > this.#size && this.#seals & F_SEAL_GROW)
      this.fail("EPERM", `fallocate past the end (${this.#size}) with F_SEAL_GROW`);
    this.populate(offset, end);
    if (!(mode & FALLOC_FL_KEEP_SIZE) && end > this.#size) this.#size = end;
  }

  /** `F_ADD_SEALS`. Errors: module comment. */
  addSeals(seals: number): void {
    this.fs.assertActive();
    if (!Number.isInteger(seals) || seals < 0 || seals > 0xffff_ffff || (seals & ~F_ALL_SEALS) !== 0) {
      this.fail("EINVAL", `unknown seals 0x${Math.trunc(seals).toString(16)}`);
    }
    if (this.#seals & F_SEAL_SEAL) this.fail("EPERM", "F_SEAL_SEAL is set (created without allowSealing?)");
    let add = seals;
    if (add & F_SEAL_EXEC && this.#executable) add |= F_SEAL_SHRINK | F_SEAL_GROW | WRITE_SEALS;
    if (add & F_SEAL_WRITE && !(this.#seals & F_SEAL_WRITE)) {
      if (this.#writableMappings > 0)
        this.fail("EBUSY", `F_SEAL_WRITE with ${this.#writableMappings} writable shared mapping(s)`);
      if (this.#pins > 0)
        this.fail("EBUSY", "F_SEAL_WRITE while pages are pinned (preserved for live update)");
    }
    this.#seals |= add;
  }

  // ---------------------------------------------------------------- mappings

  /** A shared mapping is being created (`mmap`). New writable shared mappings need no write seal (`EPERM`). */
  mapShared(writable: boolean): void {
    this.fs.assertActive();
    if (writable) {
      if (this.#seals & WRITE_SEALS) this.fail("EPERM", "writable shared mapping of a write-sealed memfd");
      this.#writableMappings++;
    }
  }

  /** A shared mapping went away (`munmap`). */
  unmapShared(writable: boolean): void {
    if (writable && this.#writableMappings > 0) this.#writableMappings--;
  }

  /** Load through a mapping: `EFAULT` (the kernel's SIGBUS) past the end of the file. */
  loadMapped(offset: number, length: number): Uint8Array {
    this.fs.assertActive();
    if (offset + length > this.#size) this.fail("EFAULT", `mapped access past the end (${this.#size})`);
    return this.copyOut(offset, length);
  }

  /** Store through a writable mapping; faults folios in. `EFAULT` past the end. */
  storeMapped(offset: number, data: Uint8Array): void {
    this.fs.assertActive();
    if (offset + data.length > this.#size) this.fail("EFAULT", `mapped access past the end (${this.#size})`);
    this.copyIn(offset, data);
  }

  // ---------------------------------------------------------------- live update

  /**
   * Pins every folio of `[0, size)` for preservation: fills holes with zeroed folios (kept even if
   * the preservation is later undone) and returns the folios of the range in file order.
   * `ENOMEM` when the holes cannot be filled.
   */
  pinAll(): MemfdFolio[] {
    this.fs.assertActive();
    this.populate(0, this.#size);
    this.#pins++;
    const last = Math.ceil(this.#size / this.folioBytes);
    return this.folios().filter((f) => f.index >> this.folioOrder < last);
  }

  /** Drops the pin of {@link MemfdInode.pinAll}. */
  unpinAll(): void {
    if (this.#pins > 0) this.#pins--;
  }

  /** Frees a folio leaving the file, unless DMA still pins it (then when the last pin goes). */
  #drop(phys: bigint): void {
    if (this.#dmaPins.has(phys)) this.#orphans.add(phys);
    else this.fs.freeFolio(phys, this.folioOrder);
  }

  /**
   * Pins the folios of `[offset, offset + length)` for device DMA (what `IOMMU_IOAS_MAP_FILE`
   * does with `pin_user_pages`): fills holes with zeroed folios and returns the folios covering
   * the range, in file order. While pinned, `F_SEAL_WRITE` is `EBUSY`, and a folio that leaves
   * the file (truncate, hole punch, last close) stays allocated — the device may still reach it —
   * until {@link MemfdInode.unpinRange} drops the last pin. Errors: `EINVAL` for a range that is
   * not inside the file, `ENOMEM` (nothing pinned then), `ESHUTDOWN`.
   */
  pinRange(offset: number, length: number): MemfdFolio[] {
    this.fs.assertActive();
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0) {
      this.fail("EINVAL", `bad pin range ${String(offset)}+${String(length)}`);
    }
    if (offset + length > this.#size)
      this.fail("EINVAL", `pin range ${offset}+${length} past the end (${this.#size})`);
    this.populate(offset, offset + length);
    const fb = this.folioBytes;
    const out: MemfdFolio[] = [];
    for (let n = Math.floor(offset / fb), last = Math.ceil((offset + length) / fb); n < last; n++) {
      const phys = this.#folios.get(n)!;
      this.#dmaPins.set(phys, (this.#dmaPins.get(phys) ?? 0) + 1);
      out.push({ index: n << this.folioOrder, phys });
    }
    this.#pins++;
    return out;
  }

  /** Drops the pins {@link MemfdInode.pinRange} took on `folios` (what it returned). */
  unpinRange(folios: readonly MemfdFolio[]): void {
    for (const f of folios) {
      const left = (this.#dmaPins.get(f.phys) ?? 1) - 1;
      if (left > 0) {
        this.#dmaPins.set(f.phys, left);
        continue;
      }
      this.#dmaPins.delete(f.phys);
      if (this.#orphans.delete(f.phys)) this.fs.freeFolio(f.phys, this.folioOrder);
    }
    if (this.#pins > 0) this.#pins--;
  }

  /** Freezes (or thaws) the mapping: size and folios fixed while preserved. */
  setFrozen(frozen: boolean): void {
    this.#frozen = frozen;
  }

  /**
   * Retrieve: takes over restored folios (zero copy), the size and the seals. Only for a fresh
   * inode; the folios must lie inside `[0, size)` and not repeat (the caller validated them).
   */
  adopt(size: number, seals: number, folios: readonly MemfdFolio[]): void {
    this.#size = size;
    this.#seals = seals;
    for (const f of folios) {
      this.#folios.set(f.index >> this.folioOrder, f.phys);
      this.fs.adoptFolio(this.folioOrder);
    }
  }
}
