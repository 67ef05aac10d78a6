/**
 * Kexec HandOver, incoming side: what the next kernel does with the root address alone.
 *
 * Early boot ({@link KhoIncoming.boot}): validate the root FDT and the preserved-memory map from
 * the root's physical address, reading only pages the map (and the machine's preserved marks)
 * vouch for; then rebuild the page allocator so exactly the preserved ranges are in use.
 * Afterwards subsystems look up their blobs by name ({@link KhoIncoming.getSubtree}, `ENOENT` if
 * absent) and claim preserved folios with {@link KhoIncoming.restore} / `restoreFree`.
 * Restoring an address that was not handed over, or twice, fails with `EINVAL`. Anything corrupt
 * at boot is a {@link KernelPanicError} naming the address.
 *
 * @module
 */
import { FdtError, KernelPanicError, LiveUpdateError } from "../errors.js";
import {
  decodeFdt,
  FDT_HEADER_SIZE,
  getProp,
  readFdtString,
  readFdtU64,
  peekFdtHeader,
} from "../fdt/index.js";
import { hex } from "../machine/hex.js";
import { pagesPreserved, resetAllocatorSorted, viewForWrite } from "../machine/machine.js";
import { MAX_ORDER, PAGE_SHIFT, PAGE_SIZE, type Machine } from "../machine/index.js";
import {
  KHO_COMPATIBLE,
  KHO_MAX_MAP_PAGES,
  KHO_MAX_ROOT_SIZE,
  MAP_ENTRIES_PER_PAGE,
  MAP_ENTRY_SIZE,
  MAP_HEADER_SIZE,
  pfnOf,
} from "./format.js";

const PAGE_BYTES = BigInt(PAGE_SIZE);
const PAGE_SHIFT_N = BigInt(PAGE_SHIFT);
/** Range state: handed over and not claimed yet. */
const HANDED_OVER = 0;
/** Range state: claimed with {@link KhoIncoming.restore}. */
const RESTORED = 1;
/** Range state: claimed and freed ({@link KhoIncoming.restoreFree}). */
const FREED = 2;

/** `[pfn, pfn + 2^order)` as the physical address of its first byte (messages only). */
const physOfPfn = (pfn: number): bigint => BigInt(pfn) << PAGE_SHIFT_N;

/**
 * The handed-over ranges: three parallel typed arrays sorted by pfn, found by binary search.
 *
 * Why not a `Map<pfn, {order, restored}>`, as before: a 64 GiB guest in 2 MiB folios hands over
 * 32 Ki ranges, and early boot, the memfd retrieve and finish each touch every one of them.
 * Measured on Node 20 (2 vCPUs, 64 GiB memfd, kexec + retrieve): the Map with an object per
 * range, the bigint entry decoding and the `[pfn, order]` tuples sorted for the allocator made
 * early boot 150–190 ms; reading the map as u32 words into these arrays (the writer emits it
 * sorted, so no sort) and handing them to the allocator as they are brought it to the figure in
 * the large-host benchmark. A lookup is 15 probes at 32 Ki ranges.
 */
interface IncomingRanges {
  readonly pfn: Float64Array;
  readonly order: Uint8Array;
  readonly state: Uint8Array;
}

/**
 * The incoming handover of one boot.
 *
 * @category Entry points
 */
export class KhoIncoming {
  private ranges: IncomingRanges = {
    pfn: new Float64Array(0),
    order: new Uint8Array(0),
    state: new Uint8Array(0),
  };
  private readonly subtrees = new Map<string, bigint>();
  private unrestored = 0;

  private constructor(
    readonly machine: Machine,
    /** Physical address of the root FDT the kernel booted from. */
    readonly root: bigint,
  ) {}

  /**
   * Validates the handover whose root is `machine.khoRoot` and rebuilds the allocator. Returns
   * `undefined` on a cold boot (root 0). Throws {@link KernelPanicError} on corrupt state.
   */
  static boot(machine: Machine): KhoIncoming | undefined {
    const root = machine.khoRoot;
    if (root === 0n) return undefined;
    const kho = new KhoIncoming(machine, root);
    kho.parse();
    return kho;
  }

