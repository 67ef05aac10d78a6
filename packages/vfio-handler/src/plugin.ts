/**
 * The `vfio()` plugin: the kernel's PCI core and vfio-pci. Needs the `iommufd()` plugin (cdevs
 * bind to iommufds). At boot it links the PCI FLB and the IOMMU FLB (which holds preserved
 * devices' IOMMU state) to the `"vfio-pci-v1"` handler, enumerates the machine's PCI segments (retrieving an incoming PCI FLB
 * first, so a corrupt one panics the boot), takes the devices vfio-pci owns and creates their
 * device nodes. When the kernel goes away after a kexec, the PCI shutdown turns bus mastering off
 * on every device that is not preserved (and not a bridge above one) and interrupts stop being
 * taken.
 *
 * @module
 */
import { LiveUpdateError, MACHINE, definePlugin, type Plugin } from "@luo/core";
import { IOMMUFD_PLUGIN_NAME, iommuLiveUpdateFlb } from "@luo/iommufd-handler";
import { PCI_CORE, PciCore } from "./kernel/pci-core.js";
import { VFIO_CORE, VfioCore } from "./vfio/core.js";
import type { VfioLiveUpdateMode } from "./vfio/pci-device.js";
import { vfioPciHandler } from "./luo/handler.js";

/** Name of the plugin made by {@link vfio}. */
export const VFIO_PLUGIN_NAME = "vfio";

/** Options of {@link vfio}. */
export interface VfioPluginOptions {
  /**
   * How preserved devices behave across a live update, reported to userspace in the device-info
   * capability: `"reset"` (default; the posted v5 series) resets the device and turns bus
   * mastering off at freeze; `"continuous"` keeps it running and DMA flowing through the
   * preserved IOMMU domain, and the retrieved device is not reset.
   */
  readonly mode?: VfioLiveUpdateMode;
  /** Addresses (`SSSS:BB:DD.F`) vfio-pci owns (the `driver_override` model). Default: every endpoint. */
  readonly bind?: readonly string[];
  /** Renumber PCI buses at boot (`pci=assign-busses`) unless preserved devices came over. Default false. */
  readonly assignBusses?: boolean;
}

/**
 * The vfio plugin. Boot errors: `EINVAL` for bad options, `EEXIST` if the kernel already has vfio,
 * a `KernelPanicError` (from `@luo/core`) when the incoming PCI FLB is corrupt.
 */
export function vfio(options: VfioPluginOptions = {}): Plugin {
  const mode = options.mode ?? "reset";
  if (mode !== "reset" && mode !== "continuous") {
    throw new LiveUpdateError("EINVAL", `vfio mode ${JSON.stringify(mode)} is not "reset" or "continuous"`);
  }
  if (
    options.bind !== undefined &&
    (!Array.isArray(options.bind) || options.bind.some((a) => typeof a !== "string"))
  ) {
    throw new LiveUpdateError("EINVAL", "vfio bind takes an array of PCI addresses");
  }
  return definePlugin({
    name: VFIO_PLUGIN_NAME,
    dependencies: [IOMMUFD_PLUGIN_NAME],
    async register(ctx) {
      if (ctx.container.isRegistered(VFIO_CORE)) {
        throw new LiveUpdateError("EEXIST", `${ctx.kernel.name} already has vfio`);
      }
      const pci = new PciCore(ctx.container.resolve(MACHINE), ctx.liveupdate.flbs);
      await ctx.registerFileHandler(vfioPciHandler);
      await ctx.registerFlb(vfioPciHandler, pci.flb);
      await ctx.registerFlb(vfioPciHandler, iommuLiveUpdateFlb);
      await pci.boot({ assignBusses: options.assignBusses === true });
      const core = new VfioCore(pci, mode, options.bind);
      ctx.container.registerInstance(PCI_CORE, pci);
      ctx.container.registerInstance(VFIO_CORE, core);
      core.registerNodes((path, open) => ctx.registerDevice(path, open));
      ctx.onTeardown(() => pci.shutdown());
    },
  });
}
