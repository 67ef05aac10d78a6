/**
 * `@luo/core`: the emulated machine, KHO, FDT, the handover ABI, the kernel/VFS model, the Live
 * Update Orchestrator and the plugin API.
 *
 * @packageDocumentation
 */
import "reflect-metadata";

export * from "./errors.js";
export * from "./machine/index.js";
export * from "./fdt/index.js";
export * from "./kho/index.js";
export * from "./abi/index.js";
export * from "./kernel/index.js";
export * from "./liveupdate/index.js";
export * from "./plugin/index.js";
export * from "./system/index.js";
export * from "./inspect/index.js";
