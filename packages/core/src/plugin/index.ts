/**
 * The plugin API and DI tokens.
 *
 * @module
 */
export * from "./tokens.js";
export * from "./plugin.js";