  /** Reads bytes of the old kernel's memory during early boot; every page must be preserved. */
  private bootRead(phys: bigint, length: number, what: string): Uint8Array {
    const m = this.machine;
    const ramEnd = m.base + BigInt(m.memoryBytes);
    if (phys < m.base || phys + BigInt(length) > ramEnd) {
      throw new KernelPanicError(`${what} at ${hex(phys)} (+${length}) lies outside RAM`, phys);
    }
    const pages = Math.ceil((Number(phys % PAGE_BYTES) + length) / PAGE_SIZE);
    if (!m.isPreservedRange(phys, pages))
      throw new KernelPanicError(`${what} at ${hex(phys)} is not in preserved memory`, phys);
    return m.peek(phys, length);
  }

  private parse(): void {
    const root = this.root;
    if (root % PAGE_BYTES !== 0n)
      throw new KernelPanicError(`KHO root ${hex(root)} is not page aligned`, root);
    const head = this.bootRead(root, FDT_HEADER_SIZE, "KHO root FDT header");
    let total: number;
    try {
      total = peekFdtHeader(head).totalSize;
    } catch (e) {
      throw new KernelPanicError(`KHO root at ${hex(root)}: ${(e as Error).message}`, root, { cause: e });
    }
    if (total > KHO_MAX_ROOT_SIZE)
      throw new KernelPanicError(`KHO root at ${hex(root)} claims ${total} bytes`, root);
    let mapHead: bigint;
    try {
      const tree = decodeFdt(this.bootRead(root, total, "KHO root FDT"));
      const compatible = readFdtString(getProp(tree.root, "compatible"), "/compatible");
      if (compatible !== KHO_COMPATIBLE) {
        throw new FdtError(`compatible is ${JSON.stringify(compatible)}, expected "${KHO_COMPATIBLE}"`);
      }
      mapHead = readFdtU64(getProp(tree.root, "preserved-memory-map"), "/preserved-memory-map");
      for (const child of tree.root.children) {
        this.subtrees.set(child.name, readFdtU64(getProp(child, "fdt"), `/${child.name}/fdt`));
      }
    } catch (e) {
      if (e instanceof KernelPanicError) throw e;
      throw new KernelPanicError(`KHO root at ${hex(root)}: ${(e as Error).message}`, root, { cause: e });
    }
    const ranges = this.readMap(mapHead);
    const rootIndex = findPfn(ranges.pfn, pfnOf(root));
    if (rootIndex < 0 || PAGE_SIZE << ranges.order[rootIndex]! < total) {
      throw new KernelPanicError(`KHO root at ${hex(root)} is not covered by the preserved-memory map`, root);
    }
    const ramStart = pfnOf(this.machine.base);
    const first = new Float64Array(ranges.pfn.length);
    for (let i = 0; i < first.length; i++) {
      first[i] = ranges.pfn[i]! - ramStart;
      this.unrestored += 1 << ranges.order[i]!;
    }
    resetAllocatorSorted(this.machine, first, ranges.order);
    this.ranges = ranges;
    // The map pages and the root were consumed above: give them back to the allocator.
    for (const p of this.mapPages) this.restoreFree(p);
    this.restoreFree(root);
  }

  private mapPages: bigint[] = [];

