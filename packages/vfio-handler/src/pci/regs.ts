/**
 * PCI configuration-space register offsets and bits (`include/uapi/linux/pci_regs.h`), the
 * subset the emulated devices implement, plus bus/device/function helpers.
 *
 * A function's config space is 4 KiB: the 64-byte standard header (type 0 for endpoints, type 1
 * for bridges), the capability list from {@link PCI_CAPABILITY_LIST} in the first 256 bytes, and
 * PCI Express extended capabilities from 0x100. Everything is little-endian.
 *
 * @module
 */
import { LiveUpdateError } from "@luo/core";

/** Size of a PCI Express function's configuration space. */
export const PCI_CFG_SPACE_EXP_SIZE = 4096;
/** Size of the legacy (conventional PCI) configuration space. */
export const PCI_CFG_SPACE_SIZE = 256;

/** Vendor ID (u16). */
export const PCI_VENDOR_ID = 0x00;
/** Device ID (u16). */
export const PCI_DEVICE_ID = 0x02;
/** Command register (u16). */
export const PCI_COMMAND = 0x04;
/** Command: respond to I/O space accesses. */
export const PCI_COMMAND_IO = 0x1;
/** Command: respond to memory space accesses. */
export const PCI_COMMAND_MEMORY = 0x2;
/** Command: enable bus mastering (the function may issue DMA). */
export const PCI_COMMAND_MASTER = 0x4;
/** Command: disable INTx emulation. */
export const PCI_COMMAND_INTX_DISABLE = 0x400;
/** Status register (u16). */
export const PCI_STATUS = 0x06;
/** Status: the function has a capability list. */
export const PCI_STATUS_CAP_LIST = 0x10;
/** Status: a transaction this function mastered was ended by a master abort (write 1 to clear). */
export const PCI_STATUS_REC_MASTER_ABORT = 0x2000;
/** Status: error bits that are cleared by writing 1. */
export const PCI_STATUS_W1C = 0xf900;
/** Revision ID (u8). */
export const PCI_REVISION_ID = 0x08;
/** Class code: programming interface (u8), subclass (u8), base class (u8) at 0x09..0x0b. */
export const PCI_CLASS_PROG = 0x09;
/** Header type (u8): 0 endpoint, 1 PCI-to-PCI bridge; bit 7 = multi-function. */
export const PCI_HEADER_TYPE = 0x0e;
/** Header type of an endpoint. */
export const PCI_HEADER_TYPE_NORMAL = 0;
/** Header type of a PCI-to-PCI bridge. */
export const PCI_HEADER_TYPE_BRIDGE = 1;
/** First base address register (type 0 headers have six, 0x10..0x24). */
export const PCI_BASE_ADDRESS_0 = 0x10;
/** Number of BARs of a type-0 header. */
export const PCI_STD_NUM_BARS = 6;
/** BAR bit 0: 1 = I/O space BAR. */
export const PCI_BASE_ADDRESS_SPACE_IO = 0x1;
/** Low bits of a memory BAR that are not address bits. */
export const PCI_BASE_ADDRESS_MEM_MASK = 0xf;
/** Subsystem vendor ID (u16, type 0). */
export const PCI_SUBSYSTEM_VENDOR_ID = 0x2c;
/** Subsystem ID (u16, type 0). */
export const PCI_SUBSYSTEM_ID = 0x2e;
/** Offset of the first capability (u8). */
export const PCI_CAPABILITY_LIST = 0x34;
/** Interrupt line (u8). */
export const PCI_INTERRUPT_LINE = 0x3c;
/** Interrupt pin (u8). */
export const PCI_INTERRUPT_PIN = 0x3d;
/** Type 1: primary bus number (u8). */
export const PCI_PRIMARY_BUS = 0x18;
/** Type 1: secondary bus number (u8): the bus right below the bridge. */
export const PCI_SECONDARY_BUS = 0x19;
/** Type 1: subordinate bus number (u8): the highest bus number below the bridge. */
export const PCI_SUBORDINATE_BUS = 0x1a;

