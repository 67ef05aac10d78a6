/**
 * The plugin API and DI tokens.
 *
 * @module
 */
export { MACHINE, KERNEL_CONTEXT, KHO, KHO_INCOMING, LIVE_UPDATE } from "./tokens.js";
export { definePlugin, orderPlugins, type PluginContext, type Plugin, type PluginSpec } from "./plugin.js";
