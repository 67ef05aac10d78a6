/**
 * The iommufd context (`struct iommufd_ctx`, Linux `drivers/iommu/iommufd/`): the file behind an
 * open `/dev/iommu`, and its objects, each with an id from one table.
 *
 * - IOAS: an I/O address space — a list of areas (IOVA range → pinned pages). Every HWPT built on
 *   the IOAS mirrors its areas in its page table.
 * - area: `IOAS_MAP_FILE` (a memfd range; the memfd's seals at map time are recorded) or
 *   `IOAS_MAP` of process memory (here: a shared mapping of a memfd, see {@link IommufdFile.mapUser}).
 *   Mapping pins the memfd's folios (`pinRange`) and maps exactly those physical pages; unmapping
 *   unpins them. Only whole areas can be unmapped (`ENOENT` otherwise).
 * - HWPT: a paging domain (page table + domain id on an IOMMU unit) on an IOAS, made by
 *   `HWPT_ALLOC` for a device, or automatically when a device attaches to an IOAS directly.
 * - device: a device bound by its driver (vfio's `BIND_IOMMUFD`, see `iommufdBind`), attached to
 *   at most one HWPT. Binding claims the device's DMA ownership.
 *
 * Live update: `markPreserve(hwpt, token)` opts a HWPT in (`EADDRINUSE` for a token another HWPT
 * of this context uses; no unmark). While the context is preserved, an IOAS with a preserved HWPT
 * is immutable (map/unmap `EBUSY`), preserved HWPTs cannot be destroyed and preserved devices
 * cannot attach or detach (`EBUSY`). A retrieved context (after a live update, restore behaviour)
 * can rebuild a HWPT from the preserved domain by token (`restoreHwpt`).
 *
 * Errors common to every call: an unknown id `ENOENT`, an id of the wrong type `EINVAL`, a kernel
 * that was replaced `ESHUTDOWN`. Every failure leaves the context as it was.
 *
 * @module
 */
import { KernelFile, LiveUpdateError, PAGE_SIZE, type Process } from "@luo/core";
import {
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  MemfdFile,
  type MemfdFolio,
  type MemfdMapping,
} from "@luo/memfd-handler";
import type { IommuCore, IommuDomain } from "../iommu/core.js";
import { IOMMU_READ, IOMMU_WRITE, PT_VASZ, checkIovaRange } from "../iommu/pgtable.js";
import { formatRequester, type RequesterId } from "../iommu/unit.js";
import { iommufdIoctl } from "./uapi.js";

/** Seals a memfd must have had when mapped to be preservable with the iommufd. */
export const IOMMUFD_REQUIRED_SEALS = F_SEAL_SEAL | F_SEAL_GROW | F_SEAL_SHRINK;
/** Highest IOVA (inclusive) an IOAS accepts. */
export const IOMMUFD_IOVA_LAST = 2n ** BigInt(PT_VASZ) - 1n;

/** One mapping of an IOAS. */
export interface IoasArea {
  /** First IOVA. */
  readonly iova: number;
  /** Bytes. */
  readonly length: number;
  /** IOMMU_READ | IOMMU_WRITE. */
  readonly prot: number;
  /** `file` (IOAS_MAP_FILE) or `user` (IOAS_MAP of process memory). */
  readonly kind: "file" | "user";
  /** The memfd file object (a reference is held while mapped). */
  readonly file: MemfdFile;
  /** Offset of the first byte in the memfd. */
  readonly offset: number;
  /** The memfd's seals when it was mapped. */
  readonly sealsAtMap: number;
  /** The pinned folios. */
  readonly folios: readonly MemfdFolio[];
  /** Process whose pinned-page accounting the area counts against. */
  accountedTo: Process;
}

/** An I/O address space. */
export class Ioas {
  /** Areas, sorted by IOVA. */
  readonly areas: IoasArea[] = [];
  /** HWPTs built on it. */
  readonly hwpts = new Set<Hwpt>();
  /** > 0 while a preserved HWPT uses it: map/unmap `EBUSY`. */
  immutable = 0;
  /** @param id - object id */
  constructor(readonly id: number) {}
}

/** A HWPT (hardware page table): a paging domain, optionally opted in for live update. */
export class Hwpt {
  /** Devices attached. */
  readonly devices = new Set<IommufdDevice>();
  /** Live-update token, once marked. */
  token: bigint | undefined;
  /** True while the context is preserved with it. */
  preserved = false;

