/**
 * Booting kernels and live-updating them.
 *
 * @module
 */
export * from "./kernel.js";
export * from "./boot.js";
export * from "./compatibles.js";
