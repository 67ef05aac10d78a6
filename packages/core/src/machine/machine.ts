// The emulated machine: RAM as 4 KiB page frames at physical addresses [base, base + size), a
// buddy page allocator, preserved-page marks, checked physical memory access, the kexec scrub,
// allocator rebuild for the next kernel, the KHO root pointer, machine hardware and its clock,
// and machine image save/load.
// RAM is sparse: host memory and page metadata follow the pages in use (page-allocator.ts,
// page-contents.ts), so machines up to the 52-bit physical address limit can be powered on.
// Physical addresses are bigint at the API and numbers (byte offsets and page indices from the
// start of RAM) inside: RAM ends below 2^52, so every in-range offset is an exact number.

import { describeValue, ERRNO, LiveUpdateError, MachineImageError, type ErrnoCode } from "../errors.js";
import { DEFAULT_RAM_BASE, MAX_ORDER, MAX_ORDER_BYTES, PAGE_SIZE, PHYS_ADDR_LIMIT } from "./constants.js";
import { PageSnapshot, type CheckpointState, type MachineCheckpoint } from "./checkpoint.js";
import {
  MachineHardwareSet,
  decodeHardwareSection,
  encodeHardwareSection,
  type HardwareFactory,
  type HardwareLoader,
} from "./hardware.js";
import { hex } from "./hex.js";
import { readMachineImage, writeMachineImage, type ImageBlock } from "./image.js";
import { PageAllocator, PG_ALLOCATED, PG_PRESERVED } from "./page-allocator.js";
import { PageContents } from "./page-contents.js";
import { formatSize, parseSize, type MemorySize } from "./size.js";

/**
 * Options of the {@link Machine} constructor.
 *
 * @category Machine
 */
export interface MachineOptions {
  /** RAM size: a positive multiple of 2 MiB, e.g. `"512 MiB"` (see {@link parseSize}). */
  memory: MemorySize;
  /**
   * Physical address of the first byte of RAM. Must be non-zero (0 means "none" in the ABI) and
   * 2 MiB aligned. Default {@link DEFAULT_RAM_BASE} (1 GiB).
   */
  base?: bigint;
  /**
   * Hardware to attach at power-on, in order: each factory gets the new machine and returns a
   * component (see {@link MachineHardwareSet.attach} for the errors).
   */
  hardware?: readonly HardwareFactory[];
}

/** Options of {@link Machine.load}. */
export interface MachineLoadOptions {
  /**
   * Loaders for the hardware kinds the image may contain; a component whose kind has no loader
   * fails the load.
   */
  hardware?: readonly HardwareLoader[];
}

/**
 * Page accounting of a {@link Machine}: `totalPages === freePages + allocatedPages`.
 *
 * @category Machine
 */
export interface MachineStats {
  /** Page frames of RAM. */
  totalPages: number;
  /** Pages on the allocator's free lists. */
  freePages: number;
  /** Pages in allocated blocks. */
  allocatedPages: number;
  /** Allocated pages marked preserved for the handover (a subset of the allocated pages). */
  preservedPages: number;
}

/**
 * An allocated block of `2^order` pages starting at physical address `phys`.
 *
 * @category Machine
 */
export interface MachineBlock {
  /** Physical address of the first page (naturally aligned to the block size). */
  phys: bigint;
  /** Block order: the block has `2^order` pages. */
  order: number;
}

/**
 * Options of {@link Machine.save}.
 *
 * @category Machine
 */
export interface MachineSaveOptions {
  /**
   * Called (and awaited) after each chunk written, with the bytes written so far and the total
   * image size. Useful for progress reporting (and for tests that interrupt a save).
   */
  onProgress?: (written: number, total: number) => void | Promise<void>;
  /**
   * Save the machine as it will look after {@link Machine.scrub}, without changing it: only
   * preserved pages are stored (a partly preserved block becomes its preserved, naturally aligned
   * sub-blocks), so after loading every other page reads as poison. Default false.
   */
  preservedOnly?: boolean;
}

const BIG_PAGE_SIZE = BigInt(PAGE_SIZE);
const U64_LIMIT = 1n << 64n;

/** An address for messages: hex for a bigint, else what it is (`a string "0x1000"`). */
function physName(phys: unknown): string {
  return typeof phys === "bigint" ? hex(phys) : describeValue(phys);
}

/** A count, order or length for messages: the number, else what it is (`a string "4"`). */
function numName(v: unknown): string {
  return typeof v === "number" ? String(v) : describeValue(v);
}

function checkOrder(order: unknown, what: string): number {
  if (typeof order !== "number" || !Number.isInteger(order) || order < 0 || order > MAX_ORDER) {
    throw new LiveUpdateError(
      "EINVAL",
      `${what}: order ${numName(order)} is not an integer in 0..${MAX_ORDER}`,
    );
  }
  return order;
}

