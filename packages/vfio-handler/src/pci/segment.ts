/**
 * A PCI segment (domain) as machine hardware (kind {@link PCI_SEGMENT_KIND}): the root bus with
 * root ports, bridges and endpoints below, built from a plain-data description, enumerated by
 * "firmware" when the machine is built (bus numbers written into the bridges' registers), and
 * reached by the kernel by bus/device/function number. Functions master DMA through the
 * segment's {@link PciDmaPath} (the IOMMU, or plain RAM) and send MSI-X messages to whatever
 * interrupt sink the running kernel installed — none while kernels change, so a message sent
 * then is lost. The segment belongs to the machine: it keeps its registers and work in flight
 * across a kexec, advances with machine time, and is saved in the machine image (rebuilt by
 * {@link pciSegmentLoader}).
 *
 * Happy path: `new Machine({ memory, hardware: [pciSegment({ devices: [rootPort({ device: 1,
 * children: [dmaEngine({ device: 0 })] })] })] })`; `find(0x0100)` is the engine on the root
 * port's secondary bus. Unhappy paths: a slot used twice on one bus, more than 255 buses, an
 * unknown model, or a bad device/function number → `EINVAL` at construction; a saved state that
 * does not match the topology → `EINVAL` at load.
 *
 * @module
 */
import { LiveUpdateError, type MachineHardware } from "@luo/core";
import { PciBridge, type PciNodeDesc } from "./bridge.js";
import type { PciFunction, PciFunctionState } from "./function.js";
import { createPciFunction } from "./models.js";
import { checkSlot, formatPciAddress, pciDevfn } from "./regs.js";

/** Machine-hardware kind of a PCI segment. */
export const PCI_SEGMENT_KIND = "pci-segment";

/** How functions of a segment reach memory: by IOVA, for a requester (domain, bdf). */
export interface PciDmaPath {
  /** Fills `into` from IOVA `iova`. Throws (a translation fault) when it is not mapped for reading. */
  read(domain: number, requesterId: number, iova: bigint, into: Uint8Array): void;
  /** Writes `from` at IOVA `iova`. Throws (a translation fault) when the IOVA is not mapped for writing. */
  write(domain: number, requesterId: number, iova: bigint, from: Uint8Array): void;
}

/** Receives MSI-X messages: returns true when a kernel took the interrupt. */
export type MsiSink = (fn: PciFunction, vector: number, address: bigint, data: number) => boolean;

/** Description of a segment. */
export interface PciSegmentDesc {
  /** Machine-hardware name (default `pci<domain>` with 4 hex digits). */
  readonly name?: string;
  /** Segment (domain) number, 0..65535 (default 0). */
  readonly domain?: number;
  /** Number of the root bus (default 0). */
  readonly rootBus?: number;
  /** Functions on the root bus: root ports (with children) and root-complex endpoints. */
  readonly devices: readonly PciNodeDesc[];
}

/** Saved state of a segment: each function's state in depth-first order. */
export interface PciSegmentState {
  /** Addresses in depth-first order, to check the topology matches. */
  readonly functions: readonly string[];
  /** States in the same order. */
  readonly states: readonly PciFunctionState[];
}

/** A PCI segment and everything on it. */
export class PciSegment implements MachineHardware {
  /** Segment number. */
  readonly domain: number;
  /** Root bus number. */
  readonly rootBus: number;
  /** Functions on the root bus. */
  readonly roots: readonly PciFunction[];
  /** Machine-hardware kind ({@link PCI_SEGMENT_KIND}). */
  readonly kind = PCI_SEGMENT_KIND;
  /** Machine-hardware name (default `pci<domain>`, e.g. `pci0000`). */
  readonly name: string;
  /** The description the segment was built from. */
  readonly description: PciSegmentDesc;
  /** Where DMA goes; undefined: requests fault. */
  dma: PciDmaPath | undefined;
  #sink: MsiSink | undefined;
  #index = new Map<number, PciFunction>();

  /** @param desc - the topology; `EINVAL` for a malformed one */
  constructor(desc: PciSegmentDesc) {
    if (typeof desc !== "object" || desc === null)
      throw new LiveUpdateError("EINVAL", "PCI segment needs a description");
    const domain = desc?.domain ?? 0;
    const rootBus = desc?.rootBus ?? 0;
    if (!Number.isInteger(domain) || domain < 0 || domain > 0xffff) {
      throw new LiveUpdateError("EINVAL", `PCI segment number ${String(domain)} is not in 0..65535`);
    }
    if (!Number.isInteger(rootBus) || rootBus < 0 || rootBus > 0xff) {
      throw new LiveUpdateError("EINVAL", `PCI root bus ${String(rootBus)} is not in 0..255`);
    }
    if (!Array.isArray(desc.devices))
      throw new LiveUpdateError("EINVAL", "PCI segment needs a devices array");
    this.domain = domain;
    this.rootBus = rootBus;
    this.name = desc.name ?? `pci${domain.toString(16).padStart(4, "0")}`;
    this.description = JSON.parse(JSON.stringify(desc)) as PciSegmentDesc;
    this.roots = this.#build(desc.devices, undefined, `segment ${domain}`);
    this.assignBusNumbers();
  }

