/**
 * One PCI function as hardware (`struct pci_dev` is the kernel's view of it; this is the
 * device's side): its config space and what writes to it do, memory BARs, power management
 * D0–D3hot, MSI-X, function-level reset, and the rule that it may master DMA only with bus
 * mastering on (its own `PCI_COMMAND_MASTER` and that of every bridge above it).
 *
 * Happy path: firmware places the function in a {@link PciSegment}, the kernel enumerates it,
 * a driver enables memory decode and bus mastering, programs the device through its BARs and
 * the device raises MSI-X vectors. Unhappy paths: a BAR access with memory decode off or outside
 * D0 reads all-ones and drops writes (as a master-aborted access does on real hardware); DMA
 * without bus mastering is not issued and sets `PCI_STATUS_REC_MASTER_ABORT`; a raised vector
 * that is masked becomes pending in the PBA; a vector raised with MSI-X off, or while no kernel
 * takes interrupts (during a kexec), is counted as lost.
 *
 * Function-level reset (a write of `PCI_EXP_DEVCTL_BCR_FLR`, or {@link PciFunction.resetFunction})
 * returns the config space to its power-on values — BARs, command, MSI-X and power state
 * included — and resets the device's internal state; the kernel's reset helper saves and
 * restores what it must around it, as `pci_reset_function` does.
 *
 * @module
 */
import { LiveUpdateError } from "@luo/core";
import { PciConfigSpace, checkConfigAccess, type ConfigWidth } from "./config-space.js";
import {
  PCI_BASE_ADDRESS_0,
  PCI_CAP_ID_EXP,
  PCI_CAP_ID_MSIX,
  PCI_CAP_ID_PM,
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_IO,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_DEVICE_ID,
  PCI_EXP_DEVCAP,
  PCI_EXP_DEVCAP_FLR,
  PCI_EXP_DEVCTL,
  PCI_EXP_DEVCTL_BCR_FLR,
  PCI_HEADER_TYPE,
  PCI_MSIX_ENTRY_CTRL_MASKBIT,
  PCI_MSIX_ENTRY_SIZE,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
  PCI_MSIX_FLAGS_MASKALL,
  PCI_MSIX_PBA,
  PCI_MSIX_TABLE,
  PCI_PM_CTRL,
  PCI_PM_CTRL_STATE_MASK,
  PCI_POWER_STATES,
  PCI_STATUS,
  PCI_STATUS_REC_MASTER_ABORT,
  PCI_STATUS_W1C,
  PCI_VENDOR_ID,
  formatPciAddress,
  pciBdf,
  type PciPowerState,
} from "./regs.js";
import type { PciBridge } from "./bridge.js";
import type { PciSegment } from "./segment.js";

/** What every function of a topology description has. */
export interface PciFunctionDesc {
  /** Device (slot) number on its bus, 0..31. */
  readonly device: number;
  /** Function number, 0..7 (default 0). */
  readonly function?: number;
}

/** One memory BAR of a function. */
export interface PciBar {
  /** BAR index 0..5. */
  readonly index: number;
  /** Size in bytes: a power of two, at least 16. */
  readonly size: number;
}

/** Identity of a function in the config space. */
export interface PciIdentity {
  /** Vendor ID. */
  readonly vendor: number;
  /** Device ID. */
  readonly deviceId: number;
  /** Class code (base class, subclass, prog-if) as a 24-bit number. */
  readonly classCode: number;
  /** Header type: 0 endpoint, 1 bridge. */
  readonly headerType: number;
}

/** Where the MSI-X table and PBA live. */
export interface PciMsixLayout {
  /** Number of vectors (1..2048). */
  readonly vectors: number;
  /** BAR holding the table and the PBA. */
  readonly bar: number;
  /** Offset of the table in that BAR. */
  readonly tableOffset: number;
  /** Offset of the pending-bit array in that BAR. */
  readonly pbaOffset: number;
}

