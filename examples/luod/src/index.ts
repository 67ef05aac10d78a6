/**
 * `@luo/example-luod`: a live-update agent for the LUO model — luod, its protocol, the VMM
 * client helper and luoctl. See `examples/luod/README.md`.
 *
 * @packageDocumentation
 */
export * from "./protocol.js";
export * from "./mapping.js";
export * from "./preflight.js";
export * from "./status.js";
export * from "./barrier.js";
export * from "./handback.js";
export * from "./luod.js";
export * from "./client.js";
export * from "./luoctl.js";