  /**
   * @param id - object id
   * @param ioas - its IOAS (none for a HWPT restored from a preserved domain)
   * @param domain - its paging domain
   * @param auto - made by an attach to an IOAS (destroyed with its last device)
   * @param restoredToken - the token it was restored from, after a live update
   */
  constructor(
    readonly id: number,
    readonly ioas: Ioas | undefined,
    readonly domain: IommuDomain,
    readonly auto: boolean,
    readonly restoredToken?: bigint,
  ) {}
}

/** A device bound to an iommufd (made by `iommufdBind`). */
export class IommufdDevice {
  /** The HWPT it is attached to. */
  hwpt: Hwpt | undefined;
  #bound = true;

  /**
   * @param id - object id (the `dev_id` of the uAPI)
   * @param ictx - the context it is bound to
   * @param rid - its PCI requester id
   * @param name - its name, for messages
   */
  constructor(
    readonly id: number,
    readonly ictx: IommufdFile,
    readonly rid: RequesterId,
    readonly name: string,
  ) {}

  /** False after `unbind`. */
  get bound(): boolean {
    return this.#bound;
  }

  /**
   * Attaches to a HWPT or an IOAS (`VFIO_DEVICE_ATTACH_IOMMUFD_PT`); returns the HWPT id. For an
   * IOAS, a HWPT with a fresh domain is made (or one this IOAS already has for the unit reused).
   * `EBUSY` for a preserved device, `ENOENT`/`EINVAL` for a bad id.
   */
  attach(ptId: number): number {
    return this.ictx.attachDevice(this, ptId);
  }

  /** Detaches from its HWPT (`VFIO_DEVICE_DETACH_IOMMUFD_PT`); its DMA is blocked. `EBUSY` when preserved. */
  detach(): void {
    this.ictx.detachDevice(this);
  }

  /** Unbinds (the device file is closed): detaches and releases DMA ownership. */
  unbind(): void {
    if (!this.#bound) return;
    this.ictx.unbindDevice(this);
    this.#bound = false;
  }
}

/** What the live-update handler keeps about a preserved context. */
export interface IommufdPreservedState {
  /** Address of `iommufd_ser`. */
  readonly ser: bigint;
}

/** What a retrieved context knows about its predecessor. */
export interface IommufdIncomingState {
  /** Address of `iommufd_ser` (restored). */
  readonly ser: bigint;
  /** Entries: domain record, token, reclaimed, and where the entry's bytes are. */
  readonly entries: Array<{ domainData: bigint; token: bigint; reclaimed: boolean; at: bigint }>;
  /** Restores the domain of an entry (the handler's part of {@link IommufdFile.restoreHwpt}). */
  readonly restore: (domainData: bigint) => IommuDomain;
}

/** Any object of an iommufd context. */
export type IommufdObject = Ioas | Hwpt | IommufdDevice;

const describeObj = (o: IommufdObject): string =>
  o instanceof Ioas ? `IOAS ${o.id}` : o instanceof Hwpt ? `HWPT ${o.id}` : `device ${o.id} (${o.name})`;

/** An open `/dev/iommu` (see the module comment). */
export class IommufdFile extends KernelFile {
  readonly #objects = new Map<number, IommufdObject>();
  #nextId = 1;
  /** Set by the handler while preserved. */
  preserved: IommufdPreservedState | undefined;
  /** Set when this context was retrieved after a live update. */
  incoming: IommufdIncomingState | undefined;

  /**
   * @param core - the kernel's IOMMU core
   * @param restoresHwpts - whether this kernel restores preserved HWPTs (the plugin's behaviour)
   * @param label - shown in messages
   */
  constructor(
    readonly core: IommuCore,
    readonly restoresHwpts: boolean,
    readonly label = "iommufd",
  ) {
    super();
  }

  /** Raw ioctls (see `uapi.ts`). */
  override ioctl(proc: Process, cmd: number, arg: Uint8Array | undefined): Promise<number> {
    try {
      proc.kernel.assertRunning();
      return Promise.resolve(iommufdIoctl(this, proc, cmd, arg));
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new LiveUpdateError("EIO", String(e)));
    }
  }

