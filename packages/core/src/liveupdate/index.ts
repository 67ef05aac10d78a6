/**
 * The Live Update Orchestrator: sessions, files, FLBs, registration, reboot, events, locks.
 *
 * @module
 */
export * from "./locks.js";
export * from "./events.js";
export * from "./handler.js";
export * from "./flb.js";
export * from "./preserved-ids.js";
export * from "./registration.js";
export * from "./services.js";
export * from "./file.js";
export * from "./session.js";
export * from "./core.js";
export * from "./ioctl.js";
export * from "./device.js";
export * from "./tracer.js";
