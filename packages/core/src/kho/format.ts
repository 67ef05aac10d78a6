/**
 * Constants of the KHO root format shared by the outgoing writer and the incoming reader.
 *
 * Root FDT: `/` `compatible = "kho-v1"`, `preserved-memory-map = <u64 phys>`; one subnode per
 * subtree with `fdt = <u64 phys>`. The map is a chain of pages, each `{u64 next; u64 count}`
 * followed by `count` entries `{u64 phys; u32 order; u32 reserved}`.
 *
 * @module
 */
import { PAGE_SHIFT, PAGE_SIZE } from "../machine/index.js";

/**
 * Root compatible string.
 *
 * @category KHO
 */
export const KHO_COMPATIBLE = "kho-v1";
/**
 * Bytes of a map page header `{next, count}`.
 *
 * @category KHO
 */
export const MAP_HEADER_SIZE = 16;
/**
 * Bytes of a map entry `{phys, order, reserved}`.
 *
 * @category KHO
 */
export const MAP_ENTRY_SIZE = 16;
/**
 * Entries per map page: (4096 − 16) / 16 = 255.
 *
 * @category KHO
 */
export const MAP_ENTRIES_PER_PAGE = (PAGE_SIZE - MAP_HEADER_SIZE) / MAP_ENTRY_SIZE;
/**
 * Most preserved-memory map pages accepted on restore (a longer chain is a kernel panic).
 *
 * @category KHO
 */
export const KHO_MAX_MAP_PAGES = 10000;
/**
 * Largest root FDT accepted on restore.
 *
 * @category KHO
 */
export const KHO_MAX_ROOT_SIZE = 1 << 21;

const PAGE_SHIFT_BIG = BigInt(PAGE_SHIFT);

/**
 * Page frame number of the page containing `phys` (internal: not re-exported).
 *
 * @category KHO
 */
export function pfnOf(phys: bigint): number {
  return Number(phys >> PAGE_SHIFT_BIG);
}
