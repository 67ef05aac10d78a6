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
  /** Reads `length` bytes at `iova` into a new array. {@link IommuFaultError} when any of it faults. */
  dmaRead(iova: bigint | number, length: number): Uint8Array;
  /**
   * Reads `dst.length` bytes at `iova` into `dst` (a device's own buffer: no allocation, which
   * is what keeps large transfers near memcpy speed). {@link IommuFaultError} when any of it
   * faults; `dst` is then unchanged.
   */
  dmaReadInto(iova: bigint | number, dst: Uint8Array): void;
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
  /** First IOVA the entry translates. */
  readonly iova: number;
  /** Physical address of that IOVA. */
  readonly phys: number;
  /** Bytes translated: one leaf, or (4 KiB leaves) a run of leaves of one table with contiguous memory. */
  readonly len: number;
  /** Leaf level (0, 1, 2). */
  readonly level: number;
  readonly prot: number;
  /** The entry's memory, made (and checked by the machine) on first use. */
  buf?: Uint8Array;
  /** Windows into `buf` by offset (entries up to 2 MiB), see {@link windowOf}. */
  windows?: Map<number, Uint8Array>;
}

const WINDOWS_PER_ENTRY = 512;

/**
 * `[off, off + len)` of an entry's memory as a view, reused across transfers: devices repeat the
 * same transfers over their rings, and making a view per transfer cost more than copying 64 KiB
 * (measured in the bench: 0.3x memcpy at 64 KiB without, about 0.5x with). Keyed by offset only
 * (a small integer: a compound key became a heap number and cost as much as the view); a window
 * of another length at the same offset replaces it.
 */
function windowOf(e: TlbEntry, off: number, len: number): Uint8Array {
  const b = e.buf!;
  if (off === 0 && len === b.length) return b;
  if (e.len > 1 << 21) return b.subarray(off, off + len);
  let w = e.windows?.get(off);
  if (w?.length !== len) {
    w = b.subarray(off, off + len);
    e.windows ??= new Map();
    if (e.windows.size >= WINDOWS_PER_ENTRY) e.windows.clear();
    e.windows.set(off, w);
  }
  return w;
}

