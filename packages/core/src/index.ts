/**
 * `@luo/core`: the emulated machine, KHO, FDT, the handover ABI, the kernel/VFS model, the Live
 * Update Orchestrator and the plugin API.
 *
 * @packageDocumentation
 */
import "reflect-metadata";

export * from "./errors.js";
