/**
 * The IOMMU unit: machine hardware (a VT-d-like DMA remapping unit) that translates every DMA of
 * the PCI devices in its scope by walking the I/O page tables of {@link IoPageTable} in machine
 * memory. It belongs to the machine, not to a kernel: it keeps translating while one kernel halts
 * and the next boots, and it is saved in the machine image (kind {@link IOMMU_HARDWARE_KIND},
 * rebuilt by {@link iommuUnitLoader}).
 *
 * Registers (programmed by the kernel's IOMMU driver):
 * - context entries: requester id (PCI segment + bus/device/function) → domain id + page-table
 *   root. Writing or clearing an entry takes effect at once (the driver's context-cache flush is
 *   part of the write). A requester without an entry is blocked.
 * - the IOTLB: cached leaf translations per domain id. Page-table edits do not reach it; software
 *   must invalidate (`invalidateAll`, `invalidateDomain`, `invalidateRange`), exactly as on real
 *   hardware, or devices keep using the stale translation.
 * - the fault log: every refused DMA is recorded (requester, IOVA, direction, reason, machine
 *   time); the newest {@link FAULT_LOG_SIZE} stay readable and `faultCount` counts them all.
 *
 * Device-facing API: a device (the vfio package's PCI functions) gets a {@link DmaPort} for its
 * requester id from {@link IommuUnit.port} and calls `dmaRead(iova, length)` /
 * `dmaWrite(iova, bytes)`. A transfer is translated in full before any byte moves: a fault
 * anywhere in it (no context entry, IOVA not mapped, write to a read-only or read of a
 * write-only mapping, a translation into memory that is not RAM or not allocated) refuses the
 * whole transfer with {@link IommuFaultError} (`EFAULT`) and logs it. Nothing is silently dropped.
 *
 * @module
 */
import {
  LiveUpdateError,
  PAGE_SIZE,
  type HardwareLoader,
  type Machine,
  type MachineHardware,
} from "@luo/core";
import {
  IOMMU_READ,
  IOMMU_WRITE,
  PTE_ADDR_MASK,
  PTE_PS,
  PTE_READ,
  PTE_WRITE,
  PT_TOP_LEVEL,
  levelSize,
  ptIndex,
} from "./pgtable.js";

/** The machine-hardware kind of an IOMMU unit. */
export const IOMMU_HARDWARE_KIND = "iommu";
/** Fault records kept readable (older ones only count). */
export const FAULT_LOG_SIZE = 256;

/** A PCI requester id: segment (domain) and bus/device/function. */
export interface RequesterId {
  /** PCI segment (domain) number, 0..65535. */
  readonly segment: number;
  /** Bus << 8 | device << 3 | function, 0..65535. */
  readonly bdf: number;
}

/** `EINVAL` unless `rid` is a requester id; returns its key `segment << 16 | bdf`. */
export function requesterKey(rid: RequesterId): number {
  const seg = (rid as Partial<RequesterId> | null)?.segment;
  const bdf = (rid as Partial<RequesterId> | null)?.bdf;
  if (
    !Number.isInteger(seg) ||
    !Number.isInteger(bdf) ||
    seg! < 0 ||
    seg! > 0xffff ||
    bdf! < 0 ||
    bdf! > 0xffff
  ) {
    throw new LiveUpdateError("EINVAL", `bad PCI requester id ${JSON.stringify(rid)}`);
  }
  return seg! * 0x10000 + bdf!;
}

/** `"ssss:bb:dd.f"`, as lspci prints it. */
export function formatRequester(rid: RequesterId): string {
  const h = (n: number, w: number): string => n.toString(16).padStart(w, "0");
  return `${h(rid.segment, 4)}:${h(rid.bdf >> 8, 2)}:${h((rid.bdf >> 3) & 0x1f, 2)}.${rid.bdf & 7}`;
}

/** Requester id of bus/device/function in a segment. */
export function pciRequester(segment: number, bus: number, device: number, fn: number): RequesterId {
  return { segment, bdf: ((bus & 0xff) << 8) | ((device & 0x1f) << 3) | (fn & 7) };
}