// Set by the class's static block: module-internal access to a machine's private state.
let openCheckpoint: (m: Machine) => MachineCheckpoint;
let writableView: (m: Machine, phys: bigint, length: number) => Uint8Array;
let preservedPages: (m: Machine, first: number, pages: number) => boolean;
let resetSorted: (m: Machine, first: ArrayLike<number>, orders: ArrayLike<number>) => void;

/**
 * The emulated machine: the only thing that survives a kexec.
 *
 * RAM is 4 KiB page frames at physical addresses `[base, end)`, backed sparsely: the host
 * commits memory only for pages that were written (allocated pages that were not written read
 * as zeros without any), and the allocator's per-page state costs memory in proportion to the
 * 2 MiB sections in use, so a 1 TiB machine costs the host about what it touches. Pages
 * are handed out by a buddy allocator in naturally aligned blocks of order 0..{@link MAX_ORDER}
 * and always come back zeroed. Memory access goes through physical addresses (`bigint`) and is
 * checked: touching a page outside RAM or a page that is not allocated fails with `EFAULT`.
 *
 * At kexec, {@link Machine.scrub} poisons every page that is not marked preserved and frees the
 * old kernel's allocations; the next kernel rebuilds its allocator with
 * {@link Machine.resetAllocator} from what the handover says, starting from {@link Machine.khoRoot}.
 * {@link Machine.save} / {@link Machine.load} move a machine between processes through an image file.
 *
 * Never-allocated RAM and scrubbed pages read as `POISON_BYTE` through {@link Machine.peek}.
 *
 * @example
 * ```ts
 * import { Machine, PAGE_SIZE } from "@luo/core";
 *
 * const machine = new Machine({ memory: "64 MiB" });
 * const kernel = await machine.boot(); // a cold boot: nothing handed over
 * console.log(machine.stats().totalPages * PAGE_SIZE); // 67108864
 * await kernel.shutdown();
 * ```
 *
 * @category Entry points
 */
export class Machine {
  /** Physical address of the first byte of RAM. */
  readonly base: bigint;
  /** Physical address one past the last byte of RAM. */
  readonly end: bigint;
  /** RAM size in bytes. */
  readonly memoryBytes: number;
  /** Number of page frames. */
  readonly totalPages: number;
  /** The machine's hardware (IOMMUs, devices …): survives kexec and is saved in the image. */
  readonly hardware = new MachineHardwareSet();

  readonly #baseNum: number;
  readonly #alloc: PageAllocator;
  readonly #contents: PageContents;
  #khoRoot = 0n;
  #generation = 0;
  #timeNs = 0n;
  #checkpoint: CheckpointState | undefined;

  static {
    openCheckpoint = (m) => m.#openCheckpoint();
    writableView = (m, phys, length) => m.#viewAt(m.#writable(phys, length, "view"), phys, length);
    preservedPages = (m, first, pages) => m.#alloc.countPreserved(first, pages) === pages;
    resetSorted = (m, first, orders) => {
      m.#alloc.resetSorted(first, orders);
      m.#generation++;
    };
  }

  /**
   * Powers on a machine with all RAM free (and reading as poison).
   *
   * @param options - RAM size and base
   * @throws {@link LiveUpdateError} `EINVAL` for a bad memory size (see {@link parseSize}) or a
   *   base that is zero, not 2 MiB aligned or puts RAM beyond the 52-bit physical address space
   */
  constructor(options: MachineOptions) {
    const size = parseSize(options.memory);
    const base = options.base ?? DEFAULT_RAM_BASE;
    if (typeof base !== "bigint" || base <= 0n || base % BigInt(MAX_ORDER_BYTES) !== 0n) {
      throw new LiveUpdateError(
        "EINVAL",
        `RAM base ${physName(base)} must be a non-zero multiple of 2 MiB (physical address 0 means "none")`,
      );
    }
    if (base + BigInt(size) > PHYS_ADDR_LIMIT) {
      throw new LiveUpdateError(
        "EINVAL",
        `RAM ${hex(base)}+${formatSize(size)} extends beyond the 52-bit physical address space`,
      );
    }
    this.base = base;
    this.end = base + BigInt(size);
    this.memoryBytes = size;
    this.totalPages = size / PAGE_SIZE;
    this.#baseNum = Number(base);
    this.#alloc = new PageAllocator(this.totalPages);
    this.#contents = new PageContents();
    for (const make of options.hardware ?? []) {
      if (typeof make !== "function") {
        throw new LiveUpdateError("EINVAL", "MachineOptions.hardware takes functions (machine) => hardware");
      }
      this.hardware.attach(make(this));
    }
  }

  /** Machine time in nanoseconds since power-on (moved only by {@link Machine.advanceTime}). */
  get timeNs(): bigint {
    return this.#timeNs;
  }

