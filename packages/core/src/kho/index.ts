/**
 * Kexec HandOver: preserved memory, named subtrees and the root FDT (outgoing and incoming).
 *
 * @module
 */
export * from "./format.js";
export * from "./kho.js";
export * from "./incoming.js";