/** A context entry: where a requester's DMA is translated. */
export interface IommuContext {
  /** Domain id (the IOTLB tag), 1..65535. */
  readonly domainId: number;
  /** Physical address of the top page table. */
  readonly root: bigint;
}

/** Why a DMA was refused. */
export type DmaFaultReason = "blocked" | "not-present" | "read-only" | "write-only" | "bad-address";

/** One recorded DMA fault. */
export interface DmaFault {
  /** Machine time of the fault. */
  readonly timeNs: bigint;
  /** The requester. */
  readonly rid: RequesterId;
  /** The first IOVA that could not be translated. */
  readonly iova: bigint;
  /** True for a DMA write (device → memory). */
  readonly write: boolean;
  /** Why it was refused. */
  readonly reason: DmaFaultReason;
  /** Domain id of the requester's context, 0 when blocked. */
  readonly domainId: number;
}

/** A refused DMA: `EFAULT`, carrying the fault record. */
export class IommuFaultError extends LiveUpdateError {
  /**
   * @param fault - the recorded fault
   * @param unit - the unit's name
   */
  constructor(
    readonly fault: DmaFault,
    unit: string,
  ) {
    super(
      "EFAULT",
      `${unit}: DMA ${fault.write ? "write" : "read"} by ${formatRequester(fault.rid)} at IOVA 0x${fault.iova.toString(16)} refused (${fault.reason})`,
    );
    this.name = "IommuFaultError";
  }
}

/** What a device holds to DMA through its IOMMU. */
export interface DmaPort {
  /** The requester id the port issues DMA as. */
  readonly rid: RequesterId;
  /** Reads `length` bytes at `iova`. {@link IommuFaultError} when any of it faults. */
  dmaRead(iova: bigint | number, length: number): Uint8Array;
  /** Writes `bytes` at `iova`. {@link IommuFaultError} when any of it faults. */
  dmaWrite(iova: bigint | number, bytes: Uint8Array): void;
}

/** Counters of a unit. */
export interface IommuStats {
  /** Translations served from the IOTLB (one per leaf touched). */
  readonly iotlbHits: number;
  /** Translations that walked the page table. */
  readonly iotlbMisses: number;
  /** Cached leaf translations. */
  readonly iotlbEntries: number;
  /** Faults recorded since power-on. */
  readonly faultCount: number;
}

/** Options of an {@link IommuUnit}. */
export interface IommuUnitOptions {
  /** Unique hardware name, e.g. `"dmar0"`. */
  readonly name: string;
  /** The unit's identity across kernels (VT-d uses its register base address). Default 0xfed90000 + 0x1000·n. */
  readonly token?: bigint;
  /** PCI segments in scope; default every segment. */
  readonly segments?: readonly number[];
  /**
   * Whether the unit's driver can preserve domains and devices across a live update (VT-d can;
   * set false to model a unit whose driver cannot: preserving then fails `EOPNOTSUPP`). Default true.
   */
  readonly liveUpdate?: boolean;
}

/** A cached leaf: physical base of the leaf and its permissions. */
interface TlbEntry {
  readonly phys: number;
  readonly prot: number;
}

/** Per-domain IOTLB: one map per leaf level, keyed by IOVA / leaf size. */
type DomainTlb = [Map<number, TlbEntry>, Map<number, TlbEntry>, Map<number, TlbEntry>];

const STATE_VERSION = 1;
let nextToken = 0xfed9_0000n;

const toIova = (iova: bigint | number, what: string): number => {
  const n = typeof iova === "bigint" ? Number(iova) : iova;
  if (!Number.isSafeInteger(n) || n < 0 || n >= 2 ** 64) {
    throw new LiveUpdateError("EINVAL", `${what}: bad IOVA ${String(iova)}`);
  }
  return n;
};

