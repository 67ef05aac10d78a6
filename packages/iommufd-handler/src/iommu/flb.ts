/**
 * The IOMMU core FLB `"iommu-liveupdate"` (Linux `drivers/iommu/liveupdate.c`, ABI
 * `include/linux/kho/abi/iommu.h`): global IOMMU state that lives as long as some preserved
 * iommufd or device needs it. All layouts little-endian and packed, pages of 4 KiB.
 *
 *   iommu_flb_ser      (32 B)  u64 version (1) | u64 iommu_array_phys |
 *                              u64 iommu_domain_array_phys | u64 device_array_phys
 *   array page         (4 KiB) u64 next_array_phys | u64 nr_objects | objects…
 *   every object starts        u32 ref_count | u32 flags (bit 0 DELETED, bit 1 INCOMING)
 *   iommu_domain_ser   (40 B)  hdr | u64 top_table_phys @8 | u64 top_level @16 | u32 vasz @24 |
 *                              u32 sign_extend:1 @28 | u64 restored_domain @32 (new kernel only)
 *   iommu_device_ser   (40 B)  hdr | u32 devid (BDF) @8 | u32 pci_domain_nr @12 |
 *                              u64 attachment_id @16 | u64 domain_phys @24 | u64 iommu_phys @32
 *   iommu_hw_ser       (24 B)  hdr | u64 token @8 | u64 type @16 (0 = IOMMU_INVALID, core)
 *
 * Objects are appended and never reused: removing one sets DELETED. Old kernel: `preserve`
 * (first dependent file) allocates the top struct and the three empty arrays; `unpreserve` (last
 * dependent file gone) frees every page. New kernel: `retrieve` checks the version and every
 * array page — a wrong version, an array page that was not handed over, a cycle or an absurd
 * chain is a {@link KernelPanicError} (devices may have been translating through these tables the
 * whole time, so the kernel cannot go on) — restores the pages, sets INCOMING on live objects and
 * decodes them; `finish` frees the array pages and the page-table pages of every domain nobody
 * restored.
 *
 * @module
 */
import {
  KernelPanicError,
  LiveUpdateError,
  PAGE_SIZE,
  defineFlb,
  type Flb,
  type Kho,
  type KhoIncoming,
  type Machine,
} from "@luo/core";

/** FLB compatible. */
export const IOMMU_LUO_FLB_COMPATIBLE = "iommu-liveupdate";
/** The only `iommu_flb_ser.version` this code writes and reads. */
export const IOMMU_LUO_FLB_VERSION = 1n;
/** Size of `iommu_flb_ser`. */
export const IOMMU_FLB_SER_SIZE = 32;
/** Size of `iommu_array_hdr_ser`. */
export const IOMMU_ARRAY_HDR_SIZE = 16;
/** Size of `iommu_domain_ser`. */
export const IOMMU_DOMAIN_SER_SIZE = 40;
/** Size of `iommu_device_ser`. */
export const IOMMU_DEVICE_SER_SIZE = 40;
/** Size of `iommu_hw_ser`. */
export const IOMMU_HW_SER_SIZE = 24;
/** `iommu_hdr_ser.flags`: the object was removed. */
export const IOMMU_OBJ_DELETED = 1;
/** `iommu_hdr_ser.flags`: the object was taken over by this (new) kernel. */
export const IOMMU_OBJ_INCOMING = 2;
/** Longest array chain accepted (pages). */
export const IOMMU_MAX_ARRAY_PAGES = 10_000;

/** The three object arrays. */
export type IommuArrayKind = "units" | "domains" | "devices";

const SIZES: Record<IommuArrayKind, number> = {
  units: IOMMU_HW_SER_SIZE,
  domains: IOMMU_DOMAIN_SER_SIZE,
  devices: IOMMU_DEVICE_SER_SIZE,
};
const ORDER: readonly IommuArrayKind[] = ["units", "domains", "devices"];
const perPage = (kind: IommuArrayKind): number =>
  Math.floor((PAGE_SIZE - IOMMU_ARRAY_HDR_SIZE) / SIZES[kind]);

