/**
 * PCI segments as machine hardware: the factory that puts a segment into a machine at
 * construction (`new Machine({ memory, hardware: [iommuUnit({ name: "dmar0" }), pciSegment({...})] })`),
 * the loader that rebuilds it from a machine image, and the segment's DMA path: through the
 * machine's IOMMU unit that covers the requester (translation faults are the unit's, recorded in
 * its fault log), or straight to RAM when no unit covers it (a machine without an IOMMU).
 *
 * @module
 */
import type { HardwareLoader, Machine } from "@luo/core";
import { iommuUnits } from "@luo/iommufd-handler";
import { ramDmaPort } from "./ram-port.js";
import { PCI_SEGMENT_KIND, PciSegment, type PciDmaPath, type PciSegmentDesc } from "./segment.js";

/** The DMA path of `machine`'s PCI functions: the covering IOMMU unit, else RAM. */
export function machineDmaPath(machine: Machine): PciDmaPath {
  const ram = ramDmaPort(machine);
  const unitFor = (segment: number, bdf: number) =>
    iommuUnits(machine).find((u) => u.covers({ segment, bdf }));
  return {
    read(domain, rid, iova, into) {
      const u = unitFor(domain, rid);
      if (u) u.dmaReadInto({ segment: domain, bdf: rid }, iova, into);
      else ram.read(domain, rid, iova, into);
    },
    write(domain, rid, iova, from) {
      const u = unitFor(domain, rid);
      if (u) u.dmaWrite({ segment: domain, bdf: rid }, iova, from);
      else ram.write(domain, rid, iova, from);
    },
  };
}

function wire(machine: Machine, seg: PciSegment): PciSegment {
  seg.dma = machineDmaPath(machine);
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
