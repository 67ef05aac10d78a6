/**
 * Byte layout of the PCI core's live-update state (the `"pci"` FLB, version 2), little-endian
 * and packed:
 *
 * ```c
 * struct pci_ser     { u32 version; u32 nr_devices; u64 devices; };   // 16 bytes
 * struct pci_dev_ser { u32 domain; u16 bdf; u16 refcount; };          //  8 bytes
 * ```
 *
 * `pci_ser` sits in its own preserved page; the FLB's data is its physical address. `devices` is
 * the physical address of the first block of a chain of one-page blocks, each
 * `{u64 next; u64 count}` followed by up to (4096 − 16) / 8 = 510 `pci_dev_ser` entries.
 * `refcount` counts the preserved devices at or below the entry (an endpoint has 1, a bridge one
 * per preserved device below it); a slot with refcount 0 is free and reused before the chain
 * grows. `nr_devices` is the number of entries in use. `version` must never move or change size:
 * a kernel that reads another version panics.
 *
 * @module
 */
import { BLOCK_HEADER_SIZE, PAGE_SIZE, type BlockGeometry } from "@luo/core";

/** Compatible of the PCI FLB. */
export const PCI_LUO_FLB_COMPATIBLE = "pci";
/** Version in `pci_ser.version`. */
export const PCI_LUO_FLB_VERSION = 2;

/** `struct pci_ser` offsets and size. */
export const PCI_SER = { size: 16, version: 0, nrDevices: 4, devices: 8 } as const;
/** `struct pci_dev_ser` offsets and size. */
export const PCI_DEV_SER = { size: 8, domain: 0, bdf: 4, refcount: 6 } as const;

/** One-page device blocks: 510 entries each. */
export const PCI_DEV_BLOCKS: BlockGeometry = {
  what: "PCI device",
  pages: 1,
  entrySize: PCI_DEV_SER.size,
  perBlock: Math.floor((PAGE_SIZE - BLOCK_HEADER_SIZE) / PCI_DEV_SER.size),
};

/** A `pci_dev_ser` entry. */
export interface PciDevRecord {
  /** PCI segment. */
  readonly domain: number;
  /** Bus/device/function. */
  readonly bdf: number;
  /** Preserved devices at or below it. */
  readonly refcount: number;
}

/** Key of a device in maps: `domain << 16 | bdf`, as the kernel looks devices up. */
export function pciKey(domain: number, bdf: number): number {
  return domain * 0x10000 + bdf;
}
