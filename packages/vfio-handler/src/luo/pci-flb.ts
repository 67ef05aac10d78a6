/**
 * The PCI core's File-Lifecycle-Bound state (`drivers/pci/liveupdate.c`): which devices, and
 * which bridges above them, the next kernel must leave alone.
 *
 * Old kernel: the FLB's `preserve` (first vfio device preserved) allocates `pci_ser` and an empty
 * device chain; {@link PciFlbOutgoing.preserve} records a device and every upstream bridge,
 * bridges refcounted per device below them. Checks, in order, with nothing changed on failure:
 * frozen (shutdown started) → `EINVAL`; for the device and every upstream bridge, a virtual
 * function or a function that needs a device-specific ACS quirk → `EINVAL`; the device already
 * preserved → `EBUSY`; a new block that cannot be allocated → `ENOMEM`. Unpreserve walks the
 * same path down; after the freeze it is refused (`EINVAL`, reported as a warning by callers).
 * The FLB's `unpreserve` (last device gone) frees everything.
 *
 * New kernel: {@link readPciFlb} validates what came over — `pci_ser` in a handed-over page, the
 * version, the block chain (cycles, counts, more than 10000 blocks, memory that was not handed
 * over), duplicate entries and `nr_devices` — and any problem is a `KernelPanicError` (from `@luo/core`)
 * ("Failed to retrieve incoming FLB data"). {@link PciFlbIncoming.isIncoming} answers "was this
 * device preserved and not finished yet"; {@link PciFlbIncoming.finish} drops a device and its
 * bridges; the FLB's `finish` panics if any device was never finished, then frees the pages.
 *
 * @module
 */
import {
  BlockChain,
  KernelPanicError,
  LiveUpdateError,
  defineFlb,
  readChain,
  type Flb,
  type Kho,
  type KhoIncoming,
  type PreservedBlock,
} from "@luo/core";
import type { PciFunction } from "../pci/function.js";
import {
  PCI_DEV_BLOCKS,
  PCI_DEV_SER,
  PCI_LUO_FLB_COMPATIBLE,
  PCI_LUO_FLB_VERSION,
  PCI_SER,
  pciKey,
  type PciDevRecord,
} from "./pci-flb-layout.js";

const hex = (v: bigint | number): string => `0x${v.toString(16)}`;

/** The path a preservation touches: the device, then its bridges up to the root. */
function pathOf(fn: PciFunction): PciFunction[] {
  const out: PciFunction[] = [fn];
  for (let b = fn.parent; b; b = b.parent) out.push(b);
  return out;
}

/** Outgoing PCI FLB object: the live `pci_ser` and its device chain. */
export class PciFlbOutgoing {
  readonly #ser: PreservedBlock;
  readonly #dv: DataView;
  readonly #chain: BlockChain;
  /** key → slot index and refcount. */
  readonly #slots = new Map<number, { index: number; refcount: number }>();
  readonly #free = new Set<number>();
  #used = 0;
  #frozen = false;

  /** @param kho - outgoing KHO; `ENOMEM` when the `pci_ser` page cannot be allocated */
  constructor(kho: Kho) {
    this.#ser = kho.allocPreserve(PCI_SER.size);
    this.#dv = new DataView(this.#ser.view.buffer, this.#ser.view.byteOffset, PCI_SER.size);
    this.#chain = new BlockChain(kho, PCI_DEV_BLOCKS);
    this.#writeHeader();
  }

  /** Physical address of `pci_ser` (the FLB's data). */
  get phys(): bigint {
    return this.#ser.phys;
  }

  /** Entries in use (`nr_devices`). */
  get nrDevices(): number {
    return this.#slots.size;
  }

  /** Blocks in the device chain. */
  get blocks(): number {
    return this.#chain.length;
  }

  /** True after the shutdown freeze. */
  get frozen(): boolean {
    return this.#frozen;
  }

  /** Refcount recorded for (domain, bdf); 0 when absent. */
  refcount(domain: number, bdf: number): number {
    return this.#slots.get(pciKey(domain, bdf))?.refcount ?? 0;
  }

  /** True when `fn` is recorded as a preserved endpoint or a bridge above one. */
  isPreserved(fn: PciFunction): boolean {
    return this.#slots.has(pciKey(fn.domain, fn.bdf));
  }

