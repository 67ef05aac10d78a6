/**
 * The `iommufd()` plugin: IOMMU support for a kernel. At boot it creates the kernel's IOMMU core
 * (registered in the DI container as {@link IOMMU_CORE}), initialises the machine's IOMMU units —
 * reset on a cold boot; after a live update, from the handed-over IOMMU FLB (a corrupt FLB panics
 * the boot) — adds the device node `/dev/iommu`, registers the `"iommufd-v1"` handler in the
 * chosen behaviour and links the IOMMU FLB `"iommu-liveupdate"` to it. Needs the `memfd()` plugin
 * (iommufd maps memfds).
 *
 * @module
 */
import { LiveUpdateError, definePlugin, isLiveUpdateError, type Plugin } from "@luo/core";
import { MEMFD_PLUGIN_NAME } from "@luo/memfd-handler";
import { IOMMU_CORE, IommuCore } from "./iommu/core.js";
import { iommuLiveUpdateFlb, type IommuFlbIncoming } from "./iommu/flb.js";
import { IommufdFile } from "./iommufd/ictx.js";
import { createIommufdHandler, type IommufdLiveUpdateMode } from "./luo/handler.js";

/** Name of the plugin made by {@link iommufd}. */
export const IOMMUFD_PLUGIN_NAME = "iommufd";
/** The device node. */
export const IOMMUFD_DEVICE_PATH = "/dev/iommu";

/** Options of {@link iommufd}. */
export interface IommufdPluginOptions {
  /**
   * What this kernel does with iommufds preserved by the previous one: `"restore"` (default: a
   * retrieved iommufd restores HWPTs by token, and the session can finish) or `"phase1"` (as the
   * posted upstream series: retrieve `EOPNOTSUPP`, FINISH never possible, preserved devices
   * cannot be bound to a new iommufd). Userspace asks with `iommufdLiveUpdateInfo`.
   */
  readonly liveUpdate?: IommufdLiveUpdateMode;
}

/**
 * The iommufd plugin. Boot errors: `EINVAL` for an unknown behaviour, `EEXIST` when the kernel
 * already has an IOMMU core, a `KernelPanicError` for a corrupt handed-over IOMMU FLB.
 */
export function iommufd(options: IommufdPluginOptions = {}): Plugin {
  const mode = options.liveUpdate ?? "restore";
  if (mode !== "restore" && mode !== "phase1") {
    throw new LiveUpdateError("EINVAL", `iommufd(): unknown liveUpdate behaviour ${String(mode)}`);
  }
  return definePlugin({
    name: IOMMUFD_PLUGIN_NAME,
    dependencies: [MEMFD_PLUGIN_NAME],
    async register(ctx) {
      if (ctx.container.isRegistered(IOMMU_CORE)) {
        throw new LiveUpdateError("EEXIST", `${ctx.kernel.name} already has an IOMMU core`);
      }
      const core = new IommuCore(ctx.machine);
      ctx.container.registerInstance(IOMMU_CORE, core);
      const handler = createIommufdHandler(mode);
      await ctx.registerFileHandler(handler);
      await ctx.registerFlb(handler, iommuLiveUpdateFlb);
      let incoming: IommuFlbIncoming | undefined;
      try {
        incoming = (await ctx.flb.getIncoming(iommuLiveUpdateFlb)) as IommuFlbIncoming;
      } catch (e) {
        if (!isLiveUpdateError(e, "ENODATA") && !isLiveUpdateError(e, "ENOENT")) throw e;
      }
      core.init(incoming);
      ctx.registerDevice(IOMMUFD_DEVICE_PATH, () => new IommufdFile(core, mode === "restore"));
    },
  });
}
