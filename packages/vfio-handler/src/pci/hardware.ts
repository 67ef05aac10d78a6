/**
 * PCI segments as machine hardware: the factory that puts a segment into a machine at
 * construction (`new Machine({ memory, hardware: [pciSegment({...})] })`), the loader that
 * rebuilds it from a machine image, and the lookup of a machine's segments. The factory also
 * gives the segment its DMA path: through the machine's IOMMU when a unit covers the requester,
 * otherwise straight to RAM (a machine without an IOMMU).
 *
 * @module
 */
import type { HardwareLoader, Machine } from "@luo/core";
import { ramDmaPort } from "./ram-port.js";
import { PCI_SEGMENT_KIND, PciSegment, type PciSegmentDesc } from "./segment.js";

/** Connects a segment to its machine: the DMA path. */
function wire(machine: Machine, seg: PciSegment): PciSegment {
  seg.dma = ramDmaPort(machine);
  return seg;
}

/** A machine-hardware factory for a PCI segment described by `desc` (`EINVAL` when malformed). */
export function pciSegment(desc: PciSegmentDesc): (machine: Machine) => PciSegment {
  return (machine) => wire(machine, new PciSegment(desc));
}

/** Rebuilds PCI segments from a machine image: pass it to `Machine.load(path, { hardware: [...] })`. */
export const pciSegmentLoader: HardwareLoader = {
  kind: PCI_SEGMENT_KIND,
  load: (machine, _name, state) => wire(machine, PciSegment.restore(state)),
};