  /** `anon_inode:iommufd`. */
  get description(): string {
    return `anon_inode:${this.label} (inode ${this.inode})`;
  }

  protected override release(): void {
    // Tear down in reverse: devices, HWPTs, IOASes (areas unpinned, file references dropped).
    const objs = [...this.#objects.values()].reverse();
    for (const o of objs) if (o instanceof IommufdDevice) o.unbind();
    for (const o of objs) if (o instanceof Hwpt && !o.domain.freed) this.core.freeDomain(o.domain);
    for (const o of objs) if (o instanceof Ioas) for (const a of [...o.areas].reverse()) this.#dropArea(a);
    this.#objects.clear();
  }

  #add<T extends IommufdObject>(make: (id: number) => T): T {
    const o = make(this.#nextId++);
    this.#objects.set(o.id, o);
    return o;
  }

  #get(id: unknown, what: string): IommufdObject {
    if (!Number.isInteger(id) || (id as number) < 0 || (id as number) > 0xffff_ffff) {
      throw new LiveUpdateError("EINVAL", `${what}: bad object id ${String(id)}`);
    }
    const o = this.#objects.get(id as number);
    if (!o) throw new LiveUpdateError("ENOENT", `${what}: no object ${String(id)} in ${this.description}`);
    return o;
  }

  /** The IOAS with `id`. `ENOENT` unknown, `EINVAL` not an IOAS. */
  ioas(id: number): Ioas {
    const o = this.#get(id, "IOAS");
    if (!(o instanceof Ioas)) throw new LiveUpdateError("EINVAL", `${describeObj(o)} is not an IOAS`);
    return o;
  }

  /** The HWPT with `id`. `ENOENT` unknown, `EINVAL` not a HWPT. */
  hwpt(id: number): Hwpt {
    const o = this.#get(id, "HWPT");
    if (!(o instanceof Hwpt)) throw new LiveUpdateError("EINVAL", `${describeObj(o)} is not a HWPT`);
    return o;
  }

  /** The bound device with `id`. `ENOENT` unknown, `EINVAL` not a device. */
  device(id: number): IommufdDevice {
    const o = this.#get(id, "device");
    if (!(o instanceof IommufdDevice))
      throw new LiveUpdateError("EINVAL", `${describeObj(o)} is not a device`);
    return o;
  }

  /** Every object, by id. */
  objects(): IommufdObject[] {
    return [...this.#objects.values()];
  }

  // ---------------------------------------------------------------- IOAS

  /** `IOMMU_IOAS_ALLOC`: a new empty IOAS; returns its id. */
  allocIoas(): number {
    return this.#add((id) => new Ioas(id)).id;
  }

  #mutable(ioas: Ioas, what: string): void {
    if (ioas.immutable > 0) {
      throw new LiveUpdateError(
        "EBUSY",
        `${what}: IOAS ${ioas.id} is preserved for live update and immutable`,
      );
    }
  }

