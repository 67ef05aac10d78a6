/**
 * The I/O page-table format and the kernel's code that edits it (Linux `drivers/iommu/generic_pt`
 * for a VT-d second-stage table): four levels of one-page tables in the machine's physical pages,
 * 512 little-endian u64 entries each, translating a 48-bit IOVA.
 *
 *   level 3 (top)  IOVA bits 47..39   entry → level-2 table
 *   level 2        IOVA bits 38..30   entry → level-1 table, or a 1 GiB leaf (PS set)
 *   level 1        IOVA bits 29..21   entry → level-0 table, or a 2 MiB leaf (PS set)
 *   level 0        IOVA bits 20..12   4 KiB leaf
 *
 * Entry bits: 0 READ, 1 WRITE, 7 PS (leaf above level 0), 12..51 physical address. An entry with
 * neither READ nor WRITE is not present. Table entries carry READ|WRITE.
 *
 * Happy path: {@link IoPageTable.create} allocates the top table; `map` installs leaves (the
 * largest that alignment and physical contiguity allow) allocating tables as needed; `unmap`
 * clears exactly the leaves of a range that was mapped as a whole; `free` releases every table
 * page. Unhappy paths: a range that is not page aligned or leaves the 48-bit space `EINVAL`, a
 * range already (partly) mapped `EEXIST`, unmapping part of a large leaf `EINVAL`, no memory for
 * a table `ENOMEM` — each leaves the table exactly as before. The hardware walks the same bytes
 * (`IommuUnit`); changing a table does not reach the IOTLB until software invalidates it.
 *
 * Empty lower tables are kept until `free` (the kernel's generic_pt frees them lazily too); the
 * cost is at most one table page per 2 MiB of IOVA space ever mapped.
 *
 * @module
 */
import { LiveUpdateError, PAGE_SIZE, type Machine } from "@luo/core";

/** DMA permission: the device may read. */
export const IOMMU_READ = 1;
/** DMA permission: the device may write. */
export const IOMMU_WRITE = 2;

/** Entry bit: readable. */
export const PTE_READ = 1n;
/** Entry bit: writable. */
export const PTE_WRITE = 2n;
/** Entry bit: this entry above level 0 is a large leaf. */
export const PTE_PS = 0x80n;
/** Entry bits holding the physical address. */
export const PTE_ADDR_MASK = 0x000f_ffff_ffff_f000n;
/** Level of the top table (four levels: 3..0). */
export const PT_TOP_LEVEL = 3;
/** Width of the IOVA space in bits. */
export const PT_VASZ = 48;
/** Entries per table page. */
export const PT_ENTRIES = 512;
/** Bytes one entry at `level` covers: 4 KiB, 2 MiB, 1 GiB, 512 GiB. */
export const levelSize = (level: number): number => 2 ** (12 + 9 * level);

const IOVA_LIMIT = 2 ** PT_VASZ;
const SIZE_2M = levelSize(1);
const SIZE_1G = levelSize(2);

/** One leaf found by {@link IoPageTable.lookup}. */
export interface PtLeaf {
  /** Physical address the IOVA translates to. */
  readonly phys: bigint;
  /** Level of the leaf (0: 4 KiB, 1: 2 MiB, 2: 1 GiB). */
  readonly level: number;
  /** IOMMU_READ | IOMMU_WRITE. */
  readonly prot: number;
}

/** Leaf counts by size. */
export interface PtStats {
  /** Table pages, the top one included. */
  readonly tablePages: number;
  /** 4 KiB leaves. */
  readonly leaves4k: number;
  /** 2 MiB leaves. */
  readonly leaves2m: number;
  /** 1 GiB leaves. */
  readonly leaves1g: number;
}

/** Index of `iova` in a table at `level`. */
export const ptIndex = (iova: number, level: number): number =>
  Math.floor(iova / levelSize(level)) % PT_ENTRIES;

/** `EINVAL` unless `[iova, iova + size)` is a non-empty page-aligned range of the IOVA space. */
export function checkIovaRange(iova: number, size: number, what: string): void {
  if (
    !Number.isSafeInteger(iova) ||
    !Number.isSafeInteger(size) ||
    iova < 0 ||
    size <= 0 ||
    iova % PAGE_SIZE !== 0 ||
    size % PAGE_SIZE !== 0 ||
    iova + size > IOVA_LIMIT
  ) {
    throw new LiveUpdateError(
      "EINVAL",
      `${what}: IOVA range ${String(iova)}+${String(size)} is not page aligned inside the ${PT_VASZ}-bit space`,
    );
  }
}