/** Bytes per leaf at level 0..2 (a table, not `2 ** n`: this is the DMA hot path). */
const LEAF_SIZE = [levelSize(0), levelSize(1), levelSize(2)] as const;

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
    const hit = new Set<TlbEntry>();
    for (let level = 0; level < 3; level++) {
      const s = LEAF_SIZE[level]!;
      const map = tlb[level]!;
      const first = Math.floor(start / s);
      const last = Math.ceil(end / s);
      if (last - first > map.size) {
        for (const [k, e] of map) if (k >= first && k < last) hit.add(e);
      } else {
        for (let k = first; k < last; k++) {
          const e = map.get(k);
          if (e) hit.add(e);
        }
      }
    }
    // A run entry goes as a whole, even where it extends past the range.
    for (const e of hit) this.#dropEntry(tlb, e);
  }

  #dropEntry(tlb: DomainTlb, e: TlbEntry): void {
    const s = LEAF_SIZE[e.level]!;
    for (let k = e.iova / s, n = e.len / s; n > 0; k++, n--) tlb[e.level]!.delete(k);
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
    for (const t of this.#tlb.values()) entries += t[0].size + t[1].size + t[2].size; // per leaf
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
      dmaReadInto: (iova, dst) => this.dmaReadInto(r, iova, dst),
      dmaWrite: (iova, bytes) => this.dmaWrite(r, iova, bytes),
    };
  }

  /** DMA read by `rid` (see {@link DmaPort.dmaRead}). */
  dmaRead(rid: RequesterId, iova: bigint | number, length: number): Uint8Array {
    if (!Number.isSafeInteger(length) || length < 0) {
      throw new LiveUpdateError("EINVAL", `${this.name}: bad DMA length ${String(length)}`);
    }
    const out = new Uint8Array(length);
    this.dmaReadInto(rid, iova, out);
    return out;
  }

  /** DMA read by `rid` into `dst` (see {@link DmaPort.dmaReadInto}). */
  dmaReadInto(rid: RequesterId, iova: bigint | number, dst: Uint8Array): void {
    if (!(dst instanceof Uint8Array))
      throw new LiveUpdateError("EINVAL", `${this.name}: DMA buffer is not bytes`);
    const n = this.#translate(rid, toIova(iova, "dmaRead"), dst.length, false);
    const { segBuf, segOff, segLen } = this;
    for (let i = 0, at = 0; i < n; i++) {
      const len = segLen[i]!;
      dst.set(windowOf(segBuf[i]!, segOff[i]!, len), at);
      at += len;
    }
  }

  /** DMA write by `rid` (see {@link DmaPort.dmaWrite}). */
  dmaWrite(rid: RequesterId, iova: bigint | number, bytes: Uint8Array): void {
    if (!(bytes instanceof Uint8Array))
      throw new LiveUpdateError("EINVAL", `${this.name}: DMA data is not bytes`);
    const n = this.#translate(rid, toIova(iova, "dmaWrite"), bytes.length, true);
    const { segBuf, segOff, segLen } = this;
    for (let i = 0, at = 0; i < n; i++) {
      const len = segLen[i]!;
      segBuf[i]!.buf!.set(len === bytes.length ? bytes : bytes.subarray(at, at + len), segOff[i]!);
      at += len;
    }
  }

  // The segments of the last translation (leaf memory, offset, length), reused between calls:
  // allocating per transfer cost more than the copy of a 64 KiB DMA (measured in the bench).
  private readonly segBuf: TlbEntry[] = [];
  private readonly segOff: number[] = [];
  private readonly segLen: number[] = [];

  /**
   * Translates `[iova, iova + length)` for `rid` into segments of leaf memory (returns how many).
   * Any fault is logged and thrown before anything moves. A leaf's memory is checked (inside RAM,
   * every page allocated) when its translation enters the IOTLB; like real hardware, a stale
   * IOTLB entry keeps reaching the old page until software invalidates it.
   */
  #translate(rid: RequesterId, iova: number, length: number, write: boolean): number {
    const key = requesterKey(rid);
    const ctx = this.#contexts.get(key);
    if (!ctx) this.#fault(rid, iova, write, "blocked", 0);
    const need = write ? IOMMU_WRITE : IOMMU_READ;
    let tlb = this.#tlb.get(ctx.domainId);
    if (!tlb) this.#tlb.set(ctx.domainId, (tlb = [new Map(), new Map(), new Map()]));
    const end = iova + length;
    let n = 0;
    for (let va = iova; va < end; n++) {
      let entry: TlbEntry | undefined;
      for (let level = 0; level < 3 && !entry; level++)
        entry = tlb[level]!.get(Math.floor(va / LEAF_SIZE[level]!));
      if (entry) this.#hits++;
      else {
        this.#misses++;
        entry = this.#walk(ctx.root, va);
        if (!entry) this.#fault(rid, va, write, "not-present", ctx.domainId);
        const s = LEAF_SIZE[entry.level]!;
        for (let k = entry.iova / s, c = entry.len / s; c > 0; k++, c--) tlb[entry.level]!.set(k, entry);
      }
      if ((entry.prot & need) === 0)
        this.#fault(rid, va, write, write ? "read-only" : "write-only", ctx.domainId);
      if (!entry.buf) {
        try {
          entry.buf = this.#machine.view(BigInt(entry.phys), entry.len);
        } catch {
          this.#dropEntry(tlb, entry);
          this.#fault(rid, va, write, "bad-address", ctx.domainId);
        }
      }
      const off = va - entry.iova;
      const len = Math.min(entry.len - off, end - va);
      this.segBuf[n] = entry;
      this.segOff[n] = off;
      this.segLen[n] = len;
      va += len;
    }
    return n;
  }

  /**
   * Hardware page walk: reads the entries from machine memory as they are now. A 4 KiB leaf is
   * cached together with the following leaves of the same table that continue it (same
   * permissions, next physical page), up to the table's end: one IOTLB entry per contiguous run,
   * so a transfer over contiguous memory is one copy (measured in the bench: per-page entries
   * made a 64 KiB transfer 3.5x slower than a memcpy of it).
   */
  #walk(root: bigint, iova: number): TlbEntry | undefined {
    const m = this.#machine;
    let table = Number(root);
    for (let level = PT_TOP_LEVEL; level >= 0; level--) {
      let e: bigint;
      try {
        e = m.readU64(BigInt(table + ptIndex(iova, level) * 8));
      } catch {
        return undefined; // a table outside RAM or in a free page: nothing is mapped there
      }
      if ((e & (PTE_READ | PTE_WRITE)) === 0n) return undefined;
      const addr = Number(e & PTE_ADDR_MASK);
      const prot = Number(e & (PTE_READ | PTE_WRITE));
      if (level > 0 && (e & PTE_PS) === 0n) {
        table = addr;
        continue;
      }
      if (level > 2) return undefined;
      const s = LEAF_SIZE[level]!;
      const start = iova - (iova % s);
      let len = s;
      if (level === 0) {
        const t = m.view(BigInt(table), PAGE_SIZE);
        const dv = new DataView(t.buffer, t.byteOffset, PAGE_SIZE);
        for (let i = ptIndex(iova, 0) + 1; i < 512; i++) {
          const next = dv.getBigUint64(i * 8, true);
          if (Number(next & (PTE_READ | PTE_WRITE)) !== prot || Number(next & PTE_ADDR_MASK) !== addr + len)
            break;
          len += s;
        }
      }
      return { iova: start, phys: addr, len, level, prot };
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

  /**
   * Machine boot checkpoint: the registers as they are now (context entries, IOTLB, fault log and
   * counters), put back if the booting kernel fails (its IOMMU init may have cleared entries).
   */
  checkpoint(): () => void {
    const contexts = new Map(this.#contexts);
    const tlb = new Map([...this.#tlb].map(([d, t]) => [d, t.map((m) => new Map(m)) as DomainTlb]));
    const faults = [...this.#faults];
    const counts = [this.#faultCount, this.#hits, this.#misses] as const;
    return () => {
      this.#contexts.clear();
      for (const [k, v] of contexts) this.#contexts.set(k, v);
      this.#tlb.clear();
      for (const [k, v] of tlb) this.#tlb.set(k, v);
      this.#faults.length = 0;
      this.#faults.push(...faults);
      [this.#faultCount, this.#hits, this.#misses] = counts;
    };
  }

  // ---------------------------------------------------------------- image

  /** The unit's registers as bytes (UTF-8 JSON, versioned): contexts, IOTLB, fault log, counters. */
  save(): Uint8Array {
    const tlb: Array<[number, number, number, number, number, number]> = [];
    for (const [did, levels] of this.#tlb) {
      const seen = new Set<TlbEntry>();
      for (const m of levels) {
        for (const e of m.values()) {
          if (seen.has(e)) continue;
          seen.add(e);
          tlb.push([did, e.level, e.iova, e.phys, e.prot, e.len]);
        }
      }
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
    for (const [did, level, iova, phys, prot, len] of arr(s.tlb)) {
      const d = int(did, 0xffff);
      let t = u.#tlb.get(d);
      if (!t) u.#tlb.set(d, (t = [new Map(), new Map(), new Map()]));
      const lv = int(level, 2);
      const size = LEAF_SIZE[lv]!;
      const e: TlbEntry = {
        iova: int(iova, Number.MAX_SAFE_INTEGER),
        phys: int(phys, Number.MAX_SAFE_INTEGER),
        len: int(len, 512 * size),
        level: lv,
        prot: int(prot, 3),
      };
      if (e.iova % size !== 0 || e.len % size !== 0 || e.len === 0) bad("bad IOTLB entry");
      for (let k = e.iova / size, c = e.len / size; c > 0; k++, c--) t[lv]!.set(k, e);
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
