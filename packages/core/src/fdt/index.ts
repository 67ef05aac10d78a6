/**
 * Flattened device trees (devicetree specification v17): the in-memory tree, the blob writer and
 * the validating reader, value and name helpers. KHO and LUO hand their state to the next kernel
 * in these blobs.
 *
 * @module
 */
export { FDT_HEADER_SIZE, FDT_LAST_COMP_VERSION, FDT_MAGIC, FDT_MAX_DEPTH, FDT_VERSION } from "./format.js";
export type { FdtNode, FdtReservation, FdtTree } from "./types.js";
export { isValidFdtNodeName, isValidFdtPropertyName } from "./names.js";
export {
  fdtString,
  fdtStringList,
  fdtU32,
  fdtU64,
  readFdtString,
  readFdtStringList,
  readFdtU32,
  readFdtU64,
} from "./values.js";
export { fdtNode, fdtTree, findFdtNode, getProp } from "./tree.js";
export type { FdtPropsInit, FdtTreeOptions } from "./tree.js";
export { fdtTotalSize, peekFdtHeader } from "./header.js";
export type { FdtHeader } from "./header.js";
export { encodeFdt } from "./encode.js";
export { decodeFdt } from "./decode.js";
