/**
 * Booting kernels and live-updating them.
 *
 * @module
 */
export { Kernel, type BootOptions, type KexecOptions, type KexecSaveOptions } from "./kernel.js";
import "./boot.js";
export { pluginCompatibles } from "./compatibles.js";
