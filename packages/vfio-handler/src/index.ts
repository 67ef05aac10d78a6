/**
 * `@luo/vfio-handler`: emulated PCI hardware (segments, root ports, bridges, a memcpy DMA
 * engine), vfio (`/dev/vfio/devices/vfioN`, the legacy group and container paths), the
 * `"vfio-pci-v1"` live-update handler and the PCI core FLB `"pci"`.
 *
 * @packageDocumentation
 */
export * from "./pci/regs.js";
export * from "./pci/config-space.js";
export * from "./pci/function.js";
export * from "./pci/endpoint.js";
export * from "./pci/bridge.js";
export * from "./pci/models.js";
export * from "./pci/segment.js";
export * from "./pci/dma-engine.js";
export * from "./pci/ram-port.js";
export * from "./pci/hardware.js";
export * from "./luo/pci-flb-layout.js";
export * from "./luo/pci-flb.js";
export * from "./kernel/pci-core.js";
export * from "./vfio/uapi.js";
export * from "./vfio/user-memory.js";
export * from "./vfio/irq-trigger.js";
export * from "./vfio/iommufd.js";
export * from "./vfio/pci-device.js";
export * from "./vfio/device-file.js";
export * from "./vfio/group.js";
export * from "./vfio/core.js";
export * from "./luo/handler.js";
export * from "./plugin.js";
export * from "./vfio/user.js";
export * from "./luo/inspect.js";