/** Counters of a function, for tests and tools. */
export interface PciFunctionCounters {
  /** Function-level resets done. */
  resets: number;
  /** DMA requests not issued because bus mastering was off on the path. */
  masterAborts: number;
  /** MSI-X messages delivered to a kernel. */
  interruptsDelivered: number;
  /** Vectors raised while MSI-X was off or no kernel took interrupts. */
  interruptsLost: number;
}

/** Saved hardware state of one function (config space and device-specific state). */
export interface PciFunctionState {
  /** The 4 KiB config space, hex. */
  readonly config: string;
  /** MSI-X table and PBA bytes, hex ("" when the function has no MSI-X). */
  readonly msix: string;
  /** Device-specific state (JSON-safe). */
  readonly device: unknown;
}

/** All-ones: what a read that nobody answers returns. */
const ALL_ONES = 0xffffffff;

/** A PCI function: an endpoint, a bridge or a root port. */
export abstract class PciFunction {
  /** Config space. */
  readonly config = new PciConfigSpace();
  /** Device number on its bus. */
  readonly device: number;
  /** Function number. */
  readonly fn: number;
  /** The bridge whose secondary bus this function sits on (undefined: the root bus). */
  parent: PciBridge | undefined;
  /** The segment, once placed in one. */
  segment: PciSegment | undefined;
  /** Offsets of the PM, PCIe and MSI-X capabilities (0 when absent). */
  readonly caps = { pm: 0, exp: 0, msix: 0 };
  /** Counters. */
  readonly counters: PciFunctionCounters = {
    resets: 0,
    masterAborts: 0,
    interruptsDelivered: 0,
    interruptsLost: 0,
  };
  readonly #bars = new Map<number, PciBar>();
  #msixLayout: PciMsixLayout | undefined;
  /** MSI-X table (16 bytes per vector) followed by the PBA. */
  #msix: Uint8Array = new Uint8Array(0);
  #powerOn: { bytes: Uint8Array } | undefined;

  /**
   * @param desc - slot of the function
   * @param identity - vendor, device, class and header type
   */
  constructor(desc: PciFunctionDesc, identity: PciIdentity) {
    this.device = desc.device;
    this.fn = desc.function ?? 0;
    const c = this.config;
    c.set(PCI_VENDOR_ID, 2, identity.vendor);
    c.set(PCI_DEVICE_ID, 2, identity.deviceId);
    c.set(0x08, 4, (identity.classCode << 8) >>> 0);
    c.set(PCI_HEADER_TYPE, 1, identity.headerType);
    c.setWritable(
      PCI_COMMAND,
      2,
      PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE,
    );
    c.setW1c(PCI_STATUS, 2, PCI_STATUS_W1C);
  }

  /** Human-readable kind and address, e.g. `endpoint 0000:02:00.0`. */
  abstract readonly kind: "endpoint" | "bridge" | "root-port";

  /** Bus number this function sits on (its parent bridge's secondary bus, or the root bus). */
  get bus(): number {
    return this.parent ? this.parent.secondaryBus : (this.segment?.rootBus ?? 0);
  }

  /** The 16-bit bus/device/function number (also the function's DMA requester ID). */
  get bdf(): number {
    return pciBdf(this.bus, this.device, this.fn);
  }

  /** PCI segment (domain) number. */
  get domain(): number {
    return this.segment?.domain ?? 0;
  }

  /** `SSSS:BB:DD.F`. */
  get address(): string {
    return formatPciAddress(this.domain, this.bdf);
  }

  /** True for an SR-IOV virtual function. */
  get isVirtualFn(): boolean {
    return false;
  }

  /** True when the kernel needs a device-specific ACS quirk for this function. */
  get needsAcsQuirk(): boolean {
    return false;
  }

  /** `PCI_COMMAND`. */
  get command(): number {
    return this.config.get(PCI_COMMAND, 2);
  }

