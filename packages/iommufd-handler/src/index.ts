/**
 * `@luo/iommufd-handler`: an emulated IOMMU (machine hardware that translates device DMA through
 * I/O page tables in machine memory), `/dev/iommu` (iommufd) as a kernel plugin, and its
 * live-update handler `"iommufd-v1"` with the IOMMU core FLB `"iommu-liveupdate"`.
 *
 * @packageDocumentation
 */
export * from "./iommu/pgtable.js";
export * from "./iommu/unit.js";
export * from "./iommu/flb.js";
export * from "./iommu/core.js";
export * from "./iommufd/ictx.js";
export * from "./iommufd/uapi.js";
export * from "./iommufd/api.js";
export * from "./luo/handler.js";
export * from "./plugin.js";
export * from "./inspect.js";