/** Capability ID: power management. */
export const PCI_CAP_ID_PM = 0x01;
/** Capability ID: PCI Express. */
export const PCI_CAP_ID_EXP = 0x10;
/** Capability ID: MSI-X. */
export const PCI_CAP_ID_MSIX = 0x11;

/** PM capability: power management capabilities (u16) at +2. */
export const PCI_PM_PMC = 2;
/** PM capability: control/status (u16) at +4; bits 1:0 are the power state. */
export const PCI_PM_CTRL = 4;
/** PMCSR: power state mask. */
export const PCI_PM_CTRL_STATE_MASK = 0x3;
/** PMC: D1 supported. */
export const PCI_PM_CAP_D1 = 0x0200;
/** PMC: D2 supported. */
export const PCI_PM_CAP_D2 = 0x0400;

/** MSI-X capability: message control (u16) at +2. */
export const PCI_MSIX_FLAGS = 2;
/** Message control: table size minus one. */
export const PCI_MSIX_FLAGS_QSIZE = 0x07ff;
/** Message control: all vectors masked. */
export const PCI_MSIX_FLAGS_MASKALL = 0x4000;
/** Message control: MSI-X enabled. */
export const PCI_MSIX_FLAGS_ENABLE = 0x8000;
/** MSI-X capability: table offset and BAR indicator (u32) at +4. */
export const PCI_MSIX_TABLE = 4;
/** MSI-X capability: pending-bit array offset and BAR indicator (u32) at +8. */
export const PCI_MSIX_PBA = 8;
/** Bytes per MSI-X table entry: address (u64), data (u32), vector control (u32). */
export const PCI_MSIX_ENTRY_SIZE = 16;
/** Vector control bit 0: the vector is masked. */
export const PCI_MSIX_ENTRY_CTRL_MASKBIT = 0x1;

/** PCIe capability: device capabilities (u32) at +4. */
export const PCI_EXP_DEVCAP = 4;
/** DEVCAP: function-level reset capable. */
export const PCI_EXP_DEVCAP_FLR = 0x10000000;
/** PCIe capability: device control (u16) at +8. */
export const PCI_EXP_DEVCTL = 8;
/** DEVCTL: initiate function-level reset (write 1; always reads 0). */
export const PCI_EXP_DEVCTL_BCR_FLR = 0x8000;

/** Power states a function can be put in through its PM capability. */
export type PciPowerState = "D0" | "D1" | "D2" | "D3hot";

/** Power state names by PMCSR value. */
export const PCI_POWER_STATES: readonly PciPowerState[] = ["D0", "D1", "D2", "D3hot"];

/** Bus/device/function packed as the kernel's 16-bit `bdf` (bus << 8 | devfn). */
export function pciBdf(bus: number, device: number, fn: number): number {
  return ((bus & 0xff) << 8) | ((device & 0x1f) << 3) | (fn & 0x7);
}

/** `devfn` of a device/function pair. */
export function pciDevfn(device: number, fn: number): number {
  return ((device & 0x1f) << 3) | (fn & 0x7);
}

/** `SSSS:BB:DD.F` as Linux prints a PCI address (`0000:01:00.0`). */
export function formatPciAddress(segment: number, bdf: number): string {
  const hx = (v: number, w: number): string => v.toString(16).padStart(w, "0");
  return `${hx(segment, 4)}:${hx(bdf >> 8, 2)}:${hx((bdf >> 3) & 0x1f, 2)}.${bdf & 7}`;
}

/** Checks a device number (0..31) and function number (0..7) of a topology description. */
export function checkSlot(device: unknown, fn: unknown, what: string): void {
  if (typeof device !== "number" || !Number.isInteger(device) || device < 0 || device > 31) {
    throw new LiveUpdateError("EINVAL", `${what}: device number ${String(device)} is not in 0..31`);
  }
  if (typeof fn !== "number" || !Number.isInteger(fn) || fn < 0 || fn > 7) {
    throw new LiveUpdateError("EINVAL", `${what}: function number ${String(fn)} is not in 0..7`);
  }
}