  /** Memory decode is on. */
  get memoryEnabled(): boolean {
    return (this.command & PCI_COMMAND_MEMORY) !== 0;
  }

  /** The function's own bus-master bit. */
  get busMaster(): boolean {
    return (this.command & PCI_COMMAND_MASTER) !== 0;
  }

  /** Bus mastering on here and on every bridge up to the root: DMA can reach the root complex. */
  get dmaPathEnabled(): boolean {
    if (!this.busMaster) return false;
    for (let b = this.parent; b; b = b.parent) if (!b.busMaster) return false;
    return true;
  }

  /** Current power state (D0 when the function has no PM capability). */
  get powerState(): PciPowerState {
    if (!this.caps.pm) return "D0";
    return PCI_POWER_STATES[this.config.get(this.caps.pm + PCI_PM_CTRL, 2) & PCI_PM_CTRL_STATE_MASK]!;
  }

  /** The function's memory BARs by index. */
  get bars(): ReadonlyMap<number, PciBar> {
    return this.#bars;
  }

  /** MSI-X layout, if the function has MSI-X. */
  get msixLayout(): PciMsixLayout | undefined {
    return this.#msixLayout;
  }

  /** MSI-X is enabled in the capability. */
  get msixEnabled(): boolean {
    return (
      this.caps.msix !== 0 &&
      (this.config.get(this.caps.msix + PCI_MSIX_FLAGS, 2) & PCI_MSIX_FLAGS_ENABLE) !== 0
    );
  }

  // ---------------------------------------------------------------- construction helpers

  /** Declares a 32-bit memory BAR of `size` bytes (power of two ≥ 16). */
  protected defineBar(index: number, size: number): void {
    const off = PCI_BASE_ADDRESS_0 + 4 * index;
    this.#bars.set(index, { index, size });
    this.config.setWritable(off, 4, ~(size - 1) >>> 0);
  }

  /** Adds the power-management capability (D0 and D3hot, plus D1/D2 when `d1d2`). */
  protected addPowerManagement(d1d2 = true): void {
    const at = this.config.addCapability(PCI_CAP_ID_PM, 8);
    this.config.set(at + 2, 2, 0x0003 | (d1d2 ? 0x0600 : 0));
    this.config.setWritable(at + PCI_PM_CTRL, 2, PCI_PM_CTRL_STATE_MASK);
    this.caps.pm = at;
  }

  /** Adds a PCI Express capability of `portType` (0 endpoint, 4 root port, 6 downstream port). */
  protected addExpress(portType: number, flr: boolean): void {
    const at = this.config.addCapability(PCI_CAP_ID_EXP, 0x3c);
    this.config.set(at + 2, 2, 0x0002 | (portType << 4));
    this.config.set(at + PCI_EXP_DEVCAP, 4, flr ? PCI_EXP_DEVCAP_FLR : 0);
    this.config.setWritable(at + PCI_EXP_DEVCTL, 2, 0x7fff | (flr ? PCI_EXP_DEVCTL_BCR_FLR : 0));
    this.caps.exp = at;
  }

  /** Adds MSI-X with its table and PBA in a BAR. */
  protected addMsix(layout: PciMsixLayout): void {
    const at = this.config.addCapability(PCI_CAP_ID_MSIX, 12);
    this.config.set(at + PCI_MSIX_FLAGS, 2, layout.vectors - 1);
    this.config.setWritable(at + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
    this.config.set(at + PCI_MSIX_TABLE, 4, layout.tableOffset | layout.bar);
    this.config.set(at + PCI_MSIX_PBA, 4, layout.pbaOffset | layout.bar);
    this.caps.msix = at;
    this.#msixLayout = layout;
    this.#msix = new Uint8Array(layout.vectors * PCI_MSIX_ENTRY_SIZE + Math.ceil(layout.vectors / 64) * 8);
    this.#resetMsixTable();
  }

  /** Records the power-on config space; call at the end of the subclass constructor. */
  protected sealPowerOnState(): void {
    this.#powerOn = { bytes: this.config.bytes.slice() };
  }

  #resetMsixTable(): void {
    this.#msix.fill(0);
    const n = this.#msixLayout?.vectors ?? 0;
    for (let v = 0; v < n; v++) this.#msix[v * PCI_MSIX_ENTRY_SIZE + 12] = PCI_MSIX_ENTRY_CTRL_MASKBIT;
  }

