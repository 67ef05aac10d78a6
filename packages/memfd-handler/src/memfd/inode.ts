/**
 * The memfd inode (shmem's `shmem_inode_info`, or hugetlbfs's for `MFD_HUGETLB`): the contents
 * as a sparse table of folios in the machine's physical pages, the size, the seals, and the
 * live-update "frozen mapping" state. Every file object of one memfd shares its inode.
 *
 * Contents: folios of 4 KiB (order 0) and 2 MiB (order 9, naturally aligned in the file: the
 * folio at page index `i` with `i % 512 === 0` covers bytes `[i·4K, i·4K + 2M)`). Folios are
 * allocated on the first write, fallocate or store through a mapping, zeroed; a missing folio is
 * a hole and reads as zeros. The last file reference frees every folio.
 *
 * Which size a new folio gets (Linux shmem with transparent huge pages, `mm/shmem.c`):
 * - hugetlb: always 2 MiB (and `ENOMEM` when no 2 MiB block is free).
 * - `huge: "never"` (the default): always 4 KiB.
 * - `huge: "always"` (shmem `huge=always`): 2 MiB whenever the 2 MiB range holds no 4 KiB folio
 *   yet, even past the end of the file; 4 KiB when it does, or when no 2 MiB block is free (the
 *   THP fallback: no error).
 * - `huge: "within_size"` (shmem `huge=within_size`): as `"always"`, but only for 2 MiB ranges
 *   that end within the file size (the size after the write or fallocate that allocates); the
 *   tail of the file gets 4 KiB folios.
 * So a file may mix both sizes; 4 KiB folios are never collapsed into a 2 MiB one later (there
 * is no khugepaged here). Truncating down or punching a hole frees the folios it covers
 * entirely and zeroes the bytes it covers in the others. A 2 MiB shmem folio only partly covered
 * is first split into 512 folios of 4 KiB (as Linux's `truncate_inode_partial_folio` splits a
 * large folio), so the 4 KiB pages inside the hole are freed and the rest stay where they were;
 * a hugetlb folio is never split, only zeroed, as in hugetlbfs.
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
  MAX_ORDER_BYTES,
  MAX_ORDER_PAGES,
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

/**
 * Transparent huge page policy of a shmem memfd, as shmem's `huge=` mount option (see the
 * module comment): `"never"` 4 KiB folios only, `"always"` 2 MiB folios wherever a 2 MiB range
 * has no 4 KiB folio, `"within_size"` the same for ranges inside the file size.
 */
export type ShmemHuge = "never" | "always" | "within_size";

/** How an inode starts (see `memfdCreate`). */
export interface MemfdInodeOptions {
  /** The memfd name (without the `memfd:` prefix). */
  readonly name: string;
  /** hugetlbfs-backed: 2 MiB folios, no `write()`. */
  readonly hugetlb: boolean;
  /** Huge page policy of a shmem (non-hugetlb) memfd; default `"never"`. */
  readonly huge?: ShmemHuge;
  /** Initial seals. */
  readonly seals: number;
  /** Whether the exec permission bits are set (mode 0777, else 0666). */
  readonly executable: boolean;
}

/** One folio of a memfd: its page offset in the file, where it lives and its size. */
export interface MemfdFolio {
  /** Page offset of the folio's first byte in the file (the kernel's folio `index`). */
  readonly index: number;
  /** Physical address of the folio's first page. */
  readonly phys: bigint;
  /** Folio order: 0 (4 KiB) or {@link MAX_ORDER} (2 MiB, at an index that is a multiple of 512). */
  readonly order: number;
}

const HUGE_BYTES = MAX_ORDER_BYTES;
const HUGE_PAGES = MAX_ORDER_PAGES;

const WRITE_SEALS = F_SEAL_WRITE | F_SEAL_FUTURE_WRITE;

