// A test device driver standing in for vfio-pci: its file holds a device bound to an iommufd, and
// its handler "iommufd-test-device-v1" preserves the device's IOMMU state with the in-kernel
// iommufdDevicePreserve, exactly where vfio's preserve would, with the IOMMU FLB linked to it.
import { KernelFile, defineFileHandler, definePlugin, type Plugin } from "@luo/core";
import {
  iommuLiveUpdateFlb,
  iommufdDevicePreserve,
  type IommufdDevice,
  type IommufdDevicePreservation,
} from "@luo/iommufd-handler";

/** The test device's file. */
export class TestDeviceFile extends KernelFile {
  readonly description = "test-dma-device";
  /** @param dev - the bound device (none for a retrieved file) */
  constructor(readonly dev: IommufdDevice | undefined) {
    super();
  }
}

/** The test device's handler. */
export const testDeviceHandler = defineFileHandler<TestDeviceFile, IommufdDevicePreservation>({
  compatible: "iommufd-test-device-v1",
  canPreserve: (f) => f instanceof TestDeviceFile && f.dev !== undefined,
  async preserve(args) {
    const p = await iommufdDevicePreserve(args, args.file.dev!);
    return { data: p.record, privateData: p };
  },
  async unpreserve(args) {
    await args.privateData?.unpreserve();
  },
  retrieve: () => new TestDeviceFile(undefined),
  finish: () => undefined,
});

/** Registers the test device handler and links the IOMMU FLB to it. */
export function testDevicePlugin(): Plugin {
  return definePlugin({
    name: "test-dma-device",
    dependencies: ["iommufd"],
    async register(ctx) {
      await ctx.registerFileHandler(testDeviceHandler);
      await ctx.registerFlb(testDeviceHandler, iommuLiveUpdateFlb);
    },
  });
}