  /**
   * Lets `ns` nanoseconds of machine time pass: the clock moves, then every hardware component's
   * `advance(ns)` runs in attach order (devices finish work in flight). Time passes for the
   * machine, whichever kernel runs — or none, during a kexec.
   *
   * @throws {@link LiveUpdateError} `EINVAL` when `ns` is not a non-negative safe integer or u64
   */
  advanceTime(ns: bigint | number): void {
    const n = typeof ns === "number" && Number.isSafeInteger(ns) ? BigInt(ns) : ns;
    if (typeof n !== "bigint" || n < 0n || n >= U64_LIMIT) {
      throw new LiveUpdateError("EINVAL", `advanceTime: ${String(ns)} is not a non-negative time in ns`);
    }
    this.#timeNs += n;
    this.hardware.advance(n);
  }

  /**
   * Physical address of the KHO root FDT the next kernel boots from; 0n when there is none.
   * Any u64 may be stored (the next kernel validates it).
   *
   * @throws {@link LiveUpdateError} `EINVAL` (on set) for a value that is not a bigint in `[0, 2^64)`
   */
  get khoRoot(): bigint {
    return this.#khoRoot;
  }

  set khoRoot(phys: bigint) {
    if (typeof phys !== "bigint" || phys < 0n || phys >= U64_LIMIT) {
      throw new LiveUpdateError("EINVAL", `KHO root ${physName(phys)} is not a 64-bit physical address`);
    }
    this.#khoRoot = phys;
    this.#generation++;
  }

  // ---------------------------------------------------------------- address translation