/** A decoded `iommu_domain_ser`. */
export interface IommuDomainRecord {
  /** Physical address of the record (what `iommufd_hwpt_ser.domain_data` and devices point at). */
  readonly phys: bigint;
  /** `ref_count`. */
  readonly refCount: number;
  /** `flags`. */
  readonly flags: number;
  /** Top page-table page. */
  readonly topTablePhys: bigint;
  /** Level of the top table. */
  readonly topLevel: number;
  /** IOVA width in bits. */
  readonly vasz: number;
}

/** A decoded `iommu_device_ser`. */
export interface IommuDeviceRecord {
  /** Physical address of the record. */
  readonly phys: bigint;
  /** `ref_count`. */
  readonly refCount: number;
  /** `flags`. */
  readonly flags: number;
  /** PCI bus/device/function. */
  readonly devid: number;
  /** PCI segment. */
  readonly pciDomain: number;
  /** Domain id the device's context entry uses. */
  readonly attachmentId: bigint;
  /** Its domain's record. */
  readonly domainPhys: bigint;
  /** Its IOMMU unit's record. */
  readonly iommuPhys: bigint;
}

/** A decoded `iommu_hw_ser`. */
export interface IommuUnitRecord {
  /** Physical address of the record. */
  readonly phys: bigint;
  /** `ref_count`: preserved devices behind the unit. */
  readonly refCount: number;
  /** `flags`. */
  readonly flags: number;
  /** The unit's token (its register base). */
  readonly token: bigint;
  /** `type` (0). */
  readonly type: bigint;
}

/** Everything an `iommu_flb_ser` describes, decoded. */
export interface IommuFlbContents {
  /** Physical address of `iommu_flb_ser`. */
  readonly ser: bigint;
  /** `version`. */
  readonly version: bigint;
  /** Array page addresses, per array, in chain order. */
  readonly pages: Readonly<Record<IommuArrayKind, readonly bigint[]>>;
  /** Unit records (deleted ones included). */
  readonly units: readonly IommuUnitRecord[];
  /** Domain records (deleted ones included). */
  readonly domains: readonly IommuDomainRecord[];
  /** Device records (deleted ones included). */
  readonly devices: readonly IommuDeviceRecord[];
}

/** One append-only chain of one-page arrays in preserved memory. */
class RecordChain {
  readonly pages: bigint[] = [];
  constructor(
    private readonly kho: Kho,
    readonly kind: IommuArrayKind,
  ) {
    this.pages.push(kho.allocPreserve(PAGE_SIZE).phys);
  }

  /** Appends a zeroed object; returns its physical address. `ENOMEM` (chain unchanged). */
  append(): bigint {
    const m = this.kho.machine;
    let last = this.pages[this.pages.length - 1]!;
    let n = Number(m.readU64(last + 8n));
    if (n === perPage(this.kind)) {
      const next = this.kho.allocPreserve(PAGE_SIZE).phys;
      m.writeU64(last + 0n, next);
      this.pages.push(next);
      last = next;
      n = 0;
    }
    m.writeU64(last + 8n, BigInt(n + 1));
    return last + BigInt(IOMMU_ARRAY_HDR_SIZE + n * SIZES[this.kind]);
  }

  free(): void {
    for (const p of this.pages) this.kho.unpreserveFree(p);
    this.pages.length = 0;
  }
}

/**
 * The outgoing FLB object: the top struct and the three chains. Producers (the IOMMU core when
 * iommufd preserves a domain or vfio preserves a device) append records through it.
 */
export class IommuFlbOutgoing {
  /** Physical address of `iommu_flb_ser`. */
  readonly ser: bigint;
  readonly #chains: Record<IommuArrayKind, RecordChain>;
  readonly #machine: Machine;

