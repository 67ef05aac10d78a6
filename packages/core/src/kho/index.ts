/**
 * Kexec HandOver: preserved memory, named subtrees and the root FDT (outgoing and incoming).
 *
 * @module
 */
export {
  KHO_COMPATIBLE,
  KHO_MAX_MAP_PAGES,
  KHO_MAX_ROOT_SIZE,
  MAP_ENTRIES_PER_PAGE,
  MAP_ENTRY_SIZE,
  MAP_HEADER_SIZE,
} from "./format.js";
export { orderForSize, Kho, type PreservedBlock } from "./kho.js";
export { KhoIncoming } from "./incoming.js";
