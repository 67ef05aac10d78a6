/**
 * The kernel's VFS model: file objects, processes with fd tables, device nodes, halting.
 *
 * @module
 */
export * from "./file.js";
export * from "./context.js";
export * from "./process.js";
export * from "./unix-socket.js";
