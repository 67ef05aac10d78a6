/**
 * One device owned by vfio-pci in one kernel (`drivers/vfio/pci/vfio_pci_core.c`): the kernel's
 * side of an emulated PCI function handed to userspace. It enables the device when a file binds
 * (memory decode on, a function reset unless the device must keep running), disables it when the
 * last bound file goes (interrupts freed, MSI-X off, bus mastering off, reset, decode off),
 * wires MSI-X vectors to eventfds, resets on request, hands out BAR mappings and revokes them
 * (zap) on reset and freeze, and carries the live-update state: `frozen` after the handler's
 * freeze (every access then fails with `EIO`; there is no unfreeze — the device is re-initialised
 * when its files are closed).
 *
 * @module
 */
import { LiveUpdateError } from "@luo/core";
import type { PciFunction } from "../pci/function.js";
import {
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_IO,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
  PCI_MSIX_FLAGS_MASKALL,
} from "../pci/regs.js";
import type { PciCore } from "../kernel/pci-core.js";
import type { VfioIrqTrigger } from "./irq-trigger.js";

/** The two device behaviours across a live update. */
export type VfioLiveUpdateMode = "reset" | "continuous";

/** A userspace mapping of a BAR (what `mmap` of a region gives). Revoked by reset and freeze. */
export class VfioBarMapping {
  #valid = true;

  /**
   * @param device - the device
   * @param bar - BAR index
   * @param size - BAR size
   */
  constructor(
    readonly device: VfioPciDevice,
    readonly bar: number,
    readonly size: number,
  ) {}

  /** False once revoked; an access then faults (`EFAULT`, the model of SIGBUS). */
  get valid(): boolean {
    return this.#valid;
  }

  /** Revokes the mapping (`zap`). */
  zap(): void {
    this.#valid = false;
  }

  #check(offset: number, width: number): void {
    if (!this.#valid) {
      throw new LiveUpdateError(
        "EFAULT",
        `${this.device.fn.address} BAR ${this.bar} mapping was revoked (SIGBUS)`,
      );
    }
    if (!Number.isInteger(offset) || offset < 0 || offset + width > this.size) {
      throw new LiveUpdateError(
        "EFAULT",
        `${this.device.fn.address} BAR ${this.bar}: ${offset} is outside the mapping (SIGBUS)`,
      );
    }
  }

  /** Loads `width` bytes at `offset` of the BAR. */
  read(offset: number, width: 1 | 2 | 4 | 8 = 4): bigint {
    this.#check(offset, width);
    return this.device.fn.barRead(this.bar, offset, width);
  }

  /** Stores `width` bytes at `offset` of the BAR. */
  write(offset: number, value: bigint | number, width: 1 | 2 | 4 | 8 = 4): void {
    this.#check(offset, width);
    this.device.fn.barWrite(this.bar, offset, width, BigInt(value));
  }
}

/** The kernel's vfio-pci state of one device. */
export class VfioPciDevice {
  /** Files (cdev or group-obtained) open on the device. */
  readonly files = new Set<object>();
  /** The file that is bound (cdev bound to an iommufd, or group-obtained). */
  owner: object | undefined;
  /** Set by the live-update freeze; every access then fails with `EIO`. */
  frozen = false;
  /** MSI-X vector → trigger, while MSI-X is set up through `SET_IRQS`. */
  readonly msix = new Map<number, VfioIrqTrigger>();
  readonly #mappings = new Set<VfioBarMapping>();

  /**
   * @param fn - the PCI function
   * @param index - cdev number (`/dev/vfio/devices/vfio<index>`)
   * @param group - IOMMU group number (`/dev/vfio/<group>`)
   * @param pci - the kernel's PCI core
   * @param mode - behaviour across a live update
   */
  constructor(
    readonly fn: PciFunction,
    readonly index: number,
    readonly group: number,
    readonly pci: PciCore,
    readonly mode: VfioLiveUpdateMode,
  ) {}

  /** `vfio<index>` at `SSSS:BB:DD.F`, for messages. */
  get name(): string {
    return `vfio${this.index} (${this.fn.address})`;
  }

  /** True while interrupts are set up (`irq_type != VFIO_PCI_NUM_IRQS`). */
  get irqsEnabled(): boolean {
    return this.msix.size > 0;
  }

  /** `EIO` once frozen. */
  assertNotFrozen(): void {
    if (this.frozen) {
      throw new LiveUpdateError(
        "EIO",
        `${this.name} was frozen for a live update; close it and re-initialise the device`,
      );
    }
  }

