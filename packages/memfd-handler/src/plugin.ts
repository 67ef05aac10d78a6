/**
 * The `memfd()` plugin: memfd support for a kernel. At boot it creates the kernel's memfd
 * filesystem (registered in the kernel's DI container as {@link MEMFD_FS} and found from
 * processes by `memfdCreate`) and registers the `"memfd-v2"` live-update handler. When the kernel
 * goes away (kexec or shutdown) the filesystem is taken down: the old kernel's pages are then
 * either preserved for the next kernel or scrubbed, and are never freed by the old memfds.
 *
 * @module
 */
import { LiveUpdateError, MACHINE, definePlugin, type Plugin } from "@luo/core";
import { MEMFD_FS, MemfdFs } from "./memfd/fs.js";
import { memfdHandler } from "./luo/handler.js";

/** Name of the plugin made by {@link memfd}, for other plugins' `dependencies`. */
export const MEMFD_PLUGIN_NAME = "memfd";

/**
 * The memfd plugin: `memfdCreate` and the `"memfd-v2"` handler. Pass it to every boot that uses
 * memfds (`machine.boot({ plugins: [memfd()] })`; `kexec()` reuses the plugins by default).
 * Boot errors: `EEXIST` if the kernel already has a memfd filesystem or handler.
 *
 * @example
 * ```ts
 * import { Machine } from "@luo/core";
 * import { memfd, memfdCreate } from "@luo/memfd-handler";
 *
 * const plugins = [memfd()];
 * const k1 = await new Machine({ memory: "32 MiB" }).boot({ plugins });
 * const vmm = k1.spawn("vmm");
 * const ram = memfdCreate(vmm, "guest-ram");
 * vmm.pwrite(ram, new TextEncoder().encode("guest memory"), 0);
 * await (await (await vmm.openLiveUpdate()).createSession("vm-0")).preserveFd(ram, 1n);
 *
 * const k2 = await k1.kexec(); // same plugins; the pages stay where they are
 * const vmm2 = k2.spawn("vmm");
 * const fd = await (await (await vmm2.openLiveUpdate()).retrieveSession("vm-0")).retrieveFd(1n);
 * console.log(new TextDecoder().decode(vmm2.pread(fd, 12, 0))); // "guest memory"
 * ```
 */
export function memfd(): Plugin {
  return definePlugin({
    name: MEMFD_PLUGIN_NAME,
    async register(ctx) {
      const fs = new MemfdFs(ctx.container.resolve(MACHINE), ctx.kernel);
      if (ctx.container.isRegistered(MEMFD_FS)) {
        throw new LiveUpdateError("EEXIST", `${ctx.kernel.name} already has a memfd filesystem`);
      }
      ctx.container.registerInstance(MEMFD_FS, fs);
      ctx.onTeardown(() => fs.shutdown());
      await ctx.registerFileHandler(memfdHandler);
    },
  });
}