  /** Allocates the top struct and three empty arrays (undone on `ENOMEM`). */
  constructor(kho: Kho) {
    this.#machine = kho.machine;
    const ser = kho.allocPreserve(IOMMU_FLB_SER_SIZE);
    const made: RecordChain[] = [];
    try {
      for (const kind of ORDER) made.push(new RecordChain(kho, kind));
    } catch (e) {
      for (const c of made.reverse()) c.free();
      kho.unpreserveFree(ser.phys);
      throw e;
    }
    this.ser = ser.phys;
    this.#chains = { units: made[0]!, domains: made[1]!, devices: made[2]! };
    const m = this.#machine;
    m.writeU64(ser.phys, IOMMU_LUO_FLB_VERSION);
    m.writeU64(ser.phys + 8n, made[0]!.pages[0]!);
    m.writeU64(ser.phys + 16n, made[1]!.pages[0]!);
    m.writeU64(ser.phys + 24n, made[2]!.pages[0]!);
  }

  /** Appends an `iommu_domain_ser` (ref_count 1); returns its address. */
  addDomain(topTablePhys: bigint, topLevel: number, vasz: number): bigint {
    const p = this.#chains.domains.append();
    const m = this.#machine;
    m.writeU32(p, 1);
    m.writeU64(p + 8n, topTablePhys);
    m.writeU64(p + 16n, BigInt(topLevel));
    m.writeU32(p + 24n, vasz);
    return p;
  }

  /** Appends an `iommu_hw_ser` (ref_count 0: devices add theirs); returns its address. */
  addUnit(token: bigint): bigint {
    const p = this.#chains.units.append();
    this.#machine.writeU64(p + 8n, token);
    return p;
  }

  /** Appends an `iommu_device_ser` (ref_count 1); returns its address. */
  addDevice(
    segment: number,
    bdf: number,
    attachmentId: number,
    domainPhys: bigint,
    unitPhys: bigint,
  ): bigint {
    const p = this.#chains.devices.append();
    const m = this.#machine;
    m.writeU32(p, 1);
    m.writeU32(p + 8n, bdf);
    m.writeU32(p + 12n, segment);
    m.writeU64(p + 16n, BigInt(attachmentId));
    m.writeU64(p + 24n, domainPhys);
    m.writeU64(p + 32n, unitPhys);
    return p;
  }

  /** Changes an object's `ref_count` by `delta`; returns the new count. */
  addRef(phys: bigint, delta: number): number {
    const n = this.#machine.readU32(phys) + delta;
    this.#machine.writeU32(phys, n);
    return n;
  }

  /** Marks an object DELETED (ref_count 0); it is never reused. */
  remove(phys: bigint): void {
    this.#machine.writeU32(phys, 0);
    this.#machine.writeU32(phys + 4n, this.#machine.readU32(phys + 4n) | IOMMU_OBJ_DELETED);
  }

  /** Frees every page (FLB unpreserve). */
  free(kho: Kho): void {
    for (const kind of [...ORDER].reverse()) this.#chains[kind].free();
    kho.unpreserveFree(this.ser);
  }
}

/**
 * Decodes an `iommu_flb_ser` and its arrays from raw memory (no KHO state needed: used by the
 * FLB's retrieve and by inspection tools). `check(phys)` says whether an array page may be read
 * (in the new kernel: handed over and not yet restored).
 *
 * @throws {@link KernelPanicError} for a wrong version, an array page that fails `check`, a
 *   cycle, a chain longer than {@link IOMMU_MAX_ARRAY_PAGES} or an object count above a page's
 */
