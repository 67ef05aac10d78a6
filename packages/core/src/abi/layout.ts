/**
 * Byte layout of the LUO handover ABI: compatible strings, record sizes and offsets,
 * block geometry. Everything is little-endian and packed; PAGE_SIZE is 4096.
 *
 * @module
 */
import { PAGE_SIZE } from "../machine/index.js";

/**
 * Name of the KHO subtree holding the LUO FDT.
 *
 * @category Handover ABI
 */
export const LUO_KHO_NAME = "LUO";
/**
 * Root compatible of the LUO FDT.
 *
 * @category Handover ABI
 */
export const LUO_COMPATIBLE = "luo-v1";
/**
 * Compatible of the `/luo-session` node.
 *
 * @category Handover ABI
 */
export const LUO_SESSION_COMPATIBLE = "luo-session-v4";
/**
 * Compatible of the `/luo-flb` node.
 *
 * @category Handover ABI
 */
export const LUO_FLB_COMPATIBLE = "luo-flb-v1";

/**
 * Bytes of `char name[64]` in a session record (63 usable + NUL).
 *
 * @category Handover ABI
 */
export const SESSION_NAME_SIZE = 64;
/**
 * Bytes of `char compatible[48]` in file and FLB records (47 usable + NUL).
 *
 * @category Handover ABI
 */
export const COMPATIBLE_SIZE = 48;

/**
 * Bytes of a block header `{u64 next; u64 count}`.
 *
 * @category Handover ABI
 */
export const BLOCK_HEADER_SIZE = 16;
/**
 * Upper bound of blocks per chain (`LUO_MAX_BLOCKS`).
 *
 * @category Handover ABI
 */
export const LUO_MAX_BLOCKS = 10000;

/**
 * `luo_session_ser`: `char name[64]; u64 files; u64 nfiles` = 80 bytes.
 *
 * @category Handover ABI
 */
export const SESSION_SER = { size: 80, name: 0, files: 64, nfiles: 72 } as const;
/**
 * `luo_file_ser`: `char compatible[48]; u64 data; u64 token` = 64 bytes.
 *
 * @category Handover ABI
 */
export const FILE_SER = { size: 64, compatible: 0, data: 48, token: 56 } as const;
/**
 * `luo_flb_ser`: `char name[48]; u64 data; u64 count` = 64 bytes.
 *
 * @category Handover ABI
 */
export const FLB_SER = { size: 64, name: 0, data: 48, count: 56 } as const;

/**
 * Geometry of one kind of linked block chain.
 *
 * @category Handover ABI
 */
export interface BlockGeometry {
  /** What the chain holds, for messages (`session`, `file`). */
  readonly what: string;
  /** Pages per block. */
  readonly pages: number;
  /** Bytes per entry. */
  readonly entrySize: number;
  /** Entries per block: (pages × 4096 − 16) / entrySize. */
  readonly perBlock: number;
}

function geometry(what: string, pages: number, entrySize: number): BlockGeometry {
  return {
    what,
    pages,
    entrySize,
    perBlock: Math.floor((pages * PAGE_SIZE - BLOCK_HEADER_SIZE) / entrySize),
  };
}

/**
 * Session blocks: 16 pages, (65536 − 16) / 80 = 819 sessions each.
 *
 * @category Handover ABI
 */
export const SESSION_BLOCKS = geometry("session", 16, SESSION_SER.size);
/**
 * File blocks: 2 pages, 127 files each.
 *
 * @category Handover ABI
 */
export const FILE_BLOCKS = geometry("file", 2, FILE_SER.size);

/**
 * FLB area: one page, header `{u64 pgcnt = 1; u64 count}` then at most 63 records.
 *
 * @category Handover ABI
 */
export const FLB_AREA = {
  pages: 1,
  headerSize: 16,
  max: Math.floor((PAGE_SIZE - 16) / FLB_SER.size),
} as const;