  /** RAM offset of `[phys, phys + length)`; EFAULT when outside RAM. */
  #offset(phys: bigint, length: number, what: string): number {
    if (typeof phys !== "bigint")
      throw new LiveUpdateError("EINVAL", `${what}: the address is ${describeValue(phys)}, not a bigint`);
    if (typeof length !== "number" || !Number.isSafeInteger(length) || length < 0) {
      throw new LiveUpdateError("EINVAL", `${what} at ${hex(phys)}: bad length ${numName(length)}`);
    }
    // RAM ends below 2^52, so Number(phys) is exact for every in-range address and any rounding
    // of larger values keeps them out of range.
    const off = Number(phys) - this.#baseNum;
    if (!(off >= 0 && off + length <= this.memoryBytes)) {
      throw new LiveUpdateError(
        "EFAULT",
        `${what}: ${hex(phys)}+${length} is outside RAM [${hex(this.base)}, ${hex(this.end)})`,
      );
    }
    return off;
  }

  /** RAM offset of `[phys, phys + length)` whose pages must all be allocated; EFAULT otherwise. */
  #checked(phys: bigint, length: number, what: string): number {
    const off = this.#offset(phys, length, what);
    if (length === 0) return off;
    const first = Math.floor(off / PAGE_SIZE);
    const count = Math.floor((off + length - 1) / PAGE_SIZE) - first + 1;
    const p = this.#alloc.firstUnallocated(first, count);
    if (p >= 0) {
      throw new LiveUpdateError(
        "EFAULT",
        `${what}: page ${hex(this.#physOf(p))} (in ${hex(phys)}+${length}) is not allocated`,
      );
    }
    return off;
  }

  /** As {@link Machine.#checked}, for a write: an open checkpoint saves the pages first. */
  #writable(phys: bigint, length: number, what: string): number {
    const off = this.#checked(phys, length, what);
    if (this.#checkpoint !== undefined && length > 0) {
      const first = Math.floor(off / PAGE_SIZE);
      this.#checkpoint.pages.beforeWrite(first, Math.floor((off + length - 1) / PAGE_SIZE) - first + 1);
    }
    return off;
  }

  /** Page index of a page-aligned in-RAM block `[phys, phys + 2^order pages)`. */
  #pageRange(phys: bigint, order: number, what: string): number {
    checkOrder(order, what);
    if (typeof phys !== "bigint" || phys % BIG_PAGE_SIZE !== 0n) {
      throw new LiveUpdateError("EINVAL", `${what}: address ${physName(phys)} is not page aligned`);
    }
    return this.#offset(phys, PAGE_SIZE << order, what) / PAGE_SIZE;
  }

  #physOf(index: number): bigint {
    return this.base + BigInt(index) * BIG_PAGE_SIZE;
  }

  // ---------------------------------------------------------------- allocator

  /**
   * Allocates a naturally aligned block of `2^order` pages and zeroes it.
   *
   * @param order - 0..{@link MAX_ORDER} (default 0: one page)
   * @returns physical address of the first page; a multiple of `2^order` pages
   * @throws {@link LiveUpdateError} `ENOMEM` when no free block of that order is left;
   *   `EINVAL` for a bad order
   */
  allocPages(order = 0): bigint {
    checkOrder(order, "allocPages");
    const index = this.#alloc.alloc(order);
    if (index < 0) {
      throw new LiveUpdateError(
        "ENOMEM",
        `allocPages: no free block of order ${order} (${formatSize(PAGE_SIZE << order)}); ${this.#alloc.freePages} of ${this.totalPages} pages free`,
      );
    }
    this.#checkpoint?.pages.beforeWrite(index, 1 << order);
    this.#contents.zeroPages(index, 1 << order);
    this.#generation++;
    return this.#physOf(index);
  }

  /**
   * Frees a block allocated by {@link Machine.allocPages} (or kept by {@link Machine.resetAllocator}).
   * The contents stay in RAM until the next {@link Machine.scrub}.
   *
   * @param phys - physical address of the block's first page
   * @param order - the order it was allocated with (default 0)
   * @throws {@link LiveUpdateError} `EINVAL` when `phys` is not the first page of an allocated
   *   block of exactly that order (including addresses outside RAM); `EBUSY` when a page of the
   *   block is still marked preserved (clear it with {@link Machine.clearPreserved} first)
   */
  freePages(phys: bigint, order = 0): void {
    checkOrder(order, "freePages");
    const index = this.#headIndex(phys, order, "freePages");
    if (this.#alloc.countPreserved(index, 1 << order) !== 0) {
      throw new LiveUpdateError("EBUSY", `freePages: block ${hex(phys)} order ${order} is still preserved`);
    }
    this.#alloc.free(index);
    this.#generation++;
  }

  /** Page accounting: always `totalPages === freePages + allocatedPages` and `preservedPages <= allocatedPages`. */
  stats(): MachineStats {
    const a = this.#alloc;
    return {
      totalPages: this.totalPages,
      freePages: a.freePages,
      allocatedPages: a.allocatedPages,
      preservedPages: a.preservedPages,
    };
  }

  /** Every allocated block, in ascending address order. */
  blocks(): MachineBlock[] {
    const out: MachineBlock[] = [];
    this.#alloc.forEachBlock((h, order) => out.push({ phys: this.#physOf(h), order }));
    return out;
  }

  /**
   * Splits an allocated block into `2^order` allocated order-0 blocks (the kernel's
   * `split_page`), keeping contents and preserved marks; each page can then be freed on its own
   * with {@link Machine.freePages}. Used e.g. when part of a huge folio is punched out.
   *
   * @param phys - physical address of the block's first page
   * @param order - the order it was allocated with
   * @throws {@link LiveUpdateError} `EINVAL` when `phys` is not the head of an allocated block of
   *   exactly that order (including addresses outside RAM) or for a bad order
   */
  splitPages(phys: bigint, order: number): void {
    checkOrder(order, "splitPages");
    const index = this.#headIndex(phys, order, "splitPages");
    if (order > 0) this.#alloc.split(index, order);
    this.#generation++;
  }

  /** Page index of the head of an allocated block of exactly `order` at `phys`; EINVAL otherwise. */
  #headIndex(phys: bigint, order: number, what: string): number {
    const off = typeof phys === "bigint" ? Number(phys) - this.#baseNum : NaN;
    const index = off / PAGE_SIZE;
    if (!(
      off >= 0 &&
      off < this.memoryBytes &&
      Number.isInteger(index) &&
      this.#alloc.isHead(index, order)
    )) {
      throw new LiveUpdateError(
        "EINVAL",
        `${what}: ${physName(phys)} is not the head of an allocated order-${order} block`,
      );
    }
    return index;
  }

  /**
   * True when the page containing `phys` is allocated.
   *
   * @throws {@link LiveUpdateError} `EFAULT` when `phys` is outside RAM
   */
  isAllocated(phys: bigint): boolean {
    const off = this.#offset(phys, 1, "isAllocated");
    return (this.#alloc.flagsOf(Math.floor(off / PAGE_SIZE)) & PG_ALLOCATED) !== 0;
  }

  /**
   * Marks `2^order` pages starting at `phys` preserved: they keep their contents across
   * {@link Machine.scrub}. Idempotent. The range need not be a whole allocated block, but every
   * page in it must be allocated.
   *
   * @throws {@link LiveUpdateError} `EINVAL` for a bad order or an address that is not page
   *   aligned; `EFAULT` when the range is outside RAM or a page in it is not allocated
   */
  markPreserved(phys: bigint, order = 0): void {
    const index = this.#pageRange(phys, order, "markPreserved");
    this.#checked(phys, PAGE_SIZE << order, "markPreserved");
    this.#alloc.markPreserved(index, 1 << order);
    this.#generation++;
  }

  /**
   * Clears the preserved mark of `2^order` pages starting at `phys`. Idempotent.
   *
   * @throws {@link LiveUpdateError} `EINVAL` for a bad order or an address that is not page
   *   aligned; `EFAULT` when the range is outside RAM
   */
  clearPreserved(phys: bigint, order = 0): void {
    const index = this.#pageRange(phys, order, "clearPreserved");
    this.#alloc.clearPreserved(index, 1 << order);
    this.#generation++;
  }

  /**
   * True when the page containing `phys` is marked preserved.
   *
   * @throws {@link LiveUpdateError} `EFAULT` when `phys` is outside RAM
   */
  isPreserved(phys: bigint): boolean {
    const off = this.#offset(phys, 1, "isPreserved");
    return (this.#alloc.flagsOf(Math.floor(off / PAGE_SIZE)) & PG_PRESERVED) !== 0;
  }

  /**
   * True when all `pages` pages starting with the page containing `phys` are marked preserved
   * (true for 0 pages).
   *
   * @throws {@link LiveUpdateError} `EINVAL` for a bad page count; `EFAULT` when the pages leave RAM
   */
  isPreservedRange(phys: bigint, pages: number): boolean {
    if (!Number.isSafeInteger(pages) || pages < 0) {
      throw new LiveUpdateError(
        "EINVAL",
        `isPreservedRange at ${physName(phys)}: bad page count ${numName(pages)}`,
      );
    }
    const first = Math.floor(this.#offset(phys, 1, "isPreservedRange") / PAGE_SIZE);
    if (first + pages > this.totalPages) {
      throw new LiveUpdateError(
        "EFAULT",
        `isPreservedRange: ${pages} pages at ${hex(phys)} leave RAM [${hex(this.base)}, ${hex(this.end)})`,
      );
    }
    return this.#alloc.countPreserved(first, pages) === pages;
  }

  // ---------------------------------------------------------------- memory access

  /**
   * Copies `length` bytes starting at `phys` out of RAM.
   *
   * @throws {@link LiveUpdateError} `EFAULT` (naming the address) when the range leaves RAM or
   *   touches a page that is not allocated; `EINVAL` for a bad length
   */
  read(phys: bigint, length: number): Uint8Array {
    return this.#contents.read(this.#checked(phys, length, "read"), length);
  }

  /**
   * Copies `target.length - offset` bytes starting at `phys` out of RAM into `target` from
   * `offset` on (no allocation: for large copies into a buffer the caller already has).
   *
   * @throws {@link LiveUpdateError} `EFAULT` (naming the address) when the range leaves RAM or
   *   touches a page that is not allocated; `EINVAL` when `target` is not a Uint8Array or
   *   `offset` is not an integer in `[0, target.length]`
   */
  readInto(phys: bigint, target: Uint8Array, offset = 0): void {
    if (!(target instanceof Uint8Array)) {
      throw new LiveUpdateError("EINVAL", `readInto at ${physName(phys)}: target is not a Uint8Array`);
    }
    if (!Number.isSafeInteger(offset) || offset < 0 || offset > target.length) {
      throw new LiveUpdateError("EINVAL", `readInto at ${physName(phys)}: bad offset ${String(offset)}`);
    }
    const length = target.length - offset;
    this.#contents.readInto(this.#checked(phys, length, "readInto"), length, target, offset);
  }

  /**
   * Copies `bytes` into RAM at `phys`.
   *
   * @throws {@link LiveUpdateError} `EFAULT` when the range leaves RAM or touches a page that is
   *   not allocated
   */
  write(phys: bigint, bytes: Uint8Array): void {
    this.#contents.write(this.#writable(phys, bytes.length, "write"), bytes);
  }

  /**
   * A live view of `length` bytes of RAM at `phys` (no copy): writes through it change RAM. The
   * view is only checked when created and stays valid while its pages stay allocated (a view
   * of pages that were freed and scrubbed no longer reaches RAM). RAM is backed in 2 MiB
   * sections, so a view lies within one naturally aligned 2 MiB range — any block of
   * {@link Machine.allocPages} does. Creating a view commits host memory for its pages; use
   * {@link Machine.read} to look without writing.
   *
   * @throws {@link LiveUpdateError} `EFAULT` when the range leaves RAM or touches a page that is
   *   not allocated; `EINVAL` when it crosses a 2 MiB boundary
   */
  view(phys: bigint, length: number): Uint8Array {
    return this.#viewAt(this.#checked(phys, length, "view"), phys, length);
  }

  #viewAt(off: number, phys: bigint, length: number): Uint8Array {
    const v = this.#contents.view(off, length);
    if (v === undefined) {
      throw new LiveUpdateError(
        "EINVAL",
        `view: ${hex(phys)}+${length} crosses a 2 MiB boundary (RAM is backed in 2 MiB sections)`,
      );
    }
    return v;
  }

  /** Fast path of the integer accessors: the DataView position of `length` bytes at RAM offset `off`. */
  #scratch = new DataView(new ArrayBuffer(8));

  #loadInt(off: number, length: number): { dv: DataView; pos: number } {
    const fast = this.#contents.dataView(off, length, false);
    if (fast) return fast;
    this.#contents.readInto(off, length, new Uint8Array(this.#scratch.buffer), 0);
    return { dv: this.#scratch, pos: 0 };
  }

  #storeInt(off: number, length: number, store: (dv: DataView, pos: number) => void): void {
    const fast = this.#contents.dataView(off, length, true);
    if (fast) {
      store(fast.dv, fast.pos);
      return;
    }
    store(this.#scratch, 0);
    this.#contents.write(off, new Uint8Array(this.#scratch.buffer, 0, length));
  }

  /**
   * Reads a little-endian u32 (unaligned access allowed).
   *
   * @throws {@link LiveUpdateError} `EFAULT` when the 4 bytes leave RAM or are not allocated
   */
  readU32(phys: bigint): number {
    const { dv, pos } = this.#loadInt(this.#checked(phys, 4, "readU32"), 4);
    return dv.getUint32(pos, true);
  }

  /**
   * Writes a little-endian u32 (unaligned access allowed).
   *
   * @throws {@link LiveUpdateError} `EINVAL` when `value` is not an integer in `[0, 2^32)`;
   *   `EFAULT` when the 4 bytes leave RAM or are not allocated
   */
  writeU32(phys: bigint, value: number): void {
    if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
      throw new LiveUpdateError("EINVAL", `writeU32 at ${physName(phys)}: ${numName(value)} is not a u32`);
    }
    this.#storeInt(this.#writable(phys, 4, "writeU32"), 4, (dv, pos) => dv.setUint32(pos, value, true));
  }

  /**
   * Reads a little-endian u64 (unaligned access allowed).
   *
   * @throws {@link LiveUpdateError} `EFAULT` when the 8 bytes leave RAM or are not allocated
   */
  readU64(phys: bigint): bigint {
    const { dv, pos } = this.#loadInt(this.#checked(phys, 8, "readU64"), 8);
    return dv.getBigUint64(pos, true);
  }

  /**
   * Writes a little-endian u64 (unaligned access allowed).
   *
   * @throws {@link LiveUpdateError} `EINVAL` when `value` is not a bigint in `[0, 2^64)`;
   *   `EFAULT` when the 8 bytes leave RAM or are not allocated
   */
  writeU64(phys: bigint, value: bigint): void {
    if (typeof value !== "bigint") {
      throw new LiveUpdateError(
        "EINVAL",
        `writeU64 at ${physName(phys)}: the value is ${describeValue(value)}, not a bigint`,
      );
    }
    if (value < 0n || value >= U64_LIMIT) {
      throw new LiveUpdateError(
        "EINVAL",
        `writeU64 at ${physName(phys)}: ${value} is not a u64 (0 to 2^64 - 1)`,
      );
    }
    this.#storeInt(this.#writable(phys, 8, "writeU64"), 8, (dv, pos) => dv.setBigUint64(pos, value, true));
  }

  /**
   * Zeroes `length` bytes at `phys`.
   *
   * @throws {@link LiveUpdateError} `EFAULT` when the range leaves RAM or is not allocated
   */
  zero(phys: bigint, length: number): void {
    this.#contents.fill(this.#writable(phys, length, "zero"), length, 0);
  }

  /**
   * Copies `length` bytes from `srcPhys` to `dstPhys` (the ranges may overlap, as memmove).
   *
   * @throws {@link LiveUpdateError} `EFAULT` when either range leaves RAM or is not allocated
   */
  copy(dstPhys: bigint, srcPhys: bigint, length: number): void {
    const src = this.#checked(srcPhys, length, "copy source");
    const dst = this.#writable(dstPhys, length, "copy destination");
    this.#contents.write(dst, this.#contents.read(src, length));
  }

  /**
   * Debug accessor for tests: copies `length` bytes at `phys` regardless of allocation, exactly
   * as RAM holds them (free pages keep stale data until a scrub; poisoned pages read as
   * `POISON_BYTE`).
   *
   * @throws {@link LiveUpdateError} `EFAULT` when the range leaves RAM
   */
  peek(phys: bigint, length: number): Uint8Array {
    const off = this.#offset(phys, length, "peek");
    return this.#contents.read(off, length);
  }

  // ---------------------------------------------------------------- kexec

  /**
   * The kexec scrub: fills every page that is not preserved with `POISON_BYTE` (allocated
   * and free pages alike), then frees every allocated page that is not preserved. Afterwards
   * `allocatedPages === preservedPages`. Blocks that are only partly preserved are split into
   * their preserved, naturally aligned sub-blocks. Cost is proportional to the pages allocated
   * since the previous scrub, not to the size of RAM; sections left without data give their
   * host memory back.
   *
   * @returns the number of pages that were poisoned
   * @throws {@link LiveUpdateError} `EBUSY` while a kernel is booting on the machine
   */
  scrub(): number {
    if (this.#checkpoint !== undefined)
      throw new LiveUpdateError("EBUSY", "scrub: a kernel is booting on this machine");
    this.#alloc.releaseUnpreserved();
    this.#generation++;
    return this.#contents.scrub((sec) => this.#alloc.preservedFlags(sec), PG_PRESERVED);
  }

  /**
   * Rebuilds the allocator as the next kernel does after kexec: every page becomes free except
   * the listed blocks, which become allocated with their order (so they can later be freed with
   * {@link Machine.freePages}) and are not preserved. Memory contents are untouched.
   *
   * @param keep - the blocks the new kernel takes over, e.g. from the KHO tree
   * @throws {@link LiveUpdateError} `EINVAL` when a block has a bad order, is not naturally
   *   aligned, lies outside RAM, or overlaps another; nothing is changed then
   */
  resetAllocator(keep: Iterable<MachineBlock>): void {
    const list: Array<[number, number]> = [];
    for (const b of keep) {
      const what = `resetAllocator: block ${physName(b.phys)} order ${String(b.order)}`;
      checkOrder(b.order, what);
      const off = typeof b.phys === "bigint" ? Number(b.phys) - this.#baseNum : NaN;
      const size = PAGE_SIZE << b.order;
      if (!(off >= 0 && off + size <= this.memoryBytes)) {
        throw new LiveUpdateError("EINVAL", `${what} is outside RAM [${hex(this.base)}, ${hex(this.end)})`);
      }
      if (off % size !== 0) throw new LiveUpdateError("EINVAL", `${what} is not naturally aligned`);
      const index = off / PAGE_SIZE;
      list.push([index, b.order]);
    }
    list.sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < list.length; i++) {
      const [prev, prevOrder] = list[i - 1]!;
      if (list[i]![0] < prev + (1 << prevOrder)) {
        throw new LiveUpdateError(
          "EINVAL",
          `resetAllocator: block ${hex(this.#physOf(list[i]![0]))} overlaps block ${hex(this.#physOf(prev))} order ${prevOrder}`,
        );
      }
    }
    this.#alloc.reset(list);
    this.#generation++;
  }

  // ---------------------------------------------------------------- image

  #imageBlocks(preservedOnly: boolean): ImageBlock[] {
    const alloc = this.#alloc;
    const out: ImageBlock[] = [];
    const keepPreserved = (index: number, order: number): void => {
      out.push({ index, order, preserved: "all" });
    };
    alloc.forEachBlock((index, order) => {
      if (preservedOnly) {
        alloc.splitPreserved(index, order, keepPreserved);
        return;
      }
      const n = 1 << order;
      const kept = alloc.countPreserved(index, n);
      if (kept === 0) out.push({ index, order, preserved: "none" });
      else if (kept === n) out.push({ index, order, preserved: "all" });
      else {
        const bitmap = new Uint8Array(Math.max(1, n / 8));
        for (let i = 0; i < n; i++)
          if (alloc.flagsOf(index + i) & PG_PRESERVED) bitmap[i >> 3]! |= 1 << (i & 7);
        out.push({ index, order, preserved: bitmap });
      }
    });
    return out;
  }

  /**
   * Writes the machine (RAM size and base, KHO root, allocated blocks with their orders and
   * preserved marks, and the contents of allocated pages) to an image file, atomically replacing
   * `path` (temporary file in the same directory, fsync, rename). Free pages are not stored;
   * with `options.preservedOnly` only preserved pages are.
   * The machine must not be modified while the save is pending.
   *
   * @throws {@link LiveUpdateError} `EBUSY` when allocations, preserved marks or the KHO root
   *   changed while saving (nothing is written then); for an I/O failure the Node.js errno
   *   (`ENOENT`, `ENOSPC`, `EISDIR`, … — `EIO` when it has none in {@link ERRNO}) with the
   *   original error as `cause`; `EIO` with `cause` when `onProgress` throws. In every failure
   *   case `path` keeps its previous contents.
   */
  async save(path: string, options: MachineSaveOptions = {}): Promise<void> {
    const generation = this.#generation;
    try {
      await this.#save(path, options, generation);
    } catch (e) {
      if (e instanceof LiveUpdateError) throw e;
      const errno = (e as NodeJS.ErrnoException | undefined)?.code;
      const code: ErrnoCode =
        errno !== undefined && Object.hasOwn(ERRNO, errno) ? (errno as ErrnoCode) : "EIO";
      const detail = e instanceof Error ? e.message : String(e);
      throw new LiveUpdateError(code, `saving machine image ${path} failed: ${detail}`, { cause: e });
    }
  }

  async #save(path: string, options: MachineSaveOptions, generation: number): Promise<void> {
    await writeMachineImage(
      path,
      {
        ramSize: this.memoryBytes,
        base: this.base,
        khoRoot: this.#khoRoot,
        blocks: this.#imageBlocks(options.preservedOnly ?? false),
        readPages: (offset, out) => this.#contents.readInto(offset, out.length, out),
        hardware:
          this.hardware.size > 0 || this.#timeNs !== 0n
            ? encodeHardwareSection(this.#timeNs, this.hardware.snapshot())
            : undefined,
      },
      {
        onProgress: options.onProgress,
        beforeCommit: () => {
          if (this.#generation !== generation) {
            throw new LiveUpdateError(
              "EBUSY",
              `machine image ${path}: the machine changed while it was being saved`,
            );
          }
        },
      },
    );
  }

  /**
   * Loads a machine saved with {@link Machine.save}: same RAM size, base and KHO root, the same
   * allocated blocks (orders and preserved marks) with their contents. Every other page reads
   * as poison. Its hardware is rebuilt, in the saved order, by the loaders of `options.hardware`,
   * and its clock reads the saved time.
   *
   * @throws `MachineImageError` when the file is missing or unreadable (with `cause`),
   *   truncated, corrupt (checksum), not a machine image, or of another format version or page
   *   size; when it holds hardware of a kind no loader rebuilds, or a loader throws (`cause`).
   *   Nothing outside the new machine is affected by a failed load.
   */
  static async load(path: string, options: MachineLoadOptions = {}): Promise<Machine> {
    const { header, blocks, target, hardware } = await readMachineImage(path, (h) => {
      const m = new Machine({ memory: h.ramSize, base: h.base });
      return {
        machine: m,
        loadPages: (offset: number, bytes: Uint8Array) => m.#contents.load(offset, bytes),
      };
    });
    const m = target.machine;
    m.#setBlocks(blocks);
    m.#khoRoot = header.khoRoot;
    if (hardware) m.#loadHardware(path, hardware, options.hardware ?? []);
    return m;
  }

  #loadHardware(path: string, section: Buffer, loaders: readonly HardwareLoader[]): void {
    const decoded = decodeHardwareSection(section, path);
    this.#timeNs = decoded.timeNs;
    const byKind = new Map(loaders.map((l) => [l.kind, l]));
    for (const r of decoded.records) {
      const loader = byKind.get(r.kind);
      if (!loader) {
        throw new MachineImageError(path, `no loader for hardware "${r.name}" of kind "${r.kind}"`);
      }
      try {
        this.hardware.attach(loader.load(this, r.name, r.state));
      } catch (e) {
        throw new MachineImageError(
          path,
          `cannot rebuild hardware "${r.name}" (${r.kind}): ${(e as Error).message}`,
          { cause: e },
        );
      }
    }
  }

  /** Makes exactly `blocks` (ascending) allocated, with their preserved marks; contents untouched. */
  #setBlocks(blocks: readonly ImageBlock[]): void {
    this.#alloc.reset(blocks.map((b) => [b.index, b.order] as const));
    for (const b of blocks) {
      const n = 1 << b.order;
      if (b.preserved === "all") this.#alloc.markPreserved(b.index, n);
      else if (b.preserved instanceof Uint8Array) {
        for (let i = 0; i < n; i++)
          if (b.preserved[i >> 3]! & (1 << (i & 7))) this.#alloc.markPreserved(b.index + i, 1);
      }
    }
  }

  // ---------------------------------------------------------------- boot checkpoint

  #openCheckpoint(): MachineCheckpoint {
    if (this.#checkpoint !== undefined)
      throw new LiveUpdateError("EBUSY", "a kernel is already booting on this machine");
    const contents = this.#contents;
    const state: CheckpointState = {
      khoRoot: this.#khoRoot,
      allocator: this.#alloc.snapshot(),
      pages: new PageSnapshot(contents),
    };
    // Hardware a booting kernel reprograms (e.g. IOMMU context entries) goes back too.
    const hardware = this.hardware.list().map((h) => h.checkpoint?.());
    this.#checkpoint = state;
    const close = (): void => {
      if (this.#checkpoint !== state) throw new LiveUpdateError("EINVAL", "this checkpoint is closed");
      this.#checkpoint = undefined;
    };
    return {
      commit: close,
      rollback: () => {
        close();
        state.pages.restore();
        this.#alloc.restore(state.allocator);
        this.#khoRoot = state.khoRoot;
        for (let i = hardware.length - 1; i >= 0; i--) hardware[i]?.();
        this.#generation++;
      },
    };
  }
}