/** An IOMMU unit (see the module comment). */
export class IommuUnit implements MachineHardware {
  /** {@link IOMMU_HARDWARE_KIND}. */
  readonly kind = IOMMU_HARDWARE_KIND;
  /** Hardware name. */
  readonly name: string;
  /** Identity across kernels. */
  readonly token: bigint;
  /** Segments in scope (undefined: all). */
  readonly segments: readonly number[] | undefined;
  /** Whether its driver supports live update (see {@link IommuUnitOptions.liveUpdate}). */
  readonly liveUpdate: boolean;
  readonly #machine: Machine;
  readonly #contexts = new Map<number, IommuContext>();
  readonly #tlb = new Map<number, DomainTlb>();
  readonly #faults: DmaFault[] = [];
  #faultCount = 0;
  #hits = 0;
  #misses = 0;

  /**
   * @param machine - the machine whose memory holds the page tables
   * @param options - name, token, scope
   */
  constructor(machine: Machine, options: IommuUnitOptions) {
    this.#machine = machine;
    this.name = options.name;
    this.token = options.token ?? (nextToken += 0x1000n) - 0x1000n;
    this.segments = options.segments ? [...options.segments] : undefined;
    this.liveUpdate = options.liveUpdate ?? true;
  }

  /** True when `rid` is in this unit's scope. */
  covers(rid: RequesterId): boolean {
    requesterKey(rid);
    return this.segments === undefined || this.segments.includes(rid.segment);
  }

  // ---------------------------------------------------------------- registers

  /** Programs `rid`'s context entry (takes effect at once). `EINVAL` for a bad id, domain or root. */
  setContext(rid: RequesterId, ctx: IommuContext): void {
    const key = requesterKey(rid);
    if (!Number.isInteger(ctx.domainId) || ctx.domainId < 1 || ctx.domainId > 0xffff) {
      throw new LiveUpdateError("EINVAL", `${this.name}: bad domain id ${String(ctx.domainId)}`);
    }
    if (typeof ctx.root !== "bigint" || ctx.root % BigInt(PAGE_SIZE) !== 0n || ctx.root === 0n) {
      throw new LiveUpdateError("EINVAL", `${this.name}: bad page-table root ${String(ctx.root)}`);
    }
    this.#contexts.set(key, { domainId: ctx.domainId, root: ctx.root });
  }

  /** Clears `rid`'s context entry: its DMA is blocked from now on. */
  clearContext(rid: RequesterId): void {
    this.#contexts.delete(requesterKey(rid));
  }

  /** `rid`'s context entry, if any. */
  context(rid: RequesterId): IommuContext | undefined {
    return this.#contexts.get(requesterKey(rid));
  }

