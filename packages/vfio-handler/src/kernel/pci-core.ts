/**
 * The kernel's PCI core for one boot (`drivers/pci/probe.c`, `drivers/pci/liveupdate.c`): it
 * enumerates the machine's PCI segments, routes MSI-X messages to the drivers that asked for
 * them, and runs the PCI side of the kexec shutdown.
 *
 * Boot: if the previous kernel handed over a PCI FLB, it is retrieved now (the first lookup in
 * `pci_liveupdate_setup_device`), so a corrupt one panics the boot. While any incoming preserved
 * device is unfinished, every bridge keeps the bus numbers programmed in its registers (BDFs of
 * preserved devices must not move); otherwise, with `assignBusses` (Linux's `pci=assign-busses`),
 * buses are renumbered depth first, and by default the numbers firmware left are kept.
 * Shutdown (after the point of no return of a kexec): the outgoing PCI FLB is frozen, bus
 * mastering is turned off on every function except preserved devices and the bridges above them,
 * and interrupts stop being taken — messages sent while no kernel runs are lost.
 *
 * @module
 */
import type { InjectionToken } from "tsyringe";
import { LiveUpdateError, isLiveUpdateError, type FlbAccess, type Machine } from "@luo/core";
import type { PciFunction } from "../pci/function.js";
import { PCI_COMMAND, PCI_COMMAND_MASTER } from "../pci/regs.js";
import { PCI_SEGMENT_KIND, PciSegment } from "../pci/segment.js";
import { createPciFlb, type PciFlb, type PciFlbIncoming, type PciFlbOutgoing } from "../luo/pci-flb.js";

/** DI token of the kernel's {@link PciCore}. */
export const PCI_CORE: InjectionToken<PciCore> = Symbol.for("luo.vfio.PciCore");

/** Receives one MSI-X vector of one function. */
export type MsiHandler = (address: bigint, data: number) => void;

/** Options of the PCI core. */
export interface PciCoreOptions {
  /**
   * Renumber buses depth first at boot (Linux `pci=assign-busses`), unless incoming preserved
   * devices are unfinished. Default false: keep what firmware programmed.
   */
  readonly assignBusses?: boolean;
}

/** The PCI segments of `machine` (its hardware of kind `"pci-segment"`), in attach order. */
export function pciSegments(machine: Machine): PciSegment[] {
  return machine.hardware.list(PCI_SEGMENT_KIND).filter((h): h is PciSegment => h instanceof PciSegment);
}

/** The PCI core of one kernel. */
export class PciCore {
  /** The machine's segments. */
  readonly segments: readonly PciSegment[];
  readonly #handlers = new Map<string, MsiHandler>();
  #incoming: PciFlbIncoming | undefined;
  #outgoing: PciFlbOutgoing | undefined;
  /** This kernel's PCI FLB definition (linked to the vfio handler by the plugin). */
  readonly flb: PciFlb;
  /** True when this boot inherited bus numbers because preserved devices came over. */
  inheritedBusNumbers = false;

  /**
   * @param machine - the machine
   * @param flbs - FLB access of the kernel
   */
  constructor(
    readonly machine: Machine,
    private readonly flbs: FlbAccess,
  ) {
    this.segments = pciSegments(machine);
    this.flb = createPciFlb({
      onPreserve: (obj) => (this.#outgoing = obj),
      onUnpreserve: () => (this.#outgoing = undefined),
    });
  }

  /**
   * Enumerates (see the module comment) and starts taking interrupts. Throws the
   * `KernelPanicError` (from `@luo/core`) of a corrupt incoming PCI FLB.
   */
  async boot(options: PciCoreOptions): Promise<void> {
    try {
      this.#incoming = (await this.flbs.getIncoming(this.flb)) as PciFlbIncoming;
    } catch (e) {
      if (!isLiveUpdateError(e, "ENOENT") && !isLiveUpdateError(e, "ENODATA")) throw e;
    }
    this.inheritedBusNumbers = (this.#incoming?.nrDevices ?? 0) > 0;
    for (const seg of this.segments) {
      if (options.assignBusses && !this.inheritedBusNumbers) seg.assignBusNumbers();
      else seg.reindex();
      seg.setMsiSink((fn, vector, address, data) => {
        this.#handlers.get(key(fn, vector))?.(address, data);
        return true;
      });
    }
  }

  /** The incoming PCI FLB, when the previous kernel handed one over. */
  get incoming(): PciFlbIncoming | undefined {
    return this.#incoming;
  }

  /** The outgoing PCI FLB object, while a device is preserved. */
  get outgoing(): PciFlbOutgoing | undefined {
    return this.#outgoing;
  }

  /** True while `fn` is an incoming preserved device not finished yet (`pci_liveupdate_is_incoming`). */
  isIncoming(fn: PciFunction): boolean {
    return this.#incoming?.isIncoming(fn.domain, fn.bdf) ?? false;
  }

  /** The function at (domain, bdf), if enumeration reached one. */
  find(domain: number, bdf: number): PciFunction | undefined {
    return this.segments.find((s) => s.domain === domain)?.find(bdf);
  }

  /** Every enumerated function of every segment. */
  functions(): PciFunction[] {
    return this.segments.flatMap((s) => s.functions().filter((f) => s.find(f.bdf) === f));
  }

  /** Routes vector `vector` of `fn` to `handler` (`request_irq`). `EBUSY` when taken. */
  requestIrq(fn: PciFunction, vector: number, handler: MsiHandler): void {
    const k = key(fn, vector);
    if (this.#handlers.has(k))
      throw new LiveUpdateError("EBUSY", `${fn.address} vector ${vector} is already requested`);
    this.#handlers.set(k, handler);
  }

  /** Stops routing vector `vector` of `fn` (`free_irq`). */
  freeIrq(fn: PciFunction, vector: number): void {
    this.#handlers.delete(key(fn, vector));
  }

  /** kexec shutdown (see the module comment). */
  shutdown(): void {
    const outgoing = this.#outgoing;
    outgoing?.freeze();
    for (const seg of this.segments) {
      seg.setMsiSink(undefined);
      for (const f of seg.functions()) {
        if (outgoing?.isPreserved(f)) continue;
        f.configWrite(PCI_COMMAND, 2, f.command & ~PCI_COMMAND_MASTER);
      }
    }
    this.#handlers.clear();
  }
}

function key(fn: PciFunction, vector: number): string {
  return `${fn.domain}:${fn.bdf}:${vector}`;
}
