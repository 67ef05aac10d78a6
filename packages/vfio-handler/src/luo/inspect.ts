/**
 * Reading vfio and PCI FLB records of a pending handover without booting a kernel — the decoders
 * `luo inspect` users apply to the `data` of a `"vfio-pci-v1"` file record and of the `"pci"` FLB
 * record (`inspectHandover(machine)` lists both with their addresses). They only read: nothing is
 * claimed, and a malformed record is an `EINVAL` naming the address (the next kernel would panic
 * on the same PCI FLB).
 *
 * @module
 */
import { LiveUpdateError, type Machine, LUO_MAX_BLOCKS, BLOCK_HEADER_SIZE, PAGE_SIZE } from "@luo/core";
import { formatPciAddress } from "../pci/regs.js";
import { VFIO_PCI_SER } from "./handler.js";
import { PCI_DEV_BLOCKS, PCI_DEV_SER, PCI_SER, type PciDevRecord } from "./pci-flb-layout.js";

const hex = (v: bigint): string => `0x${v.toString(16)}`;

/** A decoded `vfio_pci_core_device_ser`. */
export interface InspectedVfioRecord {
  /** PCI segment. */
  readonly domain: number;
  /** Bus/device/function. */
  readonly bdf: number;
  /** `SSSS:BB:DD.F`. */
  readonly address: string;
}

/** A decoded PCI FLB. */
export interface InspectedPciFlb {
  /** `pci_ser.version`. */
  readonly version: number;
  /** `pci_ser.nr_devices`. */
  readonly nrDevices: number;
  /** Block addresses in chain order. */
  readonly blocks: readonly bigint[];
  /** Entries in use (refcount > 0), with their addresses. */
  readonly devices: ReadonlyArray<PciDevRecord & { readonly address: string }>;
}

function peek(machine: Machine, phys: bigint, length: number, what: string): DataView {
  try {
    const b = machine.peek(phys, length);
    return new DataView(b.buffer, b.byteOffset, length);
  } catch (e) {
    throw new LiveUpdateError("EINVAL", `${what} at ${hex(phys)} is not readable`, { cause: e });
  }
}

/** Decodes the vfio-pci file record at `data`. */
export function inspectVfioRecord(machine: Machine, data: bigint): InspectedVfioRecord {
  const dv = peek(machine, data, VFIO_PCI_SER.size, "vfio-pci record");
  const domain = dv.getUint32(VFIO_PCI_SER.domain, true);
  const bdf = dv.getUint16(VFIO_PCI_SER.bdf, true);
  return { domain, bdf, address: formatPciAddress(domain, bdf) };
}

/** Decodes the PCI FLB at `data`: header, blocks and the entries in use. */
export function inspectPciFlb(machine: Machine, data: bigint): InspectedPciFlb {
  const head = peek(machine, data, PCI_SER.size, "pci_ser");
  const blocks: bigint[] = [];
  const devices: Array<PciDevRecord & { address: string }> = [];
  for (let block = head.getBigUint64(PCI_SER.devices, true); block !== 0n;) {
    if (blocks.includes(block) || blocks.length >= LUO_MAX_BLOCKS) {
      throw new LiveUpdateError("EINVAL", `PCI device chain loops or is too long at block ${hex(block)}`);
    }
    blocks.push(block);
    const dv = peek(machine, block, PAGE_SIZE, "PCI device block");
    const count = Number(dv.getBigUint64(8, true));
    if (count === 0 || count > PCI_DEV_BLOCKS.perBlock) {
      throw new LiveUpdateError("EINVAL", `PCI device block at ${hex(block)} has count ${count}`);
    }
    for (let i = 0; i < count; i++) {
      const off = BLOCK_HEADER_SIZE + i * PCI_DEV_SER.size;
      const refcount = dv.getUint16(off + PCI_DEV_SER.refcount, true);
      if (refcount === 0) continue;
      const domain = dv.getUint32(off + PCI_DEV_SER.domain, true);
      const bdf = dv.getUint16(off + PCI_DEV_SER.bdf, true);
      devices.push({ domain, bdf, refcount, address: formatPciAddress(domain, bdf) });
    }
    block = dv.getBigUint64(0, true);
  }
  return {
    version: head.getUint32(PCI_SER.version, true),
    nrDevices: head.getUint32(PCI_SER.nrDevices, true),
    blocks,
    devices,
  };
}
