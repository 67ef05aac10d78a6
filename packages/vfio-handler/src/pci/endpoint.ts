/**
 * PCI endpoints (type-0 header): the base of emulated devices, with the two properties the PCI
 * core's live-update checks look at — whether the function is an SR-IOV virtual function, and
 * whether the kernel needs a device-specific ACS quirk for it. Both are fixed by the hardware
 * description.
 *
 * @module
 */
import { PCI_HEADER_TYPE_NORMAL } from "./regs.js";
import { PciFunction, type PciFunctionDesc } from "./function.js";

/** Description fields every endpoint has. */
export interface PciEndpointDesc extends PciFunctionDesc {
  /** The function is an SR-IOV virtual function (default false). */
  readonly vf?: boolean;
  /** The kernel needs a device-specific ACS quirk for it (default false). */
  readonly acsQuirk?: boolean;
}

/** An endpoint function. */
export abstract class PciEndpoint extends PciFunction {
  override readonly kind = "endpoint" as const;
  readonly #vf: boolean;
  readonly #acsQuirk: boolean;

  /**
   * @param desc - slot and flags
   * @param vendor - vendor ID
   * @param deviceId - device ID
   * @param classCode - 24-bit class code
   */
  constructor(desc: PciEndpointDesc, vendor: number, deviceId: number, classCode: number) {
    super(desc, { vendor, deviceId, classCode, headerType: PCI_HEADER_TYPE_NORMAL });
    this.#vf = desc.vf === true;
    this.#acsQuirk = desc.acsQuirk === true;
  }

  override get isVirtualFn(): boolean {
    return this.#vf;
  }

  override get needsAcsQuirk(): boolean {
    return this.#acsQuirk;
  }
}
