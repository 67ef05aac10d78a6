/**
 * The kernel's IOMMU core and driver (Linux `drivers/iommu/iommu.c`, `liveupdate.c` and the VT-d
 * driver, reduced): per booted kernel, it owns paging domains (an {@link IoPageTable} plus a
 * domain id on its unit), programs the units' context entries when devices attach or detach,
 * invalidates the IOTLB after unmapping, tracks DMA ownership, and preserves domains and devices
 * into the IOMMU FLB.
 *
 * Boot: with no IOMMU FLB handed over, every unit is reset (all context entries cleared, IOTLB
 * flushed). After a live update the FLB is retrieved at once (a bad one panics the boot, as the
 * kernel's early IOMMU init does): the context entries of preserved devices are kept — their DMA
 * never stopped — with their domain ids reserved, every other entry is cleared, and the IOTLB is
 * flushed. Each preserved device is owned by the preserved iommufd it was attached through until
 * userspace takes it over (phase 1: never).
 *
 * Unhappy paths: attaching a device of one unit to a domain of another `EINVAL`; freeing a domain
 * that devices still use `EBUSY`; preserving a domain on a unit without live-update support
 * `EOPNOTSUPP`, one already preserved `EBUSY`; preserving a device whose domain is not preserved
 * `EINVAL`, one already preserved `EBUSY`. Every failure changes nothing.
 *
 * @module
 */
import { LiveUpdateError, type Kho, type Machine } from "@luo/core";
import type { InjectionToken } from "tsyringe";
import type { IommuDeviceRecord, IommuFlbIncoming, IommuFlbOutgoing } from "./flb.js";
import { IoPageTable, PT_TOP_LEVEL, PT_VASZ } from "./pgtable.js";
import {
  formatRequester,
  iommuFor,
  iommuUnits,
  requesterKey,
  type IommuUnit,
  type RequesterId,
} from "./unit.js";

/** DI token of the kernel's {@link IommuCore}. */
export const IOMMU_CORE: InjectionToken<IommuCore> = Symbol.for("luo.iommufd.IommuCore");

/** A paging domain: an I/O page table and the domain id it has on its unit. */
export class IommuDomain {
  /** Devices (requester keys) attached. */
  readonly devices = new Set<number>();
  /** Address of its `iommu_domain_ser` while preserved. */
  preservedSer: bigint | undefined;
  /** Address of the handed-over record it was restored from (new kernel). */
  readonly restoredFrom: bigint | undefined;
  #freed = false;

  /**
   * @param unit - the unit it translates on
   * @param domainId - its domain id there
   * @param pt - its page table
   * @param restoredFrom - the handed-over record, for a restored domain
   */
  constructor(
    readonly unit: IommuUnit,
    readonly domainId: number,
    readonly pt: IoPageTable,
    restoredFrom?: bigint,
  ) {
    this.restoredFrom = restoredFrom;
  }

  /** True after {@link IommuCore.freeDomain}. */
  get freed(): boolean {
    return this.#freed;
  }

  /** @internal */
  markFreed(): void {
    this.#freed = true;
  }
}

/** A device as the IOMMU core knows it. */
interface DeviceState {
  readonly rid: RequesterId;
  domain: IommuDomain | undefined;
  /** Its DMA owner (an iommufd context), if claimed. */
  owner: unknown;
  /** Its record in the outgoing FLB while preserved. */
  preservedSer: bigint | undefined;
}

/** The IOMMU core of one kernel (see the module comment). */
export class IommuCore {
  readonly #devices = new Map<number, DeviceState>();
  readonly #dids = new Map<IommuUnit, Set<number>>();
  /** Outgoing unit records: unit → {record address, preserved devices}. */
  readonly #unitRecords = new Map<IommuUnit, { ser: bigint; devices: number }>();
  #incoming: IommuFlbIncoming | undefined;