/**
 * An I/O page table in machine memory, as the kernel edits it (see the module comment).
 * Addresses inside the model are numbers (RAM lies below 2^52, so they are exact).
 */
export class IoPageTable {
  readonly #machine: Machine;
  /** Table page phys → a view of its 512 entries. */
  readonly #tables = new Map<number, DataView>();
  #leaves = [0, 0, 0];

  private constructor(
    machine: Machine,
    /** Physical address of the top (level-3) table. */
    readonly top: bigint,
  ) {
    this.#machine = machine;
  }

  /** Allocates an empty table. `ENOMEM` when no page is free. */
  static create(machine: Machine): IoPageTable {
    const top = machine.allocPages(0);
    const t = new IoPageTable(machine, top);
    t.#view(Number(top));
    return t;
  }

  /**
   * Takes over a table that already exists in memory (handed over by the previous kernel): walks
   * it to learn its pages and leaves. `EINVAL` when an entry points outside RAM or a table is
   * reached twice.
   */
  static adopt(machine: Machine, top: bigint): IoPageTable {
    const t = new IoPageTable(machine, top);
    t.#adoptTable(Number(top), PT_TOP_LEVEL);
    return t;
  }

  #adoptTable(phys: number, level: number): void {
    if (this.#tables.has(phys)) {
      throw new LiveUpdateError("EINVAL", `I/O page table 0x${phys.toString(16)} is referenced twice`);
    }
    const dv = this.#view(phys);
    for (let i = 0; i < PT_ENTRIES; i++) {
      const lo = dv.getUint32(i * 8, true); // flag bits first: most entries of a sparse table are empty
      if ((lo & 3) === 0) continue;
      if (level === 0 || (lo & 0x80) !== 0) this.#leaves[level]!++;
      else this.#adoptTable(Number(dv.getBigUint64(i * 8, true) & PTE_ADDR_MASK), level - 1);
    }
  }

  #view(phys: number): DataView {
    let dv = this.#tables.get(phys);
    if (!dv) {
      const v = this.#machine.view(BigInt(phys), PAGE_SIZE);
      dv = new DataView(v.buffer, v.byteOffset, PAGE_SIZE);
      this.#tables.set(phys, dv);
    }
    return dv;
  }

  /** Every table page, the top one first. */
  tablePages(): bigint[] {
    return [...this.#tables.keys()].map((p) => BigInt(p));
  }

  /** Table pages and leaves by size. */
  stats(): PtStats {
    return {
      tablePages: this.#tables.size,
      leaves4k: this.#leaves[0]!,
      leaves2m: this.#leaves[1]!,
      leaves1g: this.#leaves[2]!,
    };
  }

  /** The leaf translating `iova`, if mapped. */
  lookup(iova: number): PtLeaf | undefined {
    let dv = this.#tables.get(Number(this.top))!;
    for (let level = PT_TOP_LEVEL; level >= 0; level--) {
      const e = dv.getBigUint64(ptIndex(iova, level) * 8, true);
      if ((e & (PTE_READ | PTE_WRITE)) === 0n) return undefined;
      const addr = Number(e & PTE_ADDR_MASK);
      if (level === 0 || (e & PTE_PS) !== 0n) {
        const prot = Number(e & (PTE_READ | PTE_WRITE));
        return { phys: BigInt(addr + (iova % levelSize(level))), level, prot };
      }
      dv = this.#tables.get(addr)!;
    }
    return undefined;
  }

  /**
   * Maps `[iova, iova + size)` to the physically contiguous `[phys, phys + size)` with `prot`.
   * All or nothing: on `EEXIST` or `ENOMEM` the table is as before (tables allocated meanwhile
   * stay, empty).
   */
  map(iova: number, phys: number, size: number, prot: number): void {
    checkIovaRange(iova, size, "map");
    if (phys % PAGE_SIZE !== 0)
      throw new LiveUpdateError("EINVAL", `map: phys 0x${phys.toString(16)} unaligned`);
    if ((prot & (IOMMU_READ | IOMMU_WRITE)) === 0 || (prot & ~(IOMMU_READ | IOMMU_WRITE)) !== 0) {
      throw new LiveUpdateError("EINVAL", `map: bad protection ${String(prot)}`);
    }
    const taken = this.#firstMapped(iova, iova + size);
    if (taken !== undefined)
      throw new LiveUpdateError("EEXIST", `map: IOVA 0x${taken.toString(16)} is already mapped`);
    let done = 0;
    try {
      while (done < size) {
        const va = iova + done;
        const pa = phys + done;
        const left = size - done;
        let level = 0;
        if (va % SIZE_1G === 0 && pa % SIZE_1G === 0 && left >= SIZE_1G) level = 2;
        else if (va % SIZE_2M === 0 && pa % SIZE_2M === 0 && left >= SIZE_2M) level = 1;
        this.#setLeaf(va, pa, level, prot);
        done += levelSize(level);
      }
    } catch (e) {
      if (done > 0) this.unmap(iova, done);
      throw e;
    }
  }

  /** First mapped IOVA in `[iova, end)`, skipping whole absent subtrees. */
  #firstMapped(iova: number, end: number): number | undefined {
    let va = iova;
    outer: while (va < end) {
      let dv = this.#tables.get(Number(this.top))!;
      for (let level = PT_TOP_LEVEL; level >= 0; level--) {
        const e = dv.getBigUint64(ptIndex(va, level) * 8, true);
        if ((e & (PTE_READ | PTE_WRITE)) === 0n) {
          const s = levelSize(level);
          va = va - (va % s) + s;
          continue outer;
        }
        if (level === 0 || (e & PTE_PS) !== 0n) return va;
        dv = this.#tables.get(Number(e & PTE_ADDR_MASK))!;
      }
    }
    return undefined;
  }

  #setLeaf(iova: number, phys: number, level: number, prot: number): void {
    let dv = this.#tables.get(Number(this.top))!;
    for (let l = PT_TOP_LEVEL; l > level; l--) {
      const at = ptIndex(iova, l) * 8;
      const e = dv.getBigUint64(at, true);
      let next: number;
      if ((e & (PTE_READ | PTE_WRITE)) === 0n) {
        next = Number(this.#machine.allocPages(0));
        this.#view(next);
        dv.setBigUint64(at, BigInt(next) | PTE_READ | PTE_WRITE, true);
      } else next = Number(e & PTE_ADDR_MASK);
      dv = this.#tables.get(next)!;
    }
    const leaf = BigInt(phys) | BigInt(prot) | (level > 0 ? PTE_PS : 0n);
    dv.setBigUint64(ptIndex(iova, level) * 8, leaf, true);
    this.#leaves[level]!++;
  }

  /**
   * Clears every leaf inside `[iova, iova + size)`; returns the bytes that were mapped. `EINVAL`
   * when a large leaf sticks out of the range (nothing is cleared then).
   */
  unmap(iova: number, size: number): number {
    checkIovaRange(iova, size, "unmap");
    const end = iova + size;
    const leaves: Array<[DataView, number, number]> = [];
    for (let va = iova; va < end;) {
      const found = this.#leafSlot(va);
      if (!found) {
        va = Math.floor(va / PAGE_SIZE + 1) * PAGE_SIZE;
        continue;
      }
      const [dv, at, level] = found;
      const s = levelSize(level);
      const start = va - (va % s);
      if (start < iova || start + s > end) {
        throw new LiveUpdateError(
          "EINVAL",
          `unmap: ${s >> 20} MiB leaf at IOVA 0x${start.toString(16)} crosses the range edge`,
        );
      }
      leaves.push([dv, at, level]);
      va = start + s;
    }
    let bytes = 0;
    for (const [dv, at, level] of leaves) {
      dv.setBigUint64(at, 0n, true);
      this.#leaves[level]!--;
      bytes += levelSize(level);
    }
    return bytes;
  }

  #leafSlot(iova: number): [DataView, number, number] | undefined {
    let dv = this.#tables.get(Number(this.top))!;
    for (let level = PT_TOP_LEVEL; level >= 0; level--) {
      const at = ptIndex(iova, level) * 8;
      const e = dv.getBigUint64(at, true);
      if ((e & (PTE_READ | PTE_WRITE)) === 0n) return undefined;
      if (level === 0 || (e & PTE_PS) !== 0n) return [dv, at, level];
      dv = this.#tables.get(Number(e & PTE_ADDR_MASK))!;
    }
    return undefined;
  }

  /** Frees every table page (the caller has made sure no hardware uses the table any more). */
  free(): void {
    for (const p of this.#tables.keys()) this.#machine.freePages(BigInt(p), 0);
    this.#tables.clear();
    this.#leaves = [0, 0, 0];
  }
}