  /**
   * First open (`vfio_pci_core_enable`): the bridges above enabled with bus mastering
   * (`pci_enable_bridge`), memory decode on, the device reset to a clean state — except
   * `keepRunning` (a retrieved device in continuous mode), which is left exactly as it is.
   */
  enable(keepRunning: boolean): void {
    for (let b = this.fn.parent; b; b = b.parent) {
      b.configWrite(PCI_COMMAND, 2, b.command | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    }
    if (keepRunning) return;
    this.#reset(false);
    this.fn.configWrite(PCI_COMMAND, 2, (this.fn.command | PCI_COMMAND_MEMORY) & ~PCI_COMMAND_INTX_DISABLE);
  }

  /**
   * Last close (`vfio_pci_core_disable`): interrupts freed, MSI-X off, bus mastering off, reset,
   * decode off; the live-update freeze mark is dropped (the device is re-initialised).
   */
  disable(): void {
    this.freeIrqs();
    this.#reset(false);
    this.fn.configWrite(PCI_COMMAND, 2, PCI_COMMAND_INTX_DISABLE);
    this.frozen = false;
  }

  /**
   * `VFIO_DEVICE_RESET` (`pci_try_reset_function`): revoke mappings, save the config state,
   * function-level reset, restore the config state — the device's internal state is cleared.
   */
  reset(): void {
    this.#reset(true);
  }

  #reset(restore: boolean): void {
    this.zapMappings();
    const saved = this.fn.config.bytes.slice(0, 256);
    this.fn.resetFunction();
    if (restore) {
      for (let o = 0x04; o < 0x40; o += 2)
        if (o !== 0x06) this.fn.configWrite(o, 2, saved[o]! | (saved[o + 1]! << 8));
      const m = this.fn.caps.msix;
      if (m) this.fn.configWrite(m + PCI_MSIX_FLAGS, 2, saved[m + 2]! | (saved[m + 3]! << 8));
      for (const [v] of this.msix) this.#programVector(v);
    }
  }

  /** Makes a BAR mapping (`mmap` of a region). */
  map(bar: number): VfioBarMapping {
    const b = this.fn.bars.get(bar);
    if (!b) throw new LiveUpdateError("EINVAL", `${this.name} has no BAR ${bar} to map`);
    const m = new VfioBarMapping(this, bar, b.size);
    this.#mappings.add(m);
    return m;
  }

  /** Revokes every BAR mapping (`vfio_pci_zap_bars`). */
  zapMappings(): void {
    for (const m of this.#mappings) m.zap();
    this.#mappings.clear();
  }

  /**
   * Sets MSI-X vectors `start..start+triggers.length-1` (undefined entries unset one vector),
   * enabling MSI-X when the first vector is set. `EINVAL` beyond the table.
   */
  setMsix(start: number, triggers: readonly (VfioIrqTrigger | undefined)[]): void {
    const layout = this.fn.msixLayout;
    if (!layout || start + triggers.length > layout.vectors) {
      throw new LiveUpdateError(
        "EINVAL",
        `${this.name}: MSI-X vectors ${start}..${start + triggers.length - 1} exceed ${layout?.vectors ?? 0}`,
      );
    }
    triggers.forEach((t, i) => {
      const v = start + i;
      const old = this.msix.get(v);
      if (old) {
        this.pci.freeIrq(this.fn, v);
        old.release();
        this.msix.delete(v);
      }
      if (t) {
        this.msix.set(v, t);
        this.pci.requestIrq(this.fn, v, () => t.signal());
        this.#programVector(v);
      } else this.fn.programMsixEntry(v, 0n, 0, true);
    });
    const m = this.fn.caps.msix + PCI_MSIX_FLAGS;
    const flags = this.fn.configRead(m, 2) & ~PCI_MSIX_FLAGS_MASKALL;
    this.fn.configWrite(
      m,
      2,
      this.msix.size > 0 ? flags | PCI_MSIX_FLAGS_ENABLE : flags & ~PCI_MSIX_FLAGS_ENABLE,
    );
  }

  #programVector(v: number): void {
    // The host's interrupt domain picks the message; vector v of device index i gets data i<<8|v.
    this.fn.programMsixEntry(v, 0xfee00000n, (this.index << 8) | v, false);
  }

  /** Frees every MSI-X vector and turns MSI-X off (`vfio_pci_set_irqs_ioctl` with count 0). */
  freeIrqs(): void {
    if (this.msix.size === 0) return;
    this.setMsix(0, [...Array<undefined>(Math.max(...this.msix.keys()) + 1)]);
  }

  /**
   * The live-update freeze of the device (see the handler). `reset` mode: mappings revoked,
   * function reset, `PCI_COMMAND = INTX_DISABLE` (memory, I/O and bus mastering off).
   * `continuous` mode: mappings revoked, the device keeps running with bus mastering on.
   * Both: frozen (`EIO` from now on). The caller checked IRQs and power state.
   */
  freeze(): void {
    this.zapMappings();
    if (this.mode === "reset") {
      this.fn.resetFunction();
      this.fn.configWrite(PCI_COMMAND, 2, PCI_COMMAND_INTX_DISABLE);
    }
    this.frozen = true;
  }

  /** True when the command register lets the device master DMA and decode its BARs. */
  get enabled(): boolean {
    return (this.fn.command & (PCI_COMMAND_MEMORY | PCI_COMMAND_IO | PCI_COMMAND_MASTER)) !== 0;
  }
}