  // ---------------------------------------------------------------- config space

  /**
   * Reads config space (`pci_read_config_*`). `EINVAL` for a bad width, offset or alignment.
   */
  configRead(offset: number, width: ConfigWidth): number {
    checkConfigAccess(offset, width, `config read of ${this.address}`);
    return this.config.get(offset, width);
  }

  /**
   * Writes config space with the hardware's side effects: a PMCSR write changes the power state
   * (D3hot turns memory decode off for BAR accesses until back in D0), a write of the FLR bit
   * resets the function, the MSI-X enable/mask bits take effect at once (pending vectors of
   * unmasked entries are delivered). `EINVAL` for a bad width, offset or alignment.
   */
  configWrite(offset: number, width: ConfigWidth, value: number): void {
    checkConfigAccess(offset, width, `config write of ${this.address}`);
    const exp = this.caps.exp;
    const flr =
      exp !== 0 &&
      offset <= exp + PCI_EXP_DEVCTL + 1 &&
      offset + width > exp + PCI_EXP_DEVCTL + 1 &&
      ((value >>> (8 * (exp + PCI_EXP_DEVCTL + 1 - offset))) & 0x80) !== 0 &&
      (this.config.wmask[exp + PCI_EXP_DEVCTL + 1]! & 0x80) !== 0;
    this.config.write(offset, width, value);
    if (flr) {
      this.resetFunction();
      return;
    }
    if (this.caps.msix && offset <= this.caps.msix + 3 && offset + width > this.caps.msix + 2) {
      this.#deliverPending();
    }
  }