  /** @param machine - the machine whose units and memory it drives */
  constructor(readonly machine: Machine) {}

  /**
   * Kernel IOMMU init: without a handover reset every unit; with one keep the preserved devices'
   * context entries (domain ids reserved) and clear the rest. The IOTLBs are flushed.
   */
  init(incoming: IommuFlbIncoming | undefined): void {
    this.#incoming = incoming;
    for (const unit of iommuUnits(this.machine)) {
      const dids = this.#didsOf(unit);
      for (const { rid, context } of unit.contexts()) {
        const rec = incoming?.device(rid.segment, rid.bdf);
        if (rec && incoming!.domains.has(rec.domainPhys)) {
          dids.add(context.domainId);
          this.#devices.set(requesterKey(rid), {
            rid,
            domain: undefined,
            owner: rec,
            preservedSer: undefined,
          });
        } else unit.clearContext(rid);
      }
      unit.invalidateAll();
    }
  }

  /** The handed-over IOMMU state, after a live update. */
  get incoming(): IommuFlbIncoming | undefined {
    return this.#incoming;
  }

  #didsOf(unit: IommuUnit): Set<number> {
    let s = this.#dids.get(unit);
    if (!s) this.#dids.set(unit, (s = new Set()));
    return s;
  }

  #allocDid(unit: IommuUnit): number {
    const used = this.#didsOf(unit);
    for (let d = 1; d <= 0xffff; d++) {
      if (!used.has(d)) {
        used.add(d);
        return d;
      }
    }
    throw new LiveUpdateError("ENOSPC", `${unit.name}: no free domain id`);
  }

  #device(rid: RequesterId): DeviceState {
    const key = requesterKey(rid);
    let d = this.#devices.get(key);
    if (!d)
      this.#devices.set(key, (d = { rid, domain: undefined, owner: undefined, preservedSer: undefined }));
    return d;
  }

  // ---------------------------------------------------------------- domains

  /** A new paging domain for devices behind `rid`'s unit. `ENODEV`, `ENOSPC`, `ENOMEM`. */
  allocDomain(rid: RequesterId): IommuDomain {
    const unit = iommuFor(this.machine, rid);
    const did = this.#allocDid(unit);
    try {
      return new IommuDomain(unit, did, IoPageTable.create(this.machine));
    } catch (e) {
      this.#didsOf(unit).delete(did);
      throw e;
    }
  }

  /**
   * A domain built on a handed-over page table (the new kernel's restore of `iommu_domain_ser`
   * `rec`): keeps the domain id the preserved devices use (a new one when no device used it).
   */
  adoptDomain(unit: IommuUnit, domainId: number | undefined, top: bigint, rec: bigint): IommuDomain {
    const did = domainId ?? this.#allocDid(unit);
    this.#didsOf(unit).add(did);
    return new IommuDomain(unit, did, IoPageTable.adopt(this.machine, top), rec);
  }

  /** Frees a domain nobody uses: flushes its IOTLB entries, frees its table. `EBUSY` if devices are attached. */
  freeDomain(domain: IommuDomain): void {
    if (domain.freed) return;
    if (domain.devices.size > 0) {
      throw new LiveUpdateError(
        "EBUSY",
        `domain ${domain.domainId} on ${domain.unit.name} still has ${domain.devices.size} device(s)`,
      );
    }
    if (domain.preservedSer !== undefined) {
      throw new LiveUpdateError(
        "EBUSY",
        `domain ${domain.domainId} on ${domain.unit.name} is preserved for live update`,
      );
    }
    domain.unit.invalidateDomain(domain.domainId);
    domain.pt.free();
    this.#didsOf(domain.unit).delete(domain.domainId);
    domain.markFreed();
  }

  /** Maps physically contiguous memory (see {@link IoPageTable.map}). */
  map(domain: IommuDomain, iova: number, phys: bigint, size: number, prot: number): void {
    domain.pt.map(iova, Number(phys), size, prot);
  }

  /** Unmaps a range and invalidates it in the IOTLB. */
  unmap(domain: IommuDomain, iova: number, size: number): number {
    const n = domain.pt.unmap(iova, size);
    domain.unit.invalidateRange(domain.domainId, iova, size);
    return n;
  }

  // ---------------------------------------------------------------- devices

  /**
   * Claims DMA ownership of `rid` for `owner`. `EBUSY` when another owner holds it; `EPERM` when
   * it is a device preserved by the previous kernel that is still bound to its preserved
   * iommufd (only {@link IommuCore.takeOverPreserved} may hand it on).
   */
  claim(rid: RequesterId, owner: unknown): void {
    iommuFor(this.machine, rid);
    const d = this.#device(rid);
    if (d.owner === owner) return;
    if (d.owner !== undefined && this.#incoming?.devices.includes(d.owner as never)) {
      throw new LiveUpdateError(
        "EPERM",
        `${formatRequester(rid)} was preserved by the previous kernel and belongs to its preserved iommufd`,
      );
    }
    if (d.owner !== undefined)
      throw new LiveUpdateError("EBUSY", `${formatRequester(rid)} already has a DMA owner`);
    d.owner = owner;
  }

  /** The handed-over record of `rid` while it is still owned by its preserved iommufd. */
  preservedRecord(rid: RequesterId): IommuDeviceRecord | undefined {
    const d = this.#devices.get(requesterKey(rid));
    return d && this.#incoming?.devices.includes(d.owner as never) ? (d.owner as never) : undefined;
  }

  /** Hands a preserved device to `owner` (the retrieved iommufd) attached to `domain`. */
  takeOverPreserved(rid: RequesterId, owner: unknown, domain: IommuDomain | undefined): void {
    const d = this.#device(rid);
    d.owner = owner;
    d.domain = domain;
    domain?.devices.add(requesterKey(rid));
  }

  /** Releases ownership (and detaches). */
  release(rid: RequesterId, owner: unknown): void {
    const d = this.#devices.get(requesterKey(rid));
    if (!d || d.owner !== owner) return;
    this.detach(rid);
    d.owner = undefined;
  }

  /** Points `rid`'s context entry at `domain`. `EINVAL` for a domain of another unit. */
  attach(rid: RequesterId, domain: IommuDomain): void {
    const unit = iommuFor(this.machine, rid);
    if (unit !== domain.unit || domain.freed) {
      throw new LiveUpdateError(
        "EINVAL",
        `domain ${domain.domainId} of ${domain.unit.name} cannot translate for ${formatRequester(rid)}`,
      );
    }
    const d = this.#device(rid);
    d.domain?.devices.delete(requesterKey(rid));
    unit.setContext(rid, { domainId: domain.domainId, root: domain.pt.top });
    d.domain = domain;
    domain.devices.add(requesterKey(rid));
  }

  /** Clears `rid`'s context entry (its DMA is blocked). */
  detach(rid: RequesterId): void {
    const d = this.#devices.get(requesterKey(rid));
    if (!d) return;
    d.domain?.devices.delete(requesterKey(rid));
    d.domain = undefined;
    iommuFor(this.machine, rid).clearContext(rid);
  }

  /** The domain `rid` is attached to. */
  domainOf(rid: RequesterId): IommuDomain | undefined {
    return this.#devices.get(requesterKey(rid))?.domain;
  }

  // ---------------------------------------------------------------- live update (old kernel)

  /**
   * `iommu_preserve_domain`: appends its record to the FLB and KHO-preserves every table page in
   * place. `EOPNOTSUPP` (unit without live-update support), `EBUSY` (already preserved); all or
   * nothing.
   */
  preserveDomain(domain: IommuDomain, flb: IommuFlbOutgoing, kho: Kho): bigint {
    if (!domain.unit.liveUpdate) {
      throw new LiveUpdateError(
        "EOPNOTSUPP",
        `${domain.unit.name} cannot preserve its domains (no live-update support)`,
      );
    }
    if (domain.preservedSer !== undefined) {
      throw new LiveUpdateError(
        "EBUSY",
        `domain ${domain.domainId} on ${domain.unit.name} is already preserved`,
      );
    }
    const pages = domain.pt.tablePages();
    const done: bigint[] = [];
    let ser: bigint | undefined;
    try {
      for (const p of pages) {
        kho.preserveFolio(p, 0);
        done.push(p);
      }
      ser = flb.addDomain(domain.pt.top, PT_TOP_LEVEL, PT_VASZ);
    } catch (e) {
      for (const p of done.reverse()) kho.unpreserveFolio(p, 0);
      throw e;
    }
    domain.preservedSer = ser;
    return ser;
  }

  /** `iommu_unpreserve_domain`: record DELETED, table pages no longer preserved. */
  unpreserveDomain(domain: IommuDomain, flb: IommuFlbOutgoing, kho: Kho): void {
    if (domain.preservedSer === undefined) return;
    flb.remove(domain.preservedSer);
    for (const p of domain.pt.tablePages().reverse()) kho.unpreserveFolio(p, 0);
    domain.preservedSer = undefined;
  }

  /**
   * `iommu_preserve_device`: appends the device record (and the unit's on first use). `EINVAL`
   * when the device has no DMA owner `owner` or its domain is not preserved; `EOPNOTSUPP` for a
   * unit without live-update support; `EBUSY` when already preserved.
   */
  preserveDevice(rid: RequesterId, owner: unknown, flb: IommuFlbOutgoing): bigint {
    const d = this.#devices.get(requesterKey(rid));
    const name = formatRequester(rid);
    const domain = d?.domain;
    if (!d || d.owner !== owner) throw new LiveUpdateError("EINVAL", `${name}: DMA ownership is not claimed`);
    if (!domain) throw new LiveUpdateError("ENOENT", `${name} is not attached to a domain`);
    if (!domain.unit.liveUpdate)
      throw new LiveUpdateError("EOPNOTSUPP", `${domain.unit.name} cannot preserve devices`);
    if (domain.preservedSer === undefined)
      throw new LiveUpdateError("EINVAL", `${name}: its domain is not preserved`);
    if (d.preservedSer !== undefined) throw new LiveUpdateError("EBUSY", `${name} is already preserved`);
    let unit = this.#unitRecords.get(domain.unit);
    const newUnit = !unit;
    if (!unit) unit = { ser: flb.addUnit(domain.unit.token), devices: 0 };
    try {
      d.preservedSer = flb.addDevice(rid.segment, rid.bdf, domain.domainId, domain.preservedSer, unit.ser);
    } catch (e) {
      if (newUnit) flb.remove(unit.ser);
      throw e;
    }
    flb.addRef(unit.ser, 1);
    unit.devices++;
    this.#unitRecords.set(domain.unit, unit);
    return d.preservedSer;
  }

  /** `iommu_unpreserve_device`. */
  unpreserveDevice(rid: RequesterId, flb: IommuFlbOutgoing): void {
    const d = this.#devices.get(requesterKey(rid));
    if (d?.preservedSer === undefined) return;
    flb.remove(d.preservedSer);
    d.preservedSer = undefined;
    const unit = d.domain ? this.#unitRecords.get(d.domain.unit) : undefined;
    if (unit && d.domain) {
      unit.devices--;
      if (flb.addRef(unit.ser, -1) === 0) {
        flb.remove(unit.ser);
        this.#unitRecords.delete(d.domain.unit);
      }
    }
  }

  /** True while `rid` is preserved (attach/detach of it is `EBUSY`). */
  isPreserved(rid: RequesterId): boolean {
    return this.#devices.get(requesterKey(rid))?.preservedSer !== undefined;
  }
}
