/**
 * `@luo/iommufd-handler`: an emulated IOMMU (machine hardware that translates device DMA through
 * I/O page tables in machine memory), `/dev/iommu` (iommufd) as a kernel plugin, and its
 * live-update handler `"iommufd-v1"` with the IOMMU core FLB `"iommu-liveupdate"`.
 *
 * @packageDocumentation
 */
import "reflect-metadata";

export * from "./iommu/pgtable.js";
export * from "./iommu/unit.js";