  #build(nodes: readonly PciNodeDesc[], parent: PciBridge | undefined, where: string): PciFunction[] {
    const seen = new Set<number>();
    const out: PciFunction[] = [];
    for (const node of nodes) {
      if (typeof node !== "object" || node === null) {
        throw new LiveUpdateError("EINVAL", `${where}: a device is not a PCI node description`);
      }
      const fn = node.function ?? 0;
      checkSlot(node.device, fn, where);
      const devfn = pciDevfn(node.device, fn);
      if (seen.has(devfn)) {
        throw new LiveUpdateError("EINVAL", `${where}: slot ${node.device}.${fn} is used twice`);
      }
      seen.add(devfn);
      const f = createPciFunction(node, where);
      f.parent = parent;
      f.segment = this;
      if (f instanceof PciBridge)
        f.children.push(...this.#build(node.children ?? [], f, `${where} below ${node.device}.${fn}`));
      else if (node.children?.length) {
        throw new LiveUpdateError("EINVAL", `${where}: endpoint ${node.device}.${fn} cannot have children`);
      }
      out.push(f);
    }
    return out;
  }

  /**
   * Numbers every bridge's buses depth-first from the root bus (what firmware, or Linux with
   * `pci=assign-busses`, does) and rebuilds the lookup. `EINVAL` beyond bus 255.
   */
  assignBusNumbers(): void {
    let next = this.rootBus + 1;
    const walk = (fns: readonly PciFunction[], bus: number): void => {
      for (const f of fns) {
        if (!(f instanceof PciBridge)) continue;
        const secondary = next++;
        if (secondary > 0xff)
          throw new LiveUpdateError("EINVAL", `segment ${this.domain} needs more than 256 buses`);
        f.setBusNumbers(bus, secondary, 0xff);
        walk(f.children, secondary);
        f.setBusNumbers(bus, secondary, next - 1);
      }
    };
    walk(this.roots, this.rootBus);
    this.reindex();
  }

  /**
   * Rebuilds the BDF lookup from the bridges' current bus-number registers, as config cycles
   * would route: a bridge with a secondary bus of 0 (unconfigured) hides everything below it.
   */
  reindex(): void {
    this.#index = new Map();
    const walk = (fns: readonly PciFunction[]): void => {
      for (const f of fns) {
        this.#index.set(f.bdf, f);
        if (f instanceof PciBridge && f.secondaryBus !== 0) walk(f.children);
      }
    };
    walk(this.roots);
  }

  /** The function at `bdf`, if config cycles reach one. */
  find(bdf: number): PciFunction | undefined {
    return this.#index.get(bdf);
  }

  /** Every function, depth first (a bridge before what is below it). */
  functions(): PciFunction[] {
    const out: PciFunction[] = [];
    const walk = (fns: readonly PciFunction[]): void => {
      for (const f of fns) {
        out.push(f);
        if (f instanceof PciBridge) walk(f.children);
      }
    };
    walk(this.roots);
    return out;
  }

  /** Bridges above `fn`, nearest first. */
  upstream(fn: PciFunction): PciBridge[] {
    const out: PciBridge[] = [];
    for (let b = fn.parent; b; b = b.parent) out.push(b);
    return out;
  }

  /** Installs (or with undefined removes) the kernel's MSI receiver. */
  setMsiSink(sink: MsiSink | undefined): void {
    this.#sink = sink;
  }

  /** Sends an MSI-X message of `fn`; false when no kernel takes interrupts now. */
  deliverMsi(fn: PciFunction, vector: number, address: bigint, data: number): boolean {
    return this.#sink ? this.#sink(fn, vector, address, data) : false;
  }

  /** Machine time passes: every function works `ns` nanoseconds. */
  advance(ns: bigint | number): void {
    const n = Number(ns);
    for (const f of this.functions()) f.advance(n);
  }

  /** True while any function has work in flight. */
  get busy(): boolean {
    return this.functions().some((f) => f.busy);
  }

  /** Saves every function's registers and device state. */
  saveState(): PciSegmentState {
    const fns = this.functions();
    return { functions: fns.map((f) => f.address), states: fns.map((f) => f.saveState()) };
  }

  /** Restores a saved state onto this (identically described) segment. `EINVAL` on mismatch. */
  loadState(state: PciSegmentState): void {
    const fns = this.functions();
    if (!Array.isArray(state?.states) || state.states.length !== fns.length) {
      throw new LiveUpdateError(
        "EINVAL",
        `saved PCI state of segment ${this.domain} does not match its topology`,
      );
    }
    // Bridges first so addresses below resolve with the saved bus numbers.
    fns.forEach((f, i) => f.loadState(state.states[i]!));
    this.reindex();
  }

  /** The machine-image bytes: description and state, as UTF-8 JSON. */
  save(): Uint8Array {
    return new TextEncoder().encode(
      JSON.stringify({ version: 1, description: this.description, state: this.saveState() }),
    );
  }

  /** Rebuilds a segment from {@link PciSegment.save} bytes. `EINVAL` when they are not valid. */
  static restore(bytes: Uint8Array): PciSegment {
    let parsed: { version?: unknown; description?: PciSegmentDesc; state?: PciSegmentState };
    try {
      parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes)) as typeof parsed;
    } catch (e) {
      throw new LiveUpdateError("EINVAL", "saved PCI segment is not valid JSON", { cause: e });
    }
    if (parsed?.version !== 1) {
      throw new LiveUpdateError(
        "EINVAL",
        `saved PCI segment has version ${String(parsed?.version)}, expected 1`,
      );
    }
    const seg = new PciSegment(parsed.description!);
    seg.loadState(parsed.state!);
    return seg;
  }

  /** `SSSS:BB:DD.F` of `bdf` in this segment. */
  address(bdf: number): string {
    return formatPciAddress(this.domain, bdf);
  }
}