export function decodeIommuFlb(
  machine: Machine,
  ser: bigint,
  check: (phys: bigint) => boolean = () => true,
): IommuFlbContents {
  const panic = (msg: string, at: bigint): never => {
    throw new KernelPanicError(
      `IOMMU FLB "${IOMMU_LUO_FLB_COMPATIBLE}" at 0x${ser.toString(16)}: ${msg}`,
      at,
    );
  };
  let version: bigint;
  try {
    if (!check(ser)) panic("top struct was not handed over", ser);
    version = machine.readU64(ser);
  } catch (e) {
    if (e instanceof KernelPanicError) throw e;
    return panic(`cannot read the top struct (${(e as Error).message})`, ser);
  }
  if (version !== IOMMU_LUO_FLB_VERSION)
    panic(`version ${version}, this kernel reads ${IOMMU_LUO_FLB_VERSION}`, ser);
  const pages = { units: [] as bigint[], domains: [] as bigint[], devices: [] as bigint[] };
  const units: IommuUnitRecord[] = [];
  const domains: IommuDomainRecord[] = [];
  const devices: IommuDeviceRecord[] = [];
  const seen = new Set<bigint>();
  ORDER.forEach((kind, i) => {
    let page = machine.readU64(ser + BigInt(8 * (i + 1)));
    if (page === 0n) panic(`missing ${kind} array head`, ser);
    while (page !== 0n) {
      if (seen.has(page)) panic(`${kind} array chain loops at 0x${page.toString(16)}`, page);
      if (seen.size >= IOMMU_MAX_ARRAY_PAGES)
        panic(`${kind} array chain is longer than ${IOMMU_MAX_ARRAY_PAGES} pages`, page);
      let ok = false;
      try {
        ok = page % BigInt(PAGE_SIZE) === 0n && check(page);
      } catch {
        ok = false;
      }
      if (!ok) panic(`${kind} array page 0x${page.toString(16)} cannot be restored`, page);
      seen.add(page);
      pages[kind].push(page);
      const n = Number(machine.readU64(page + 8n));
      if (n > perPage(kind))
        panic(`${kind} array page 0x${page.toString(16)} holds ${n} objects (max ${perPage(kind)})`, page);
      for (let k = 0; k < n; k++) {
        const p = page + BigInt(IOMMU_ARRAY_HDR_SIZE + k * SIZES[kind]);
        const refCount = machine.readU32(p);
        const flags = machine.readU32(p + 4n);
        if (kind === "units")
          units.push({
            phys: p,
            refCount,
            flags,
            token: machine.readU64(p + 8n),
            type: machine.readU64(p + 16n),
          });
        else if (kind === "domains")
          domains.push({
            phys: p,
            refCount,
            flags,
            topTablePhys: machine.readU64(p + 8n),
            topLevel: Number(machine.readU64(p + 16n)),
            vasz: machine.readU32(p + 24n),
          });
        else
          devices.push({
            phys: p,
            refCount,
            flags,
            devid: machine.readU32(p + 8n),
            pciDomain: machine.readU32(p + 12n),
            attachmentId: machine.readU64(p + 16n),
            domainPhys: machine.readU64(p + 24n),
            iommuPhys: machine.readU64(p + 32n),
          });
      }
      page = machine.readU64(page);
    }
  });
  return { ser, version, pages, units, domains, devices };
}

/** The incoming FLB object: the decoded records, and which domains the new kernel restored. */
export class IommuFlbIncoming {
  /** Domain records by address (live ones only). */
  readonly domains = new Map<bigint, IommuDomainRecord>();
  /** Device records (live ones only). */
  readonly devices: IommuDeviceRecord[] = [];
  /** Unit records by address (live ones only). */
  readonly units = new Map<bigint, IommuUnitRecord>();
  /** Domain records whose page tables the new kernel took over. */
  readonly restored = new Set<bigint>();

  /** @param contents - the decoded FLB */
  constructor(readonly contents: IommuFlbContents) {
    const live = (r: { flags: number }): boolean => (r.flags & IOMMU_OBJ_DELETED) === 0;
    for (const d of contents.domains) if (live(d)) this.domains.set(d.phys, d);
    for (const d of contents.devices) if (live(d)) this.devices.push(d);
    for (const u of contents.units) if (live(u)) this.units.set(u.phys, u);
  }