  /** Lowest free page-aligned IOVA with room for `length` bytes. `ENOSPC`. */
  #findIova(ioas: Ioas, length: number): number {
    let at = PAGE_SIZE; // keep IOVA 0 unused, as the kernel's allocator does
    for (const a of ioas.areas) {
      if (a.iova >= at + length) break;
      at = Math.max(at, a.iova + a.length);
    }
    if (BigInt(at + length - 1) > IOMMUFD_IOVA_LAST)
      throw new LiveUpdateError("ENOSPC", `IOAS ${ioas.id}: no free IOVA range of ${length} bytes`);
    return at;
  }

  /**
   * `IOMMU_IOAS_MAP_FILE`: maps `[start, start + length)` of the memfd `file` at `iova` (chosen by
   * the kernel when undefined); returns the IOVA. Pins the folios and maps exactly their pages in
   * every HWPT of the IOAS. `EINVAL` (alignment, range outside the file, no permission, not a
   * memfd), `EEXIST` (IOVA in use), `EBUSY` (IOAS immutable), `ENOMEM`.
   */
  mapFile(
    ioasId: number,
    file: KernelFile,
    start: number,
    length: number,
    iova: number | undefined,
    prot: number,
    proc: Process,
  ): number {
    if (!(file instanceof MemfdFile)) {
      throw new LiveUpdateError("EINVAL", `IOAS_MAP_FILE: ${file.description} is not a memfd`);
    }
    return this.#map(ioasId, "file", file, start, length, iova, prot, proc);
  }

  /**
   * `IOMMU_IOAS_MAP` of process memory. The model has no process address space: the memory is
   * named by a shared mapping of a memfd (`memfdMmap`) and an offset into it, which is what a VMM
   * mapping guest RAM by virtual address does. The area is a user-memory area (`IOPT_ADDRESS_USER`),
   * which live update refuses. Errors as {@link IommufdFile.mapFile}; `EFAULT` for an unmapped
   * mapping or a range outside it.
   */
  mapUser(
    ioasId: number,
    mapping: MemfdMapping,
    offset: number,
    length: number,
    iova: number | undefined,
    prot: number,
    proc: Process,
  ): number {
    const file = mapping?.file;
    if (!file) throw new LiveUpdateError("EFAULT", "IOAS_MAP: the user address is not mapped");
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + length > mapping.length) {
      throw new LiveUpdateError(
        "EFAULT",
        `IOAS_MAP: ${String(offset)}+${String(length)} is outside the mapping`,
      );
    }
    if (prot & IOMMU_WRITE && !mapping.writable) {
      throw new LiveUpdateError("EFAULT", "IOAS_MAP: writable DMA mapping of read-only user memory");
    }
    return this.#map(ioasId, "user", file, mapping.offset + offset, length, iova, prot, proc);
  }

  #map(
    ioasId: number,
    kind: "file" | "user",
    file: MemfdFile,
    start: number,
    length: number,
    iova: number | undefined,
    prot: number,
    proc: Process,
  ): number {
    const ioas = this.ioas(ioasId);
    const what = kind === "file" ? "IOAS_MAP_FILE" : "IOAS_MAP";
    if ((prot & (IOMMU_READ | IOMMU_WRITE)) === 0)
      throw new LiveUpdateError("EINVAL", `${what}: neither READABLE nor WRITEABLE`);
    if (
      !Number.isSafeInteger(start) ||
      start < 0 ||
      start % PAGE_SIZE !== 0 ||
      !Number.isSafeInteger(length) ||
      length <= 0 ||
      length % PAGE_SIZE !== 0
    ) {
      throw new LiveUpdateError(
        "EINVAL",
        `${what}: range ${String(start)}+${String(length)} is not page aligned`,
      );
    }
    this.#mutable(ioas, what);
    const at = iova ?? this.#findIova(ioas, length);
    checkIovaRange(at, length, what);
    for (const a of ioas.areas) {
      if (a.iova < at + length && at < a.iova + a.length) {
        throw new LiveUpdateError(
          "EEXIST",
          `${what}: IOVA 0x${at.toString(16)}+${length} overlaps an existing mapping of IOAS ${ioas.id}`,
        );
      }
    }
    const inode = file.memfd;
    const folios = inode.pinRange(start, length); // EINVAL past the end, ENOMEM
    const area: IoasArea = {
      iova: at,
      length,
      prot,
      kind,
      file: file.get(),
      offset: start,
      sealsAtMap: inode.seals,
      folios,
      accountedTo: proc,
    };
    const done: Hwpt[] = [];
    try {
      for (const h of ioas.hwpts) {
        this.#mapArea(h.domain, area);
        done.push(h);
      }
    } catch (e) {
      for (const h of done.reverse()) this.core.unmap(h.domain, area.iova, area.length);
      inode.unpinRange(folios);
      file.put();
      throw e;
    }
    ioas.areas.push(area);
    ioas.areas.sort((a, b) => a.iova - b.iova);
    return at;
  }

  /** Maps one area into a domain: physically contiguous runs of its folios. All or nothing. */
  #mapArea(domain: IommuDomain, area: IoasArea): void {
    const fb = area.file.memfd.folioBytes;
    const runs: Array<[number, bigint, number]> = [];
    let pos = area.offset;
    for (const f of area.folios) {
      const fileStart = f.index * PAGE_SIZE;
      const inFolio = pos - fileStart;
      const n = Math.min(fb - inFolio, area.offset + area.length - pos);
      const phys = f.phys + BigInt(inFolio);
      const iova = area.iova + (pos - area.offset);
      const last = runs[runs.length - 1];
      if (last && last[1] + BigInt(last[2]) === phys) last[2] += n;
      else runs.push([iova, phys, n]);
      pos += n;
    }
    let mapped = 0;
    try {
      for (const [iova, phys, n] of runs) {
        this.core.map(domain, iova, phys, n, area.prot);
        mapped += n;
      }
    } catch (e) {
      if (mapped > 0) this.core.unmap(domain, area.iova, mapped);
      throw e;
    }
  }

  #dropArea(area: IoasArea): void {
    area.file.memfd.unpinRange(area.folios);
    area.file.put();
  }

  /**
   * `IOMMU_IOAS_UNMAP`: removes every area inside `[iova, iova + length)`; returns the bytes
   * unmapped. `ENOENT` when the range cuts an area or holds none, `EBUSY` when immutable.
   */
  unmap(ioasId: number, iova: number, length: number): number {
    const ioas = this.ioas(ioasId);
    this.#mutable(ioas, "IOAS_UNMAP");
    const end = iova + length;
    const hit = ioas.areas.filter((a) => a.iova < end && iova < a.iova + a.length);
    if (hit.length === 0 || hit.some((a) => a.iova < iova || a.iova + a.length > end)) {
      throw new LiveUpdateError(
        "ENOENT",
        `IOAS_UNMAP: 0x${iova.toString(16)}+${length} does not cover whole mappings of IOAS ${ioas.id}`,
      );
    }
    let bytes = 0;
    for (const a of hit) {
      for (const h of ioas.hwpts) this.core.unmap(h.domain, a.iova, a.length);
      ioas.areas.splice(ioas.areas.indexOf(a), 1);
      this.#dropArea(a);
      bytes += a.length;
    }
    return bytes;
  }

  /** `IOMMU_IOAS_IOVA_RANGES`: the usable IOVA ranges (inclusive) and the alignment. */
  iovaRanges(ioasId: number): { ranges: Array<{ start: bigint; last: bigint }>; alignment: bigint } {
    this.ioas(ioasId);
    return { ranges: [{ start: 0n, last: IOMMUFD_IOVA_LAST }], alignment: BigInt(PAGE_SIZE) };
  }

  /**
   * `IOMMU_IOAS_CHANGE_PROCESS`: charges the pinned pages of every file mapping to `proc`.
   * `EINVAL` when a user-memory mapping exists (its pages belong to the old address space).
   */
  changeProcess(proc: Process): void {
    const all = this.objects()
      .filter((o): o is Ioas => o instanceof Ioas)
      .flatMap((i) => i.areas);
    const user = all.find((a) => a.kind === "user");
    if (user)
      throw new LiveUpdateError(
        "EINVAL",
        `IOAS_CHANGE_PROCESS: IOVA 0x${user.iova.toString(16)} maps process memory`,
      );
    for (const a of all) a.accountedTo = proc;
  }

  /** Pages pinned by this context that count against `proc`. */
  pinnedPages(proc: Process): number {
    let n = 0;
    for (const o of this.#objects.values()) {
      if (o instanceof Ioas) for (const a of o.areas) if (a.accountedTo === proc) n += a.length / PAGE_SIZE;
    }
    return n;
  }

  // ---------------------------------------------------------------- HWPT

  /**
   * `IOMMU_HWPT_ALLOC`: a paging domain for device `devId` on IOAS `ptId`, holding every mapping
   * of the IOAS; returns the HWPT id. `EINVAL` (flags, not an IOAS), `ENOENT`, `ENOMEM`.
   */
  allocHwpt(devId: number, ptId: number, flags = 0): number {
    if (flags !== 0)
      throw new LiveUpdateError("EOPNOTSUPP", `HWPT_ALLOC: flags 0x${flags.toString(16)} not supported`);
    const dev = this.device(devId);
    const ioas = this.ioas(ptId);
    return this.#newHwpt(dev, ioas, false).id;
  }

  #newHwpt(dev: IommufdDevice, ioas: Ioas, auto: boolean): Hwpt {
    const domain = this.core.allocDomain(dev.rid);
    const done: IoasArea[] = [];
    try {
      for (const a of ioas.areas) {
        this.#mapArea(domain, a);
        done.push(a);
      }
    } catch (e) {
      this.core.freeDomain(domain);
      throw e;
    }
    const h = this.#add((id) => new Hwpt(id, ioas, domain, auto));
    ioas.hwpts.add(h);
    return h;
  }

  /**
   * `IOMMU_DESTROY`: destroys an IOAS (no HWPT may use it, `EBUSY`), a HWPT (no device attached,
   * not preserved, `EBUSY`). Devices are not destroyed this way (`EINVAL`; unbind them).
   */
  destroy(id: number): void {
    const o = this.#get(id, "DESTROY");
    if (o instanceof IommufdDevice)
      throw new LiveUpdateError("EINVAL", `DESTROY: ${describeObj(o)} is removed by unbinding`);
    if (o instanceof Ioas) {
      if (o.hwpts.size > 0)
        throw new LiveUpdateError("EBUSY", `DESTROY: IOAS ${o.id} still has ${o.hwpts.size} HWPT(s)`);
      this.#mutable(o, "DESTROY");
      for (const a of [...o.areas].reverse()) this.#dropArea(a);
      o.areas.length = 0;
    } else {
      if (o.devices.size > 0)
        throw new LiveUpdateError("EBUSY", `DESTROY: HWPT ${o.id} still has ${o.devices.size} device(s)`);
      if (o.preserved)
        throw new LiveUpdateError("EBUSY", `DESTROY: HWPT ${o.id} is preserved for live update`);
      this.core.freeDomain(o.domain);
      o.ioas?.hwpts.delete(o);
    }
    this.#objects.delete(id);
  }

  // ---------------------------------------------------------------- devices

  /** Binds a device (claims its DMA ownership); see `iommufdBind`. */
  bindDevice(rid: RequesterId, name: string): IommufdDevice {
    const rec = this.core.preservedRecord(rid);
    if (rec) {
      const mine = this.incoming?.entries.some((e) => e.domainData === rec.domainPhys);
      if (!mine) {
        throw new LiveUpdateError(
          "EPERM",
          `${formatRequester(rid)} (${name}) was preserved with an iommufd of the previous kernel; bind it to that iommufd once retrieved`,
        );
      }
    } else this.core.claim(rid, this);
    const dev = this.#add((id) => new IommufdDevice(id, this, rid, name));
    if (rec) {
      const restored = this.objects().find(
        (o): o is Hwpt => o instanceof Hwpt && o.domain.restoredFrom === rec.domainPhys,
      );
      this.core.takeOverPreserved(rid, this, restored?.domain);
      if (restored) {
        restored.devices.add(dev);
        dev.hwpt = restored;
      }
    }
    return dev;
  }

  /** See {@link IommufdDevice.attach}. */
  attachDevice(dev: IommufdDevice, ptId: number): number {
    this.#assertBound(dev);
    if (this.core.isPreserved(dev.rid))
      throw new LiveUpdateError("EBUSY", `${dev.name} is preserved for live update`);
    const o = this.#get(ptId, "attach");
    let hwpt: Hwpt;
    let made = false;
    if (o instanceof Hwpt) hwpt = o;
    else if (o instanceof Ioas) {
      const unitOf = this.core.domainOf(dev.rid)?.unit;
      const reuse = [...o.hwpts].find((h) => h.auto && (unitOf === undefined || h.domain.unit === unitOf));
      if (reuse) hwpt = reuse;
      else {
        hwpt = this.#newHwpt(dev, o, true);
        made = true;
      }
    } else throw new LiveUpdateError("EINVAL", `attach: ${describeObj(o)} is neither an IOAS nor a HWPT`);
    try {
      this.core.attach(dev.rid, hwpt.domain);
    } catch (e) {
      if (made) this.destroy(hwpt.id);
      throw e;
    }
    const old = dev.hwpt;
    old?.devices.delete(dev);
    hwpt.devices.add(dev);
    dev.hwpt = hwpt;
    if (old && old !== hwpt && old.auto && old.devices.size === 0 && !old.preserved) this.destroy(old.id);
    return hwpt.id;
  }

  /** See {@link IommufdDevice.detach}. */
  detachDevice(dev: IommufdDevice): void {
    this.#assertBound(dev);
    if (this.core.isPreserved(dev.rid))
      throw new LiveUpdateError("EBUSY", `${dev.name} is preserved for live update`);
    this.#detach(dev);
  }

  #detach(dev: IommufdDevice): void {
    const old = dev.hwpt;
    this.core.detach(dev.rid);
    if (!old) return;
    old.devices.delete(dev);
    dev.hwpt = undefined;
    if (old.auto && old.devices.size === 0 && !old.preserved) this.destroy(old.id);
  }

  /** See {@link IommufdDevice.unbind}. */
  unbindDevice(dev: IommufdDevice): void {
    if (!this.#objects.has(dev.id)) return;
    this.#detach(dev);
    this.core.release(dev.rid, this);
    this.#objects.delete(dev.id);
  }

  #assertBound(dev: IommufdDevice): void {
    if (!dev.bound || this.#objects.get(dev.id) !== dev) {
      throw new LiveUpdateError("ENODEV", `${dev.name} is not bound to ${this.description}`);
    }
  }

  // ---------------------------------------------------------------- live update

  /**
   * `IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE`: opts HWPT `hwptId` in with `token`. `EADDRINUSE`
   * when another HWPT of this context has the token; `EINVAL` for an automatic HWPT or one
   * restored from the previous kernel; `EBUSY` while the context is preserved. Marking the same
   * HWPT again replaces its token (there is no unmark).
   */
  markPreserve(hwptId: number, token: bigint): void {
    const h = this.hwpt(hwptId);
    if (typeof token !== "bigint" || token < 0n || token >= 1n << 64n)
      throw new LiveUpdateError("EINVAL", `MARK_PRESERVE: bad token ${String(token)}`);
    if (this.preserved) throw new LiveUpdateError("EBUSY", `MARK_PRESERVE: ${this.description} is preserved`);
    if (!h.ioas)
      throw new LiveUpdateError(
        "EINVAL",
        `MARK_PRESERVE: HWPT ${h.id} was restored from the previous kernel`,
      );
    const other = this.markedHwpts().find((x) => x !== h && x.token === token);
    if (other)
      throw new LiveUpdateError("EADDRINUSE", `MARK_PRESERVE: token ${token} is used by HWPT ${other.id}`);
    h.token = token;
  }

  /** HWPTs opted in for live update, by id. */
  markedHwpts(): Hwpt[] {
    return this.objects().filter((o): o is Hwpt => o instanceof Hwpt && o.token !== undefined);
  }

  /**
   * `IOMMU_HWPT_LIVEUPDATE_RESTORE` (restore behaviour): a HWPT backed by the preserved domain of
   * `token`, with the devices bound here that still translate through it; returns its id.
   * `ENOTTY` when this context was not retrieved from a live update; `ENOENT` for an unknown or
   * already reclaimed token; `EINVAL` when the domain's pages cannot be restored.
   */
  restoreHwpt(token: bigint): number {
    const inc = this.incoming;
    if (!inc)
      throw new LiveUpdateError(
        "ENOTTY",
        `HWPT_LIVEUPDATE_RESTORE: ${this.description} was not retrieved from a live update`,
      );
    const e = inc.entries.find((x) => x.token === token);
    if (!e || e.reclaimed)
      throw new LiveUpdateError(
        "ENOENT",
        `HWPT_LIVEUPDATE_RESTORE: no unreclaimed HWPT with token ${String(token)}`,
      );
    const domain = inc.restore(e.domainData);
    e.reclaimed = true;
    const h = this.#add((id) => new Hwpt(id, undefined, domain, false, token));
    for (const o of this.#objects.values()) {
      if (
        o instanceof IommufdDevice &&
        this.core.preservedRecord(o.rid) === undefined &&
        o.hwpt === undefined
      ) {
        const rec = this.core.incoming?.device(o.rid.segment, o.rid.bdf);
        if (rec?.domainPhys === e.domainData && this.core.domainOf(o.rid) === undefined) {
          this.core.takeOverPreserved(o.rid, this, domain);
          h.devices.add(o);
          o.hwpt = h;
        }
      }
    }
    return h.id;
  }
}

/**
 * The iommufd context behind `fd` of `proc`.
 *
 * @throws `LiveUpdateError` `EBADF` (not open), `EINVAL` (not an iommufd), `ESHUTDOWN`
 */
export function iommufdFile(proc: Process, fd: number): IommufdFile {
  const f = proc.file(fd);
  if (!(f instanceof IommufdFile))
    throw new LiveUpdateError("EINVAL", `fd ${fd} (${f.description}) is not an iommufd`);
  return f;
}
