/**
 * Inspecting a pending handover (the library side of `luo inspect`).
 *
 * @module
 */
export * from "./inspect.js";
