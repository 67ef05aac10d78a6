/**
 * A DMA port without an IOMMU: IOVAs are physical addresses of the machine's RAM (what a device
 * sees with the IOMMU in passthrough, or on a machine without one). Accesses outside RAM or to
 * pages that are not allocated fault like any other bad access.
 *
 * @module
 */
import type { Machine } from "@luo/core";
import type { PciDmaPath } from "./segment.js";

/** A {@link PciDmaPath} that reads and writes `machine`'s RAM at the IOVA as physical address. */
export function ramDmaPort(machine: Machine): PciDmaPath {
  return {
    read(_domain, _rid, iova, into) {
      into.set(machine.view(iova, into.length));
    },
    write(_domain, _rid, iova, from) {
      machine.write(iova, from);
    },
  };
}