  /**
   * Records `fn` and its upstream bridges (`pci_liveupdate_preserve`). Errors (nothing changed):
   * `EINVAL` frozen, VF or ACS quirk on the path; `EBUSY` already preserved; `ENOMEM`/`ENOSPC`
   * when the chain cannot grow.
   */
  preserve(fn: PciFunction): void {
    if (this.#frozen) {
      throw new LiveUpdateError("EINVAL", `${fn.address}: PCI preservation is frozen for shutdown`);
    }
    const path = pathOf(fn);
    for (const f of path) {
      if (f.isVirtualFn) {
        throw new LiveUpdateError(
          "EINVAL",
          `${f.address} is an SR-IOV virtual function and cannot be preserved`,
        );
      }
      if (f.needsAcsQuirk) {
        throw new LiveUpdateError(
          "EINVAL",
          `${f.address} needs a device-specific ACS quirk and cannot be preserved`,
        );
      }
    }
    if (this.isPreserved(fn)) {
      throw new LiveUpdateError("EBUSY", `${fn.address} is already preserved for the next kernel`);
    }
    const fresh = path.filter((f) => !this.isPreserved(f)).length;
    const reuse = Math.min(fresh, this.#free.size);
    this.#chain.grow(this.#used + fresh - reuse); // ENOMEM/ENOSPC: all-or-nothing
    // From here nothing can fail.
    for (const f of path) this.#adjust(f, +1);
    this.#writeHeader();
  }

  /**
   * Drops `fn` and its bridges (`pci_liveupdate_unpreserve`). `EINVAL` after the freeze or when
   * `fn` is not preserved (nothing changed).
   */
  unpreserve(fn: PciFunction): void {
    if (this.#frozen) {
      throw new LiveUpdateError("EINVAL", `${fn.address}: PCI preservation is frozen for shutdown`);
    }
    if (!this.isPreserved(fn)) throw new LiveUpdateError("EINVAL", `${fn.address} is not preserved`);
    for (const f of pathOf(fn)) this.#adjust(f, -1);
    while (this.#used > 0 && this.#free.has(this.#used - 1)) this.#free.delete(--this.#used);
    this.#chain.shrink(this.#used);
    this.#writeHeader();
  }

  #adjust(f: PciFunction, delta: 1 | -1): void {
    const key = pciKey(f.domain, f.bdf);
    let slot = this.#slots.get(key);
    if (!slot) {
      let index = this.#used;
      if (this.#free.size > 0) {
        index = Math.min(...this.#free);
        this.#free.delete(index);
      } else this.#used++;
      slot = { index, refcount: 0 };
      this.#slots.set(key, slot);
    }
    slot.refcount += delta;
    const { index, refcount } = slot;
    if (refcount === 0) {
      this.#slots.delete(key);
      this.#free.add(index);
      this.#chain.zeroEntry(index);
      return;
    }
    this.#chain.writeEntry(index, (dv, _b, off) => {
      dv.setUint32(off + PCI_DEV_SER.domain, f.domain, true);
      dv.setUint16(off + PCI_DEV_SER.bdf, f.bdf, true);
      dv.setUint16(off + PCI_DEV_SER.refcount, refcount, true);
    });
  }

  #writeHeader(): void {
    if (this.#used > 0) this.#chain.setCounts(this.#used);
    this.#dv.setUint32(PCI_SER.version, PCI_LUO_FLB_VERSION, true);
    this.#dv.setUint32(PCI_SER.nrDevices, this.#slots.size, true);
    this.#dv.setBigUint64(PCI_SER.devices, this.#chain.head, true);
  }

  /** Shutdown (kexec) freeze: later preserve/unpreserve calls are refused. */
  freeze(): void {
    this.#frozen = true;
  }

  /** The reboot failed: preservation may change again. */
  unfreeze(): void {
    this.#frozen = false;
  }

  /** Frees `pci_ser` and the chain (FLB unpreserve). */
  destroy(kho: Kho): void {
    this.#chain.destroy();
    kho.unpreserveFree(this.#ser.phys);
  }
}

/** Incoming PCI FLB object: the devices the previous kernel preserved. */
export class PciFlbIncoming {
  readonly #records = new Map<number, { refcount: number }>();
  #nrDevices: number;
  readonly #pages: bigint[];

  private constructor(records: readonly PciDevRecord[], pages: bigint[]) {
    for (const r of records) this.#records.set(pciKey(r.domain, r.bdf), { refcount: r.refcount });
    this.#nrDevices = records.length;
    this.#pages = pages;
  }

  /** @internal Built by {@link readPciFlb}. */
  static create(records: readonly PciDevRecord[], pages: bigint[]): PciFlbIncoming {
    return new PciFlbIncoming(records, pages);
  }

  /** Entries not finished yet (`nr_devices`). */
  get nrDevices(): number {
    return this.#nrDevices;
  }