/** The shared state of one memfd (see the module comment). */
export class MemfdInode {
  /** Inode number: the memfd's identity (shared by every file object of it). */
  readonly ino: number = allocInode();
  /** The memfd name. */
  readonly name: string;
  /** hugetlbfs-backed. */
  readonly hugetlb: boolean;
  /** Huge page policy for new folios (`"always"` for hugetlb, whose folios are all 2 MiB). */
  readonly huge: ShmemHuge;
  /**
   * Page order of the memfd's mappings: {@link MAX_ORDER} (2 MiB pages) for hugetlb, 0 for
   * shmem — whose folios may still be 2 MiB (see {@link MemfdInode.huge}).
   */
  readonly folioOrder: number;
  /** Bytes per page of the memfd's mappings (`2^folioOrder` pages). */
  readonly folioBytes: number;
  #size = 0;
  #seals: number;
  #executable: boolean;
  #frozen = false;
  #pins = 0;
  #writableMappings = 0;
  #files = 0;
  #released = false;
  /** 2 MiB folios: 2 MiB unit number (page index / 512) → physical address. */
  readonly #huge = new Map<number, bigint>();
  /** 4 KiB folios: page index → physical address (never inside a unit that has a 2 MiB folio). */
  readonly #small = new Map<number, bigint>();
  /** 4 KiB folios per 2 MiB unit (units without any are absent). */
  readonly #smallPerUnit = new Map<number, number>();
  /** DMA pins by the physical address and order of the folio pinned ({@link MemfdInode.pinRange}). */
  readonly #dmaPins = new Map<bigint, { count: number; order: number }>();
  /** Folios (or pages of a split pinned folio) dropped from the file while DMA-pinned. */
  readonly #orphans = new Map<bigint, number>();

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
    this.huge = options.hugetlb ? "always" : (options.huge ?? "never");
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
    const out: MemfdFolio[] = [];
    for (const [u, phys] of this.#huge) out.push({ index: u * HUGE_PAGES, phys, order: MAX_ORDER });
    for (const [p, phys] of this.#small) out.push({ index: p, phys, order: 0 });
    return out.sort((a, b) => a.index - b.index);
  }

  /** Number of folios (4 KiB and 2 MiB). */
  get folioCount(): number {
    return this.#huge.size + this.#small.size;
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
      for (const phys of this.#huge.values()) this.#drop(phys, MAX_ORDER);
      for (const phys of this.#small.values()) this.#drop(phys, 0);
      this.#huge.clear();
      this.#small.clear();
      this.#smallPerUnit.clear();
    }
  }

  // ---------------------------------------------------------------- byte access

  private fail(code: "EPERM" | "EINVAL" | "EFBIG" | "EBUSY" | "EFAULT", what: string): never {
    throw new LiveUpdateError(code, `${this.description}: ${what}`);
  }

  /**
   * Calls `fn(phys, offsetInRange, length)` for each folio piece of `[start, end)`: `phys` is the
   * physical address of the piece's first byte, undefined in a hole.
   */
  private pieces(
    start: number,
    end: number,
    fn: (phys: bigint | undefined, at: number, len: number) => void,
  ): void {
    for (let pos = start; pos < end;) {
      const u = Math.floor(pos / HUGE_BYTES);
      const huge = this.#huge.get(u);
      if (huge !== undefined || this.hugetlb) {
        const inFolio = pos - u * HUGE_BYTES;
        const len = Math.min(HUGE_BYTES - inFolio, end - pos);
        fn(huge === undefined ? undefined : huge + BigInt(inFolio), pos - start, len);
        pos += len;
        continue;
      }
      const p = Math.floor(pos / PAGE_SIZE);
      const inPage = pos - p * PAGE_SIZE;
      const len = Math.min(PAGE_SIZE - inPage, end - pos);
      const small = this.#small.get(p);
      fn(small === undefined ? undefined : small + BigInt(inPage), pos - start, len);
      pos += len;
    }
  }

  /** True when a new folio in 2 MiB unit `u` should be a 2 MiB one, for a file of `size` bytes. */
  private wantsHuge(u: number, size: number): boolean {
    if (this.hugetlb || this.huge === "always") return true;
    if (this.huge === "never") return false;
    return (u + 1) * HUGE_BYTES <= Math.ceil(size / PAGE_SIZE) * PAGE_SIZE;
  }

  #addSmall(p: number, phys: bigint): void {
    this.#small.set(p, phys);
    const u = Math.floor(p / HUGE_PAGES);
    this.#smallPerUnit.set(u, (this.#smallPerUnit.get(u) ?? 0) + 1);
  }

  #dropSmall(p: number): void {
    this.#small.delete(p);
    const u = Math.floor(p / HUGE_PAGES);
    const n = this.#smallPerUnit.get(u)! - 1;
    if (n === 0) this.#smallPerUnit.delete(u);
    else this.#smallPerUnit.set(u, n);
  }

