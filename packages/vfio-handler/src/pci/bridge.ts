/**
 * PCI-to-PCI bridges and PCI Express root ports (type-1 header). A bridge forwards config cycles
 * for buses `secondary..subordinate` to its side, and forwards its children's DMA upstream only
 * with its own bus-master bit on. Bus numbers live in its config registers, where enumeration
 * writes them; they stay as programmed until software changes them, which is what lets the next
 * kernel inherit them while preserved devices below are unfinished.
 *
 * @module
 */
import { PCI_HEADER_TYPE_BRIDGE, PCI_PRIMARY_BUS, PCI_SECONDARY_BUS, PCI_SUBORDINATE_BUS } from "./regs.js";
import { PciFunction, type PciFunctionDesc } from "./function.js";

/** Vendor ID used for the emulated bridges (Red Hat, as QEMU's generic bridges). */
export const PCI_BRIDGE_VENDOR = 0x1b36;

/** A bridge (or root port) in a topology description, with what sits below it. */
export interface PciBridgeDesc extends PciFunctionDesc {
  /** Functions on the bridge's secondary bus. */
  readonly children?: readonly PciNodeDesc[];
}

/**
 * A node of a topology description (see {@link PciSegmentDesc}): plain data, so a segment can
 * be rebuilt from a machine image. `model` names the hardware (`"root-port"`, `"bridge"`,
 * `"dma-engine"`); the helpers {@link rootPort}, {@link pciBridge} and `dmaEngine` fill it in.
 */
export interface PciNodeDesc extends PciFunctionDesc {
  /** Hardware model. */
  readonly model: string;
  /** Nodes below a bridge. */
  readonly children?: readonly PciNodeDesc[];
}

/** A PCI-to-PCI bridge. */
export class PciBridge extends PciFunction {
  override readonly kind: "bridge" | "root-port";
  /** Functions on the secondary bus. */
  readonly children: PciFunction[] = [];

  /**
   * @param desc - slot
   * @param rootPort - a PCI Express root port (on the root bus) rather than a switch port
   */
  constructor(desc: PciFunctionDesc, rootPort: boolean) {
    super(desc, {
      vendor: PCI_BRIDGE_VENDOR,
      deviceId: rootPort ? 0x000c : 0x000e,
      classCode: 0x060400,
      headerType: PCI_HEADER_TYPE_BRIDGE,
    });
    this.kind = rootPort ? "root-port" : "bridge";
    this.config.setWritable(PCI_PRIMARY_BUS, 1, 0xff);
    this.config.setWritable(PCI_SECONDARY_BUS, 1, 0xff);
    this.config.setWritable(PCI_SUBORDINATE_BUS, 1, 0xff);
    this.addPowerManagement(false);
    this.addExpress(rootPort ? 4 : 6, false);
    this.sealPowerOnState();
  }

  /** Primary bus number register. */
  get primaryBus(): number {
    return this.config.get(PCI_PRIMARY_BUS, 1);
  }

  /** Secondary bus number register: the bus right below. */
  get secondaryBus(): number {
    return this.config.get(PCI_SECONDARY_BUS, 1);
  }

  /** Subordinate bus number register: the highest bus below. */
  get subordinateBus(): number {
    return this.config.get(PCI_SUBORDINATE_BUS, 1);
  }

  /** Programs the three bus-number registers (as enumeration does through config writes). */
  setBusNumbers(primary: number, secondary: number, subordinate: number): void {
    this.configWrite(PCI_PRIMARY_BUS, 1, primary);
    this.configWrite(PCI_SECONDARY_BUS, 1, secondary);
    this.configWrite(PCI_SUBORDINATE_BUS, 1, subordinate);
  }

  /** A bridge has no function-level reset: a reset keeps its bus numbers. */
  override resetFunction(): void {
    const p = this.primaryBus;
    const s = this.secondaryBus;
    const sub = this.subordinateBus;
    super.resetFunction();
    this.setBusNumbers(p, s, sub);
  }
}

/** Describes a PCI Express root port on the root bus with `children` below it. */
export function rootPort(desc: PciBridgeDesc): PciNodeDesc {
  return { ...desc, model: "root-port" };
}

/** Describes a PCI-to-PCI bridge (switch port) with `children` below it. */
export function pciBridge(desc: PciBridgeDesc): PciNodeDesc {
  return { ...desc, model: "bridge" };
}
