/**
 * The `eventfdLuo()` plugin: registers the `"eventfd-v1"` handler in a kernel. Pass it to every
 * boot whose eventfds should be preservable (`machine.boot({ plugins: [eventfdLuo()] })`;
 * `kexec()` reuses the plugins by default). Boot error: `EEXIST` if the kernel already has a
 * handler with this compatible.
 *
 * @module
 */
import { definePlugin, type Plugin } from "@luo/core";
import { eventfdHandler } from "./handler.js";

/** Name of the plugin made by {@link eventfdLuo}, for other plugins' `dependencies`. */
export const EVENTFD_LUO_PLUGIN_NAME = "eventfd-luo";

/** The plugin that makes the core's eventfds preservable with `"eventfd-v1"`. */
export function eventfdLuo(): Plugin {
  return definePlugin({
    name: EVENTFD_LUO_PLUGIN_NAME,
    async register(ctx) {
      await ctx.registerFileHandler(eventfdHandler);
    },
  });
}