  /**
   * Allocates every missing folio of `[start, end)` for a file of `size` bytes (which decides
   * `"within_size"`); on failure frees the ones it allocated. Every caller has checked
   * `fs.assertActive()` already (`ESHUTDOWN` comes from there).
   */
  private populate(start: number, end: number, size: number): void {
    if (end <= start) return;
    const added: Array<{ huge: boolean; key: number }> = [];
    const what = this.description;
    try {
      for (let u = Math.floor(start / HUGE_BYTES), last = Math.ceil(end / HUGE_BYTES); u < last; u++) {
        if (this.#huge.has(u)) continue;
        if (!this.#smallPerUnit.has(u) && this.wantsHuge(u, size)) {
          let phys: bigint | undefined;
          try {
            phys = this.fs.allocFolio(MAX_ORDER, what);
          } catch (e) {
            // THP: no free 2 MiB block means 4 KiB folios, not an error; hugetlb has no fallback.
            if (this.hugetlb || !(e instanceof LiveUpdateError) || e.code !== "ENOMEM") throw e;
          }
          if (phys !== undefined) {
            this.#huge.set(u, phys);
            added.push({ huge: true, key: u });
            continue;
          }
        }
        const from = Math.floor(Math.max(start, u * HUGE_BYTES) / PAGE_SIZE);
        const to = Math.ceil(Math.min(end, (u + 1) * HUGE_BYTES) / PAGE_SIZE);
        for (let p = from; p < to; p++) {
          if (this.#small.has(p)) continue;
          this.#addSmall(p, this.fs.allocFolio(0, what));
          added.push({ huge: false, key: p });
        }
      }
    } catch (e) {
      for (let i = added.length - 1; i >= 0; i--) {
        const { huge, key } = added[i]!;
        if (huge) {
          this.fs.freeFolio(this.#huge.get(key)!, MAX_ORDER);
          this.#huge.delete(key);
        } else {
          this.fs.freeFolio(this.#small.get(key)!, 0);
          this.#dropSmall(key);
        }
      }
      throw e;
    }
  }

  /** Copies `[offset, offset + length)` out (holes as zeros), ignoring the size. */
  private copyOut(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    const machine = this.fs.machine;
    this.pieces(offset, offset + length, (phys, at, len) => {
      if (phys !== undefined) machine.readInto(phys, out.subarray(at, at + len));
    });
    return out;
  }

  /** Copies `data` in at `offset`, allocating folios first (all or nothing), ignoring the size. */
  private copyIn(offset: number, data: Uint8Array, size: number): void {
    this.populate(offset, offset + data.length, size);
    const machine = this.fs.machine;
    this.pieces(offset, offset + data.length, (phys, at, len) => {
      machine.write(phys!, data.subarray(at, at + len));
    });
  }

  /** Zeroes `[start, end)` inside existing folios (holes stay holes). */
  private zeroRange(start: number, end: number): void {
    if (end <= start) return;
    const machine = this.fs.machine;
    this.pieces(start, end, (phys, _at, len) => {
      if (phys !== undefined) machine.zero(phys, len);
    });
  }

  /**
   * Punch / truncate: frees the folios wholly inside `[start, end)` and zeroes the bytes of the
   * range in the others, splitting a partly covered 2 MiB shmem folio first.
   */
  private discard(start: number, end: number): void {
    if (end <= start) return;
    const firstUnit = Math.floor(start / HUGE_BYTES);
    const lastUnit = Math.ceil(end / HUGE_BYTES); // exclusive
    const units: number[] = [];
    // Whichever is smaller: the units of the range, or the 2 MiB folios held.
    if (lastUnit - firstUnit <= this.#huge.size) {
      for (let u = firstUnit; u < lastUnit; u++) if (this.#huge.has(u)) units.push(u);
    } else {
      for (const u of this.#huge.keys()) if (u >= firstUnit && u < lastUnit) units.push(u);
    }
    for (const u of units) {
      const phys = this.#huge.get(u)!;
      const us = u * HUGE_BYTES;
      if (start <= us && us + HUGE_BYTES <= end) {
        this.#drop(phys, MAX_ORDER);
        this.#huge.delete(u);
      } else if (this.hugetlb) {
        this.zeroRange(Math.max(start, us), Math.min(end, us + HUGE_BYTES));
      } else {
        this.fs.splitFolio(phys, MAX_ORDER);
        this.#huge.delete(u);
        for (let i = 0; i < HUGE_PAGES; i++) this.#addSmall(u * HUGE_PAGES + i, phys + BigInt(i * PAGE_SIZE));
      }
    }
    const firstWhole = Math.ceil(start / PAGE_SIZE);
    const lastWhole = Math.floor(end / PAGE_SIZE); // exclusive
    if (firstWhole >= lastWhole) {
      this.zeroRange(start, end);
      return;
    }
    this.zeroRange(start, firstWhole * PAGE_SIZE);
    this.zeroRange(lastWhole * PAGE_SIZE, end);
    if (lastWhole - firstWhole <= this.#small.size) {
      for (let p = firstWhole; p < lastWhole; p++) {
        const phys = this.#small.get(p);
        if (phys === undefined) continue;
        this.#drop(phys, 0);
        this.#dropSmall(p);
      }
    } else {
      // Deleting the current entry while iterating a Map is safe.
      for (const [p, phys] of this.#small) {
        if (p < firstWhole || p >= lastWhole) continue;
        this.#drop(phys, 0);
        this.#dropSmall(p);
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
    this.copyIn(offset, data, Math.max(this.#size, end));
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
    let max = 0;
    for (const u of this.#huge.keys()) max = Math.max(max, (u + 1) * HUGE_BYTES);
    for (const p of this.#small.keys()) max = Math.max(max, (p + 1) * PAGE_SIZE);
    return max;
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
    const keepSize = (mode & FALLOC_FL_KEEP_SIZE) !== 0;
    this.populate(offset, end, keepSize ? this.#size : Math.max(this.#size, end));
    if (!keepSize && end > this.#size) this.#size = end;
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
    this.copyIn(offset, data, this.#size);
  }

  // ---------------------------------------------------------------- live update

  /**
   * Pins every folio of `[0, size)` for preservation: fills holes with zeroed folios of the size
   * the huge page policy picks (kept even if the preservation is later undone) and returns the
   * folios that start inside the range, in file order. `ENOMEM` when the holes cannot be filled.
   */
  pinAll(): MemfdFolio[] {
    this.fs.assertActive();
    this.populate(0, this.#size, this.#size);
    this.#pins++;
    const last = Math.ceil(this.#size / PAGE_SIZE);
    return this.folios().filter((f) => f.index < last);
  }

  /** Drops the pin of {@link MemfdInode.pinAll}. */
  unpinAll(): void {
    if (this.#pins > 0) this.#pins--;
  }

  /** The DMA pin covering the page at `phys`: its own (order 0) or its 2 MiB folio's. */
  #pinOf(phys: bigint): bigint | undefined {
    if (this.#dmaPins.has(phys)) return phys;
    const unit = phys - (phys % BigInt(HUGE_BYTES));
    return this.#dmaPins.get(unit)?.order === MAX_ORDER ? unit : undefined;
  }

  /** Frees a folio leaving the file, unless DMA still pins it (then when the last pin goes). */
  #drop(phys: bigint, order: number): void {
    if (this.#pinOf(phys) !== undefined) this.#orphans.set(phys, order);
    else this.fs.freeFolio(phys, order);
  }

  /**
   * Pins the folios of `[offset, offset + length)` for device DMA (what `IOMMU_IOAS_MAP_FILE`
   * does with `pin_user_pages`): fills holes with zeroed folios and returns the folios covering
   * the range (4 KiB and 2 MiB), in file order. While pinned, `F_SEAL_WRITE` is `EBUSY`, and a
   * folio that leaves the file (truncate, hole punch, last close) stays allocated — the device
   * may still reach it — until {@link MemfdInode.unpinRange} drops the last pin; a pinned 2 MiB
   * folio split by a partial punch keeps its pages until then. Errors: `EINVAL` for a range that
   * is not inside the file, `ENOMEM` (nothing pinned then), `ESHUTDOWN`.
   */
  pinRange(offset: number, length: number): MemfdFolio[] {
    this.fs.assertActive();
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0) {
      this.fail("EINVAL", `bad pin range ${String(offset)}+${String(length)}`);
    }
    if (offset + length > this.#size)
      this.fail("EINVAL", `pin range ${offset}+${length} past the end (${this.#size})`);
    const end = offset + length;
    this.populate(offset, end, this.#size);
    const out: MemfdFolio[] = [];
    for (let u = Math.floor(offset / HUGE_BYTES), last = Math.ceil(end / HUGE_BYTES); u < last; u++) {
      const huge = this.#huge.get(u);
      if (huge !== undefined) {
        out.push({ index: u * HUGE_PAGES, phys: huge, order: MAX_ORDER });
        continue;
      }
      const from = Math.floor(Math.max(offset, u * HUGE_BYTES) / PAGE_SIZE);
      const to = Math.ceil(Math.min(end, (u + 1) * HUGE_BYTES) / PAGE_SIZE);
      for (let p = from; p < to; p++) out.push({ index: p, phys: this.#small.get(p)!, order: 0 });
    }
    for (const f of out) {
      const pin = this.#dmaPins.get(f.phys);
      if (pin) pin.count++;
      else this.#dmaPins.set(f.phys, { count: 1, order: f.order });
    }
    this.#pins++;
    return out;
  }

  /** Drops the pins {@link MemfdInode.pinRange} took on `folios` (what it returned). */
  unpinRange(folios: readonly MemfdFolio[]): void {
    for (const f of folios) {
      const pin = this.#dmaPins.get(f.phys);
      if (!pin) continue;
      if (--pin.count > 0) continue;
      this.#dmaPins.delete(f.phys);
      // Free what left the file meanwhile: the folio itself, or pages of it after a split.
      const span = BigInt(PAGE_SIZE << pin.order);
      for (const [phys, order] of this.#orphans) {
        if (phys < f.phys || phys >= f.phys + span || this.#pinOf(phys) !== undefined) continue;
        this.#orphans.delete(phys);
        this.fs.freeFolio(phys, order);
      }
    }
    if (this.#pins > 0) this.#pins--;
  }

  /** Freezes (or thaws) the mapping: size and folios fixed while preserved. */
  setFrozen(frozen: boolean): void {
    this.#frozen = frozen;
  }

  /**
   * Retrieve: takes over restored folios (zero copy, each with its order), the size and the
   * seals. Only for a fresh inode; the folios must start inside `[0, size)`, have order 0 or
   * {@link MAX_ORDER} at an index aligned to it, and not overlap (the caller validated them).
   */
  adopt(size: number, seals: number, folios: readonly MemfdFolio[]): void {
    this.#size = size;
    this.#seals = seals;
    for (const f of folios) {
      if (f.order === MAX_ORDER) this.#huge.set(f.index / HUGE_PAGES, f.phys);
      else this.#addSmall(f.index, f.phys);
      this.fs.adoptFolio(f.order);
    }
  }
}