/**
 * Opens a checkpoint of `machine` (internal to the boot path, not part of the package API): until
 * `commit()` or `rollback()`, every change to allocations, preserved marks, the KHO root and the
 * contents of pages that held data can be undone. See checkpoint.ts for what is recorded.
 * `EBUSY` when one is open already.
 */
export function openMachineCheckpoint(machine: Machine): MachineCheckpoint {
  return openCheckpoint(machine);
}

/**
 * `machine.view(phys, length)` for a caller about to write through the view (internal): an open
 * checkpoint saves the pages first. KHO uses it when it hands a claimed folio to its new owner.
 */
export function viewForWrite(machine: Machine, phys: bigint, length: number): Uint8Array {
  return writableView(machine, phys, length);
}

/**
 * True when the `pages` pages from RAM page index `first` (0 = the page at `machine.base`) are
 * all marked preserved (internal: KHO's early-boot check of every preserved-memory map entry,
 * without a bigint per entry). The caller checked that the range lies in RAM.
 */
export function pagesPreserved(machine: Machine, first: number, pages: number): boolean {
  return preservedPages(machine, first, pages);
}

/**
 * {@link Machine.resetAllocator} for blocks the caller already validated (internal: KHO's early
 * boot, which checks alignment, range and overlap while it reads the map): `first[i]` is the RAM
 * page index of block `i`, `orders[i]` its order, in strictly ascending, non-overlapping order.
 */
export function resetAllocatorSorted(
  machine: Machine,
  first: ArrayLike<number>,
  orders: ArrayLike<number>,
): void {
  resetSorted(machine, first, orders);
}