  /** The live device record of `segment`/`bdf`, if it was preserved. */
  device(segment: number, bdf: number): IommuDeviceRecord | undefined {
    return this.devices.find((d) => d.pciDomain === segment && d.devid === bdf);
  }
}

/** Every page-table page of the table rooted at `top` (walk of the 4-level format). */
export function tablePagesOf(
  machine: Machine,
  top: bigint,
  topLevel: number,
  ok: (phys: bigint) => boolean,
): bigint[] {
  const out: bigint[] = [];
  const seen = new Set<bigint>();
  const walk = (phys: bigint, level: number): void => {
    if (seen.has(phys) || !ok(phys)) {
      throw new LiveUpdateError("EINVAL", `I/O page table page 0x${phys.toString(16)} cannot be restored`);
    }
    seen.add(phys);
    out.push(phys);
    if (level === 0) return;
    const v = machine.view(phys, PAGE_SIZE); // one checked view per table, not a read per entry
    const dv = new DataView(v.buffer, v.byteOffset, PAGE_SIZE);
    for (let i = 0; i < 512; i++) {
      const lo = dv.getUint32(i * 8, true);
      if ((lo & 3) === 0 || (lo & 0x80) !== 0) continue;
      walk(dv.getBigUint64(i * 8, true) & 0x000f_ffff_ffff_f000n, level - 1);
    }
  };
  walk(top, topLevel);
  return out;
}

function restoreRecords(incoming: KhoIncoming, data: bigint): IommuFlbIncoming {
  const m = incoming.machine;
  const contents = decodeIommuFlb(m, data, (p) =>
    incoming.covers(p, p === data ? IOMMU_FLB_SER_SIZE : PAGE_SIZE),
  );
  // Everything checked: take the pages over and flag live objects INCOMING.
  incoming.restore(data);
  for (const kind of ORDER) for (const p of contents.pages[kind]) incoming.restore(p);
  const inc = new IommuFlbIncoming(contents);
  for (const r of [...inc.units.values(), ...inc.domains.values(), ...inc.devices]) {
    m.writeU32(r.phys + 4n, r.flags | IOMMU_OBJ_INCOMING);
  }
  return inc;
}

/**
 * The IOMMU core FLB. The iommufd plugin links it to the `"iommufd-v1"` handler; a device
 * handler whose files carry IOMMU device state (vfio-pci) links it too, so the state lives until
 * the last such file is gone. Outgoing object: {@link IommuFlbOutgoing}; incoming:
 * {@link IommuFlbIncoming}.
 */
export const iommuLiveUpdateFlb: Flb<IommuFlbOutgoing | IommuFlbIncoming> = defineFlb<
  IommuFlbOutgoing | IommuFlbIncoming
>({
  compatible: IOMMU_LUO_FLB_COMPATIBLE,
  preserve({ kho }) {
    const obj = new IommuFlbOutgoing(kho);
    return { data: obj.ser, obj };
  },
  unpreserve({ kho, obj }) {
    (obj as IommuFlbOutgoing).free(kho);
  },
  retrieve({ incoming, data }) {
    return restoreRecords(incoming, data);
  },
  finish({ incoming, obj }) {
    const inc = obj as IommuFlbIncoming;
    const m = incoming.machine;
    for (const d of inc.domains.values()) {
      if (inc.restored.has(d.phys)) continue;
      let pages: bigint[] = [];
      try {
        pages = tablePagesOf(m, d.topTablePhys, d.topLevel, (p) => incoming.covers(p, PAGE_SIZE));
      } catch {
        pages = [];
      }
      for (const p of pages) incoming.restoreFree(p);
    }
    for (const kind of ORDER) for (const p of inc.contents.pages[kind]) m.freePages(p, 0);
    m.freePages(inc.contents.ser, 0);
  },
});