  private readMap(head: bigint): IncomingRanges {
    const seen = new Set<bigint>();
    const ramStart = pfnOf(this.machine.base);
    const ramEnd = ramStart + this.machine.memoryBytes / PAGE_SIZE;
    let pfns = new Float64Array(MAP_ENTRIES_PER_PAGE);
    let orders = new Uint8Array(MAP_ENTRIES_PER_PAGE);
    let n = 0;
    let sorted = true;
    for (let page = head, index = 0; page !== 0n; index++) {
      if (index >= KHO_MAX_MAP_PAGES) {
        throw new KernelPanicError(
          `preserved-memory map has more than ${KHO_MAX_MAP_PAGES} pages (page ${index} at ${hex(page)})`,
          page,
        );
      }
      if (seen.has(page))
        throw new KernelPanicError(`preserved-memory map page ${index} at ${hex(page)} forms a cycle`, page);
      seen.add(page);
      if (page % PAGE_BYTES !== 0n) {
        throw new KernelPanicError(
          `preserved-memory map page ${index} at ${hex(page)} is not page aligned`,
          page,
        );
      }
      const bytes = this.bootRead(page, PAGE_SIZE, `preserved-memory map page ${index}`);
      const dv = new DataView(bytes.buffer, bytes.byteOffset, PAGE_SIZE);
      const next = dv.getBigUint64(0, true);
      const count = dv.getBigUint64(8, true);
      if (count === 0n || count > BigInt(MAP_ENTRIES_PER_PAGE)) {
        throw new KernelPanicError(
          `preserved-memory map page ${index} at ${hex(page)} has bad count ${count}`,
          page,
        );
      }
      if (n + Number(count) > pfns.length) {
        const grown = new Float64Array(pfns.length * 2);
        grown.set(pfns);
        pfns = grown;
        const grownOrders = new Uint8Array(orders.length * 2);
        grownOrders.set(orders);
        orders = grownOrders;
      }
      for (let j = 0; j < Number(count); j++) {
        const off = MAP_HEADER_SIZE + j * MAP_ENTRY_SIZE;
        const lo = dv.getUint32(off, true);
        const hi = dv.getUint32(off + 4, true);
        const order = dv.getUint32(off + 8, true);
        if (order > MAX_ORDER || dv.getUint32(off + 12, true) !== 0) {
          throw new KernelPanicError(
            `${entryName(index, page, j)}: bad order ${order} or reserved field`,
            page,
          );
        }
        // phys = hi·2^32 + lo, so pfn = hi·2^20 + lo / 4096: exact as a double below 2^53.
        const pfn = hi * 2 ** (32 - PAGE_SHIFT) + (lo >>> PAGE_SHIFT);
        const pages = 1 << order;
        if ((lo & (PAGE_SIZE - 1)) !== 0 || pfn % pages !== 0 || pfn < ramStart || pfn + pages > ramEnd) {
          throw new KernelPanicError(
            `${entryName(index, page, j)}: range ${hex(dv.getBigUint64(off, true))} order ${order} is misaligned or outside RAM`,
            page,
          );
        }
        if (!pagesPreserved(this.machine, pfn - ramStart, pages)) {
          throw new KernelPanicError(
            `${entryName(index, page, j)}: range ${hex(physOfPfn(pfn))} is not preserved memory`,
            page,
          );
        }
        if (n > 0 && pfn <= pfns[n - 1]!) sorted = false;
        pfns[n] = pfn;
        orders[n] = order;
        n++;
      }
      this.mapPages.push(page);
      page = next;
    }
    pfns = pfns.subarray(0, n);
    orders = orders.subarray(0, n);
    if (!sorted) {
      // Sort (pfn, order) pairs as one key each: pfn < 2^40 in a 52-bit address space, so
      // pfn·16 + order stays exact.
      const keys = new Float64Array(n);
      for (let i = 0; i < n; i++) keys[i] = pfns[i]! * 16 + orders[i]!;
      keys.sort();
      for (let i = 0; i < n; i++) {
        pfns[i] = Math.floor(keys[i]! / 16);
        orders[i] = keys[i]! % 16;
      }
    }
    // Duplicates and overlaps, on the ranges sorted by pfn.
    for (let i = 1, end = pfns[0]! + (1 << orders[0]!); i < n; i++) {
      const pfn = pfns[i]!;
      if (pfn === pfns[i - 1]) {
        const phys = physOfPfn(pfn);
        throw new KernelPanicError(`preserved-memory map: range ${hex(phys)} listed twice`, phys);
      }
      if (pfn < end) {
        const phys = physOfPfn(pfn);
        throw new KernelPanicError(`preserved ranges overlap at ${hex(phys)}`, phys);
      }
      end = pfn + (1 << orders[i]!);
    }
    // The map must list its own pages (as order-0 ranges), wherever they sort.
    this.mapPages.forEach((page, index) => {
      const at = findPfn(pfns, pfnOf(page));
      if (at < 0 || orders[at] !== 0) {
        throw new KernelPanicError(
          `preserved-memory map page ${index} at ${hex(page)} is not listed in the map`,
          page,
        );
      }
    });
    return { pfn: pfns, order: orders, state: new Uint8Array(n) };
  }