  /**
   * Function-level reset: config space back to its power-on values (BARs, command, power state,
   * MSI-X off, table masked) and the device's internal state reset ({@link PciFunction.onReset}).
   * Bridges keep their bus numbers (a bridge has no FLR; callers reset endpoints).
   */
  resetFunction(): void {
    if (this.#powerOn) this.config.bytes.set(this.#powerOn.bytes);
    this.#resetMsixTable();
    this.counters.resets++;
    this.onReset();
  }

  /** Device-specific part of a reset (abort work in progress, clear registers). */
  protected onReset(): void {}

  // ---------------------------------------------------------------- BARs

  /**
   * Reads `width` bytes at `offset` of BAR `bar`, as a CPU load from the BAR's MMIO would: with
   * memory decode off, outside D0, or outside the BAR, the access is not claimed and reads
   * all-ones. `EINVAL` for a BAR the function does not have or a bad width/alignment.
   */
  barRead(bar: number, offset: number, width: 1 | 2 | 4 | 8): bigint {
    const b = this.#checkBar(bar, offset, width);
    if (!this.#decodes(b, offset, width))
      return width === 8 ? (1n << 64n) - 1n : BigInt(ALL_ONES >>> (32 - 8 * width));
    const msix = this.#msixOffset(bar, offset, width);
    if (msix >= 0) return readLe(this.#msix, msix, width);
    return this.mmioRead(bar, offset, width);
  }

  /**
   * Writes `width` bytes at `offset` of BAR `bar`; dropped when the access is not claimed (see
   * {@link PciFunction.barRead}). `EINVAL` for a BAR the function does not have or a bad
   * width/alignment.
   */
  barWrite(bar: number, offset: number, width: 1 | 2 | 4 | 8, value: bigint): void {
    const b = this.#checkBar(bar, offset, width);
    if (!this.#decodes(b, offset, width)) return;
    const msix = this.#msixOffset(bar, offset, width);
    if (msix >= 0) {
      const layout = this.#msixLayout!;
      if (msix < layout.vectors * PCI_MSIX_ENTRY_SIZE) {
        writeLe(this.#msix, msix, width, value);
        this.#deliverPending();
      }
      return;
    }
    this.mmioWrite(bar, offset, width, value);
  }

  #checkBar(bar: number, offset: number, width: number): PciBar {
    const b = this.#bars.get(bar);
    if (!b) throw new LiveUpdateError("EINVAL", `${this.address} has no BAR ${String(bar)}`);
    if (
      (width !== 1 && width !== 2 && width !== 4 && width !== 8) ||
      !Number.isInteger(offset) ||
      offset < 0 ||
      offset % width !== 0
    ) {
      throw new LiveUpdateError(
        "EINVAL",
        `${this.address} BAR ${bar}: ${String(width)}-byte access at ${String(offset)} is not aligned`,
      );
    }
    return b;
  }

  #decodes(b: PciBar, offset: number, width: number): boolean {
    return this.memoryEnabled && this.powerState === "D0" && offset + width <= b.size;
  }

  #msixOffset(bar: number, offset: number, width: number): number {
    const l = this.#msixLayout;
    if (!l || l.bar !== bar) return -1;
    if (offset >= l.tableOffset && offset + width <= l.tableOffset + l.vectors * PCI_MSIX_ENTRY_SIZE) {
      return offset - l.tableOffset;
    }
    const pbaBytes = this.#msix.length - l.vectors * PCI_MSIX_ENTRY_SIZE;
    if (offset >= l.pbaOffset && offset + width <= l.pbaOffset + pbaBytes) {
      return l.vectors * PCI_MSIX_ENTRY_SIZE + offset - l.pbaOffset;
    }
    return -1;
  }

  /** Device registers: read of BAR `bar` at `offset` (decode already checked). */
  protected mmioRead(_bar: number, _offset: number, width: number): bigint {
    return width === 8 ? (1n << 64n) - 1n : BigInt(ALL_ONES >>> (32 - 8 * width));
  }

  /** Device registers: write of BAR `bar` at `offset` (decode already checked). */
  protected mmioWrite(_bar: number, _offset: number, _width: number, _value: bigint): void {}

  // ---------------------------------------------------------------- MSI-X

  /** Message address and data programmed in MSI-X entry `vector`. */
  msixEntry(vector: number): { address: bigint; data: number; masked: boolean } {
    const o = vector * PCI_MSIX_ENTRY_SIZE;
    return {
      address: readLe(this.#msix, o, 8),
      data: Number(readLe(this.#msix, o + 8, 4)),
      masked: (this.#msix[o + 12]! & PCI_MSIX_ENTRY_CTRL_MASKBIT) !== 0,
    };
  }

  /** Kernel side of MSI-X setup: programs entry `vector` (as the host's IRQ domain does). */
  programMsixEntry(vector: number, address: bigint, data: number, masked: boolean): void {
    const o = vector * PCI_MSIX_ENTRY_SIZE;
    writeLe(this.#msix, o, 8, address);
    writeLe(this.#msix, o + 8, 4, BigInt(data >>> 0));
    writeLe(this.#msix, o + 12, 4, masked ? 1n : 0n);
    this.#deliverPending();
  }

  /** True when vector `vector`'s pending bit is set. */
  msixPending(vector: number): boolean {
    const base = (this.#msixLayout?.vectors ?? 0) * PCI_MSIX_ENTRY_SIZE;
    return (this.#msix[base + (vector >> 3)]! & (1 << (vector & 7))) !== 0;
  }

  #setPending(vector: number, on: boolean): void {
    const base = this.#msixLayout!.vectors * PCI_MSIX_ENTRY_SIZE;
    const i = base + (vector >> 3);
    if (on) this.#msix[i] = this.#msix[i]! | (1 << (vector & 7));
    else this.#msix[i] = this.#msix[i]! & ~(1 << (vector & 7));
  }

  /**
   * The device signals MSI-X vector `vector`: delivered when MSI-X is on and the vector and the
   * function are unmasked, pending (PBA) when masked, lost when MSI-X is off. Delivery needs the
   * bus-master path like any other upstream write.
   */
  protected raiseMsix(vector: number): void {
    const l = this.#msixLayout;
    if (!l || vector >= l.vectors || !this.msixEnabled) {
      this.counters.interruptsLost++;
      return;
    }
    const flags = this.config.get(this.caps.msix + PCI_MSIX_FLAGS, 2);
    if (flags & PCI_MSIX_FLAGS_MASKALL || this.msixEntry(vector).masked) {
      this.#setPending(vector, true);
      return;
    }
    this.#send(vector);
  }

  #send(vector: number): void {
    if (!this.dmaPathEnabled) {
      this.counters.masterAborts++;
      this.counters.interruptsLost++;
      return;
    }
    const e = this.msixEntry(vector);
    if (this.segment?.deliverMsi(this, vector, e.address, e.data)) this.counters.interruptsDelivered++;
    else this.counters.interruptsLost++;
  }

  #deliverPending(): void {
    const l = this.#msixLayout;
    if (!l || !this.msixEnabled) return;
    if (this.config.get(this.caps.msix + PCI_MSIX_FLAGS, 2) & PCI_MSIX_FLAGS_MASKALL) return;
    for (let v = 0; v < l.vectors; v++) {
      if (this.msixPending(v) && !this.msixEntry(v).masked) {
        this.#setPending(v, false);
        this.#send(v);
      }
    }
  }

  /** Records a DMA attempt refused because bus mastering is off on the path. */
  protected masterAbort(): void {
    this.counters.masterAborts++;
    this.config.set(PCI_STATUS, 2, this.config.get(PCI_STATUS, 2) | PCI_STATUS_REC_MASTER_ABORT);
  }

  // ---------------------------------------------------------------- time and state

  /** Machine time passes: the device does `ns` nanoseconds of work. Default: nothing. */
  advance(_ns: number): void {}

  /** True while the device has work in flight. */
  get busy(): boolean {
    return false;
  }

  /** Saves the hardware state (config space, MSI-X, device registers). */
  saveState(): PciFunctionState {
    return {
      config: Buffer.from(this.config.bytes).toString("hex"),
      msix: Buffer.from(this.#msix).toString("hex"),
      device: this.saveDeviceState(),
    };
  }

  /** Restores what {@link PciFunction.saveState} produced. `EINVAL` for a malformed state. */
  loadState(state: PciFunctionState): void {
    const config = Buffer.from(String(state?.config), "hex");
    const msix = Buffer.from(String(state?.msix), "hex");
    if (config.length !== this.config.bytes.length || msix.length !== this.#msix.length) {
      throw new LiveUpdateError("EINVAL", `saved state of ${this.address} does not fit the function`);
    }
    this.config.bytes.set(config);
    this.#msix.set(msix);
    this.loadDeviceState(state.device);
  }

  /** Device-specific state to save (JSON-safe). */
  protected saveDeviceState(): unknown {
    return null;
  }

  /** Restores device-specific state. */
  protected loadDeviceState(_state: unknown): void {}
}

/** Little-endian read of `width` bytes. */
export function readLe(b: Uint8Array, o: number, width: number): bigint {
  let v = 0n;
  for (let i = width - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[o + i]!);
  return v;
}

/** Little-endian write of the low `width` bytes of `value`. */
export function writeLe(b: Uint8Array, o: number, width: number, value: bigint): void {
  let v = BigInt.asUintN(64, value);
  for (let i = 0; i < width; i++) {
    b[o + i] = Number(v & 0xffn);
    v >>= 8n;
  }
}
