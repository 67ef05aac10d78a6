/**
 * The LUO handover ABI: layouts, block chains, outgoing writer and incoming reader.
 *
 * @module
 */
export * from "./layout.js";
export * from "./strings.js";
export * from "./block-chain.js";
export * from "./session-records.js";
export * from "./chain-reader.js";
export * from "./luo-outgoing.js";
export * from "./luo-incoming.js";