  /** Index of the handed-over range starting at `phys` in {@link KhoIncoming.ranges}, or -1. */
  private indexOf(phys: bigint): number {
    return phys % PAGE_BYTES === 0n ? findPfn(this.ranges.pfn, pfnOf(phys)) : -1;
  }

  /** Physical address of the blob the previous kernel published as `name`. `ENOENT` when absent. */
  getSubtree(name: string): bigint {
    const phys = this.subtrees.get(name);
    if (phys === undefined)
      throw new LiveUpdateError("ENOENT", `the previous kernel handed over no "${name}" subtree`);
    return phys;
  }

  /** Names of all handed-over subtrees. */
  subtreeNames(): string[] {
    return [...this.subtrees.keys()];
  }

  /**
   * True when `[phys, phys + length)` lies inside one handed-over range that is not restored yet
   * (`restored` false) or inside any handed-over range (`restored` true).
   */
  covers(phys: bigint, length: number, allowRestored = false): boolean {
    const i = this.indexOf(phys);
    if (i < 0) return false;
    const state = this.ranges.state[i];
    if (state === FREED || (state === RESTORED && !allowRestored)) return false;
    return length <= PAGE_SIZE << this.ranges.order[i]!;
  }

  /** Order of the handed-over range starting at `phys`, if any. */
  orderOf(phys: bigint): number | undefined {
    const i = this.indexOf(phys);
    return i < 0 || this.ranges.state[i] === FREED ? undefined : this.ranges.order[i];
  }

  /**
   * Claims a handed-over folio: it becomes ordinary memory of this kernel. Returns its order and a
   * view, made when first read (a caller that only takes the folio over, such as memfd with
   * thousands of 2 MiB folios, pays nothing for it). `EINVAL` if `phys` was not handed over (or
   * was restored already), or the order differs.
   */
  restore(phys: bigint, order?: number): { order: number; view: Uint8Array } {
    const i = this.indexOf(phys);
    if (i < 0 || this.ranges.state[i] !== HANDED_OVER) {
      throw new LiveUpdateError(
        "EINVAL",
        `${hex(phys)} is not preserved memory handed over by the previous kernel`,
      );
    }
    const rangeOrder = this.ranges.order[i]!;
    if (order !== undefined && order !== rangeOrder) {
      throw new LiveUpdateError(
        "EINVAL",
        `${hex(phys)} was handed over as order ${rangeOrder}, not ${order}`,
      );
    }
    this.ranges.state[i] = RESTORED;
    this.unrestored -= 1 << rangeOrder;
    return new RestoredFolio(this.machine, phys, rangeOrder);
  }

  /** Restores and immediately frees a handed-over folio. Errors as {@link KhoIncoming.restore}. */
  restoreFree(phys: bigint): void {
    const { order } = this.restore(phys);
    this.ranges.state[this.indexOf(phys)] = FREED;
    this.machine.freePages(phys, order);
  }

  /** Pages handed over and not restored yet (leak accounting). */
  get unrestoredPages(): number {
    return this.unrestored;
  }
}

/**
 * What {@link KhoIncoming.restore} returns: the order, and a view made when first read (one
 * object per folio, no closure: memfd restores 32 Ki of them for a 64 GiB guest).
 */
class RestoredFolio {
  #view: Uint8Array | undefined;

  constructor(
    private readonly machine: Machine,
    private readonly phys: bigint,
    readonly order: number,
  ) {}

  get view(): Uint8Array {
    // The new owner may write through the view: during boot the machine checkpoint saves the
    // pages when the view is made.
    return (this.#view ??= viewForWrite(this.machine, this.phys, PAGE_SIZE << this.order));
  }
}

/** A map entry in messages. */
function entryName(page: number, phys: bigint, entry: number): string {
  return `preserved-memory map page ${page} (${hex(phys)}) entry ${entry}`;
}

/** Index of `pfn` in the ascending `pfns`, or -1 (binary search). */
function findPfn(pfns: Float64Array, pfn: number): number {
  let lo = 0;
  let hi = pfns.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const v = pfns[mid]!;
    if (v === pfn) return mid;
    if (v < pfn) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}