  /** The entries still recorded, as `{domain, bdf, refcount}`. */
  records(): PciDevRecord[] {
    return [...this.#records].map(([key, r]) => ({
      domain: Math.floor(key / 0x10000),
      bdf: key & 0xffff,
      refcount: r.refcount,
    }));
  }

  /** Refcount of (domain, bdf); 0 when not (or no longer) incoming. */
  refcount(domain: number, bdf: number): number {
    return this.#records.get(pciKey(domain, bdf))?.refcount ?? 0;
  }

  /** True while (domain, bdf) was preserved and is not finished (`pci_liveupdate_is_incoming`). */
  isIncoming(domain: number, bdf: number): boolean {
    return this.refcount(domain, bdf) > 0;
  }

  /**
   * Drops `fn` and its bridges (`pci_liveupdate_finish`). `ENOENT` when `fn` is not incoming
   * (nothing changed).
   */
  finish(fn: PciFunction): void {
    const path = pathOf(fn);
    for (const f of path) {
      if (!this.isIncoming(f.domain, f.bdf)) {
        throw new LiveUpdateError("ENOENT", `${f.address} is not an incoming preserved device`);
      }
    }
    for (const f of path) {
      const key = pciKey(f.domain, f.bdf);
      const r = this.#records.get(key)!;
      if (--r.refcount === 0) {
        this.#records.delete(key);
        this.#nrDevices--;
      }
    }
  }

  /** Handed-over pages (`pci_ser`, then the blocks) the FLB finish frees. */
  get pages(): readonly bigint[] {
    return this.#pages;
  }
}

/**
 * Reads and validates the incoming `pci_ser` at `data` and claims its pages.
 * `KernelPanicError` (from `@luo/core`) on anything corrupt (nothing is claimed then).
 */
export function readPciFlb(incoming: KhoIncoming, data: bigint): PciFlbIncoming {
  const fail = (why: string, at: bigint = data): never => {
    throw new KernelPanicError(`PCI: Failed to retrieve incoming FLB data: ${why}`, at);
  };
  if (!incoming.covers(data, PCI_SER.size)) fail(`pci_ser at ${hex(data)} is not handed-over memory`);
  const head = incoming.machine.view(data, PCI_SER.size);
  const dv = new DataView(head.buffer, head.byteOffset, PCI_SER.size);
  const version = dv.getUint32(PCI_SER.version, true);
  if (version !== PCI_LUO_FLB_VERSION) fail(`version ${version}, this kernel reads ${PCI_LUO_FLB_VERSION}`);
  const nr = dv.getUint32(PCI_SER.nrDevices, true);
  let chain;
  try {
    chain = readChain(
      incoming,
      dv.getBigUint64(PCI_SER.devices, true),
      PCI_DEV_BLOCKS,
      "PCI device chain",
      (v, _b, off) => ({
        domain: v.getUint32(off + PCI_DEV_SER.domain, true),
        bdf: v.getUint16(off + PCI_DEV_SER.bdf, true),
        refcount: v.getUint16(off + PCI_DEV_SER.refcount, true),
      }),
    );
  } catch (e) {
    if (e instanceof KernelPanicError)
      return fail(e.message.replace(/^EPANIC: kernel panic: /, ""), e.phys ?? data);
    throw e;
  }
  const records = chain.entries.filter((r) => r.refcount > 0);
  const keys = new Set(records.map((r) => pciKey(r.domain, r.bdf)));
  if (keys.size !== records.length) fail("a device is recorded twice");
  if (records.length !== nr) fail(`nr_devices is ${nr} but ${records.length} entries are in use`);
  const pages = [data, ...chain.blocks];
  for (const p of pages) incoming.restore(p);
  return PciFlbIncoming.create(records, pages);
}

/** The `"pci"` FLB: outgoing {@link PciFlbOutgoing}, incoming {@link PciFlbIncoming}. */
export type PciFlb = Flb<PciFlbOutgoing | PciFlbIncoming>;

/** Tells the PCI core when the outgoing object comes and goes. */
export interface PciFlbHooks {
  /** The FLB's `preserve` made `obj` (first device preserved). */
  onPreserve(obj: PciFlbOutgoing): void;
  /** The FLB's `unpreserve` ran (last device unpreserved). */
  onUnpreserve(): void;
}

/**
 * Makes the PCI FLB definition. One per kernel (the vfio plugin links it to its handler).
 * `finish` panics when a device was never finished ("Some preserved devices were never
 * finished!").
 */
export function createPciFlb(hooks?: PciFlbHooks): PciFlb {
  return defineFlb<PciFlbOutgoing | PciFlbIncoming>({
    compatible: PCI_LUO_FLB_COMPATIBLE,
    preserve: ({ kho }) => {
      const obj = new PciFlbOutgoing(kho);
      hooks?.onPreserve(obj);
      return { data: obj.phys, obj };
    },
    unpreserve: ({ kho, obj }) => {
      hooks?.onUnpreserve();
      (obj as PciFlbOutgoing).destroy(kho);
    },
    retrieve: ({ incoming, data }) => readPciFlb(incoming, data),
    finish: ({ incoming, obj }) => {
      const inc = obj as PciFlbIncoming;
      for (const p of inc.pages) incoming.machine.freePages(p, 0);
      if (inc.nrDevices !== 0) {
        throw new KernelPanicError(
          `PCI: Some preserved devices were never finished! (${inc
            .records()
            .map((r) => hex(r.bdf))
            .join(", ")})`,
          inc.pages[0] ?? 0n,
        );
      }
    },
  });
}
