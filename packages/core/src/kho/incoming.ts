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
import { viewForWrite } from "../machine/machine.js";
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

/** One preserved range handed over by the previous kernel. */
interface IncomingRange {
  readonly order: number;
  restored: boolean;
}

/**
 * The incoming handover of one boot.
 *
 * @category Entry points
 */
export class KhoIncoming {
  private readonly ranges = new Map<number, IncomingRange>();
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
    const pages = Math.ceil((Number(phys % BigInt(PAGE_SIZE)) + length) / PAGE_SIZE);
    if (!m.isPreservedRange(phys, pages))
      throw new KernelPanicError(`${what} at ${hex(phys)} is not in preserved memory`, phys);
    return m.peek(phys, length);
  }

  private parse(): void {
    const root = this.root;
    if (root % BigInt(PAGE_SIZE) !== 0n)
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
    const keep = this.readMap(mapHead);
    const rootOrder = keep.get(pfnOf(root));
    if (rootOrder === undefined || PAGE_SIZE << rootOrder < total) {
      throw new KernelPanicError(`KHO root at ${hex(root)} is not covered by the preserved-memory map`, root);
    }
    this.machine.resetAllocator(
      [...keep].map(([pfn, order]) => ({ phys: BigInt(pfn) << BigInt(PAGE_SHIFT), order })),
    );
    for (const [pfn, order] of keep) {
      this.ranges.set(pfn, { order, restored: false });
      this.unrestored += 1 << order;
    }
    // The map pages and the root were consumed above: give them back to the allocator.
    for (const p of this.mapPages) this.restoreFree(p);
    this.restoreFree(root);
  }

  private mapPages: bigint[] = [];

  private readMap(head: bigint): Map<number, number> {
    const keep = new Map<number, number>();
    const seen = new Set<bigint>();
    const ramStart = pfnOf(this.machine.base);
    const ramEnd = ramStart + this.machine.memoryBytes / PAGE_SIZE;
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
      if (page % BigInt(PAGE_SIZE) !== 0n) {
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
      for (let j = 0; j < Number(count); j++) {
        const off = MAP_HEADER_SIZE + j * MAP_ENTRY_SIZE;
        const phys = dv.getBigUint64(off, true);
        const order = dv.getUint32(off + 8, true);
        const where = `preserved-memory map page ${index} (${hex(page)}) entry ${j}`;
        if (order > MAX_ORDER || dv.getUint32(off + 12, true) !== 0) {
          throw new KernelPanicError(`${where}: bad order ${order} or reserved field`, page);
        }
        const pfn = pfnOf(phys);
        if (phys % BigInt(PAGE_SIZE << order) !== 0n || pfn < ramStart || pfn + (1 << order) > ramEnd) {
          throw new KernelPanicError(
            `${where}: range ${hex(phys)} order ${order} is misaligned or outside RAM`,
            page,
          );
        }
        if (!this.machine.isPreservedRange(phys, 1 << order)) {
          throw new KernelPanicError(`${where}: range ${hex(phys)} is not preserved memory`, page);
        }
        if (keep.has(pfn)) throw new KernelPanicError(`${where}: range ${hex(phys)} listed twice`, page);
        keep.set(pfn, order);
      }
      this.mapPages.push(page);
      page = next;
    }
    // The map must list its own pages (as order-0 ranges), wherever they sort.
    this.mapPages.forEach((page, index) => {
      if (keep.get(pfnOf(page)) !== 0) {
        throw new KernelPanicError(
          `preserved-memory map page ${index} at ${hex(page)} is not listed in the map`,
          page,
        );
      }
    });
    // Overlap check on the sorted ranges.
    let end = -1;
    for (const [pfn, order] of [...keep].sort((a, b) => a[0] - b[0])) {
      if (pfn < end) {
        const phys = BigInt(pfn) << BigInt(PAGE_SHIFT);
        throw new KernelPanicError(`preserved ranges overlap at ${hex(phys)}`, phys);
      }
      end = pfn + (1 << order);
    }
    return keep;
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
    if (phys % BigInt(PAGE_SIZE) !== 0n) return false;
    const r = this.ranges.get(pfnOf(phys));
    if (!r || (r.restored && !allowRestored)) return false;
    return length <= PAGE_SIZE << r.order;
  }

  /** Order of the handed-over range starting at `phys`, if any. */
  orderOf(phys: bigint): number | undefined {
    return phys % BigInt(PAGE_SIZE) === 0n ? this.ranges.get(pfnOf(phys))?.order : undefined;
  }

  /**
   * Claims a handed-over folio: it becomes ordinary memory of this kernel. Returns its order and a
   * view. `EINVAL` if `phys` was not handed over (or was restored already), or the order differs.
   */
  restore(phys: bigint, order?: number): { order: number; view: Uint8Array } {
    const r = phys % BigInt(PAGE_SIZE) === 0n ? this.ranges.get(pfnOf(phys)) : undefined;
    if (!r || r.restored) {
      throw new LiveUpdateError(
        "EINVAL",
        `${hex(phys)} is not preserved memory handed over by the previous kernel`,
      );
    }
    if (order !== undefined && order !== r.order) {
      throw new LiveUpdateError("EINVAL", `${hex(phys)} was handed over as order ${r.order}, not ${order}`);
    }
    r.restored = true;
    this.unrestored -= 1 << r.order;
    // The new owner may write: during boot the machine checkpoint saves the pages first.
    return { order: r.order, view: viewForWrite(this.machine, phys, PAGE_SIZE << r.order) };
  }

  /** Restores and immediately frees a handed-over folio. Errors as {@link KhoIncoming.restore}. */
  restoreFree(phys: bigint): void {
    const { order } = this.restore(phys);
    this.ranges.delete(pfnOf(phys));
    this.machine.freePages(phys, order);
  }

  /** Pages handed over and not restored yet (leak accounting). */
  get unrestoredPages(): number {
    return this.unrestored;
  }
}