  /** Every programmed context entry. */
  contexts(): Array<{ rid: RequesterId; context: IommuContext }> {
    return [...this.#contexts].map(([k, context]) => ({
      rid: { segment: k >>> 16, bdf: k & 0xffff },
      context,
    }));
  }

  /** Drops every cached translation. */
  invalidateAll(): void {
    this.#tlb.clear();
  }

  /** Drops the cached translations of one domain id. */
  invalidateDomain(domainId: number): void {
    this.#tlb.delete(domainId);
  }

  /** Drops the cached translations of one domain id that overlap `[iova, iova + size)`. */
  invalidateRange(domainId: number, iova: bigint | number, size: number): void {
    const tlb = this.#tlb.get(domainId);
    if (!tlb) return;
    const start = toIova(iova, "invalidateRange");
    const end = start + size;
    for (let level = 0; level < 3; level++) {
      const s = levelSize(level);
      const map = tlb[level]!;
      const first = Math.floor(start / s);
      const last = Math.ceil(end / s);
      if (last - first > map.size) {
        for (const k of map.keys()) if (k >= first && k < last) map.delete(k);
      } else for (let k = first; k < last; k++) map.delete(k);
    }
  }

  /** The newest recorded faults, oldest first. */
  faults(): readonly DmaFault[] {
    return [...this.#faults];
  }

  /** Clears the readable fault log (the count stays). */
  clearFaults(): void {
    this.#faults.length = 0;
  }

  /** Counters. */
  stats(): IommuStats {
    let entries = 0;
    for (const t of this.#tlb.values()) entries += t[0].size + t[1].size + t[2].size;
    return {
      iotlbHits: this.#hits,
      iotlbMisses: this.#misses,
      iotlbEntries: entries,
      faultCount: this.#faultCount,
    };
  }

  // ---------------------------------------------------------------- DMA

  /** The DMA port of a device with requester id `rid` (`EINVAL` when out of scope). */
  port(rid: RequesterId): DmaPort {
    requesterKey(rid);
    if (!this.covers(rid)) {
      throw new LiveUpdateError("EINVAL", `${formatRequester(rid)} is not in the scope of ${this.name}`);
    }
    const r: RequesterId = { segment: rid.segment, bdf: rid.bdf };
    return {
      rid: r,
      dmaRead: (iova, length) => this.dmaRead(r, iova, length),
      dmaWrite: (iova, bytes) => this.dmaWrite(r, iova, bytes),
    };
  }

  /** DMA read by `rid` (see {@link DmaPort.dmaRead}). */
  dmaRead(rid: RequesterId, iova: bigint | number, length: number): Uint8Array {
    if (!Number.isSafeInteger(length) || length < 0) {
      throw new LiveUpdateError("EINVAL", `${this.name}: bad DMA length ${String(length)}`);
    }
    const views = this.#translate(rid, toIova(iova, "dmaRead"), length, false);
    if (views.length === 1) return views[0]!.slice();
    const out = new Uint8Array(length);
    let at = 0;
    for (const v of views) {
      out.set(v, at);
      at += v.length;
    }
    return out;
  }

  /**
   * DMA read by `rid` into the device's own buffer `into` (its FIFO): the same translation and
   * faults as {@link IommuUnit.dmaRead}, without allocating. A device that moves data in bursts
   * should use this: allocating (or `slice()`-ing) a fresh array per burst was measured at
   * 0.6 GB/s for 512 KiB bursts (and `slice()` of a view into RAM at 0.1 GB/s), a copy into a
   * reused buffer runs at memcpy speed.
   */
  dmaReadInto(rid: RequesterId, iova: bigint | number, into: Uint8Array): void {
    if (!(into instanceof Uint8Array))
      throw new LiveUpdateError("EINVAL", `${this.name}: DMA buffer is not bytes`);
    const views = this.#translate(rid, toIova(iova, "dmaRead"), into.length, false);
    let at = 0;
    for (const v of views) {
      into.set(v, at);
      at += v.length;
    }
  }

  /** DMA write by `rid` (see {@link DmaPort.dmaWrite}). */
  dmaWrite(rid: RequesterId, iova: bigint | number, bytes: Uint8Array): void {
    if (!(bytes instanceof Uint8Array))
      throw new LiveUpdateError("EINVAL", `${this.name}: DMA data is not bytes`);
    const views = this.#translate(rid, toIova(iova, "dmaWrite"), bytes.length, true);
    let at = 0;
    for (const v of views) {
      v.set(at === 0 && v.length === bytes.length ? bytes : bytes.subarray(at, at + v.length));
      at += v.length;
    }
  }

  /**
   * Translates `[iova, iova + length)` for `rid` into views of physically contiguous runs of
   * RAM, merging adjacent leaves (so a transfer over contiguous memory is one copy). Any fault
   * is logged and thrown before anything moves.
   */
  #translate(rid: RequesterId, iova: number, length: number, write: boolean): Uint8Array[] {
    const key = requesterKey(rid);
    const ctx = this.#contexts.get(key);
    if (!ctx) this.#fault(rid, iova, write, "blocked", 0);
    const need = write ? IOMMU_WRITE : IOMMU_READ;
    let tlb = this.#tlb.get(ctx.domainId);
    if (!tlb) this.#tlb.set(ctx.domainId, (tlb = [new Map(), new Map(), new Map()]));
    const runs: number[] = [];
    const end = iova + length;
    for (let va = iova; va < end;) {
      let entry: TlbEntry | undefined;
      let level = 0;
      for (; level < 3; level++) {
        entry = tlb[level]!.get(Math.floor(va / levelSize(level)));
        if (entry) break;
      }
      if (entry) this.#hits++;
      else {
        this.#misses++;
        const found = this.#walk(ctx.root, va);
        if (!found) this.#fault(rid, va, write, "not-present", ctx.domainId);
        level = found.level;
        entry = { phys: found.phys, prot: found.prot };
        tlb[level]!.set(Math.floor(va / levelSize(level)), entry);
      }
      if ((entry.prot & need) === 0)
        this.#fault(rid, va, write, write ? "read-only" : "write-only", ctx.domainId);
      const s = levelSize(level);
      const inLeaf = va % s;
      const n = Math.min(s - inLeaf, end - va);
      const pa = entry.phys + inLeaf;
      const last = runs.length - 2;
      if (last >= 0 && runs[last]! + runs[last + 1]! === pa) runs[last + 1]! += n;
      else runs.push(pa, n);
      va += n;
    }
    const views: Uint8Array[] = [];
    for (let i = 0; i < runs.length; i += 2) {
      try {
        // Checked by the machine: inside RAM and every page allocated.
        views.push(this.#machine.view(BigInt(runs[i]!), runs[i + 1]!));
      } catch {
        this.#fault(rid, iova, write, "bad-address", ctx.domainId);
      }
    }
    return views;
  }

  /** Hardware page walk: reads the entries from machine memory as they are now. */
  #walk(root: bigint, iova: number): { phys: number; level: number; prot: number } | undefined {
    let table = Number(root);
    for (let level = PT_TOP_LEVEL; level >= 0; level--) {
      let e: bigint;
      try {
        e = this.#machine.readU64(BigInt(table + ptIndex(iova, level) * 8));
      } catch {
        return undefined; // a table outside RAM or in a free page: nothing is mapped there
      }
      if ((e & (PTE_READ | PTE_WRITE)) === 0n) return undefined;
      const addr = Number(e & PTE_ADDR_MASK);
      if (level === 0 || (e & PTE_PS) !== 0n) {
        if (level > 2) return undefined;
        return { phys: addr, level, prot: Number(e & (PTE_READ | PTE_WRITE)) };
      }
      table = addr;
    }
    return undefined;
  }

  #fault(rid: RequesterId, iova: number, write: boolean, reason: DmaFaultReason, domainId: number): never {
    const fault: DmaFault = {
      timeNs: this.#machine.timeNs,
      rid: { segment: rid.segment, bdf: rid.bdf },
      iova: BigInt(iova),
      write,
      reason,
      domainId,
    };
    this.#faultCount++;
    this.#faults.push(fault);
    if (this.#faults.length > FAULT_LOG_SIZE) this.#faults.shift();
    throw new IommuFaultError(fault, this.name);
  }

  // ---------------------------------------------------------------- image

  /** The unit's registers as bytes (UTF-8 JSON, versioned): contexts, IOTLB, fault log, counters. */
  save(): Uint8Array {
    const tlb: Array<[number, number, number, number, number]> = [];
    for (const [did, levels] of this.#tlb) {
      levels.forEach((m, level) => {
        for (const [k, e] of m) tlb.push([did, level, k, e.phys, e.prot]);
      });
    }
    const state = {
      version: STATE_VERSION,
      token: this.token.toString(),
      segments: this.segments ?? null,
      liveUpdate: this.liveUpdate,
      contexts: [...this.#contexts].map(([k, c]) => [k, c.domainId, c.root.toString()]),
      tlb,
      faults: this.#faults.map((f) => [
        f.timeNs.toString(),
        requesterKey(f.rid),
        f.iova.toString(),
        f.write,
        f.reason,
        f.domainId,
      ]),
      faultCount: this.#faultCount,
      hits: this.#hits,
      misses: this.#misses,
    };
    return new TextEncoder().encode(JSON.stringify(state));
  }

  /** Rebuilds a unit from {@link IommuUnit.save} bytes (see {@link iommuUnitLoader}). */
  static restore(machine: Machine, name: string, bytes: Uint8Array): IommuUnit {
    const bad = (what: string): never => {
      throw new LiveUpdateError("EINVAL", `IOMMU unit "${name}" state: ${what}`);
    };
    let s: Record<string, unknown>;
    try {
      s = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes)) as Record<string, unknown>;
    } catch {
      return bad("not valid JSON");
    }
    if (s.version !== STATE_VERSION) bad(`version ${String(s.version)}`);
    const int = (v: unknown, max: number): number =>
      Number.isSafeInteger(v) && (v as number) >= 0 && (v as number) <= max
        ? (v as number)
        : bad(`bad number ${String(v)}`);
    const big = (v: unknown): bigint => {
      try {
        return BigInt(v as string);
      } catch {
        return bad(`bad address ${String(v)}`);
      }
    };
    const arr = (v: unknown): unknown[][] =>
      Array.isArray(v) && v.every(Array.isArray) ? (v as unknown[][]) : bad("bad list");
    const segs =
      s.segments === null
        ? undefined
        : (Array.isArray(s.segments) ? s.segments : bad("segments")).map((x) => int(x, 0xffff));
    if (typeof s.liveUpdate !== "boolean") bad("liveUpdate");
    const u = new IommuUnit(machine, {
      name,
      token: big(s.token),
      segments: segs,
      liveUpdate: s.liveUpdate as boolean,
    });
    for (const [k, did, root] of arr(s.contexts)) {
      const key = int(k, 0xffff_ffff);
      u.setContext(
        { segment: key >>> 16, bdf: key & 0xffff },
        { domainId: int(did, 0xffff), root: big(root) },
      );
    }
    for (const [did, level, k, phys, prot] of arr(s.tlb)) {
      const d = int(did, 0xffff);
      let t = u.#tlb.get(d);
      if (!t) u.#tlb.set(d, (t = [new Map(), new Map(), new Map()]));
      t[int(level, 2)]!.set(int(k, Number.MAX_SAFE_INTEGER), {
        phys: int(phys, Number.MAX_SAFE_INTEGER),
        prot: int(prot, 3),
      });
    }
    const reasons: readonly string[] = ["blocked", "not-present", "read-only", "write-only", "bad-address"];
    for (const [t, k, iova, write, reason, did] of arr(s.faults)) {
      const key = int(k, 0xffff_ffff);
      if (typeof write !== "boolean" || !reasons.includes(reason as string)) bad("bad fault record");
      u.#faults.push({
        timeNs: big(t),
        rid: { segment: key >>> 16, bdf: key & 0xffff },
        iova: big(iova),
        write: write as boolean,
        reason: reason as DmaFaultReason,
        domainId: int(did, 0xffff),
      });
    }
    u.#faultCount = int(s.faultCount, Number.MAX_SAFE_INTEGER);
    u.#hits = int(s.hits, Number.MAX_SAFE_INTEGER);
    u.#misses = int(s.misses, Number.MAX_SAFE_INTEGER);
    return u;
  }
}

/** The {@link HardwareLoader} of IOMMU units: pass it to `Machine.load(path, { hardware: [...] })`. */
export const iommuUnitLoader: HardwareLoader = {
  kind: IOMMU_HARDWARE_KIND,
  load: (machine, name, state) => IommuUnit.restore(machine, name, state),
};

/**
 * A machine-hardware factory for `new Machine({ memory, hardware: [iommuUnit({ name: "dmar0" })] })`.
 */
export function iommuUnit(options: IommuUnitOptions): (machine: Machine) => IommuUnit {
  return (machine) => new IommuUnit(machine, options);
}

/** The IOMMU units of a machine, in attach order. */
export function iommuUnits(machine: Machine): IommuUnit[] {
  return machine.hardware.list(IOMMU_HARDWARE_KIND).filter((h): h is IommuUnit => h instanceof IommuUnit);
}

/** The unit whose scope covers `rid` (the first one). `ENODEV` when none does. */
export function iommuFor(machine: Machine, rid: RequesterId): IommuUnit {
  const u = iommuUnits(machine).find((x) => x.covers(rid));
  if (!u) throw new LiveUpdateError("ENODEV", `no IOMMU unit covers ${formatRequester(rid)}`);
  return u;
}
