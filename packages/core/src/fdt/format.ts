/**
 * Wire-format constants of the flattened device tree (devicetree specification, version 17):
 * the header magic and versions, the header field offsets, the structure-block tokens and the
 * limits this project enforces (nesting depth). Everything here is big-endian on the wire.
 *
 * @module
 */

/**
 * The FDT header magic, `0xd00dfeed`, stored big-endian in the first four bytes.
 *
 * @category FDT
 */
export const FDT_MAGIC = 0xd00dfeed;

/**
 * The version this project writes (`version` field of the header).
 *
 * @category FDT
 */
export const FDT_VERSION = 17;

/**
 * The oldest version a blob written here is compatible with (`last_comp_version`).
 *
 * @category FDT
 */
export const FDT_LAST_COMP_VERSION = 16;

/**
 * Size in bytes of a version-17 header (ten big-endian u32 fields).
 *
 * @category FDT
 */
export const FDT_HEADER_SIZE = 40;

/**
 * Largest u32 cell value.
 *
 * @category FDT
 */
export const U32_MAX = 0xffff_ffff;

/**
 * Largest u64 value.
 *
 * @category FDT
 */
export const U64_MAX = (1n << 64n) - 1n;

/**
 * Deepest nesting accepted by the writer and the reader: the root is at depth 0, its children at
 * depth 1, and no node may sit deeper than this.
 *
 * @category FDT
 */
export const FDT_MAX_DEPTH = 64;

/**
 * Longest node name (without unit address) and property name the specification allows.
 *
 * @category FDT
 */
export const FDT_MAX_NAME_LENGTH = 31;

/**
 * Size of one memory reservation entry: `{u64 address; u64 size}`.
 *
 * @category FDT
 */
export const FDT_RESERVE_ENTRY_SIZE = 16;

/**
 * Structure-block token starting a node; followed by the NUL-terminated name, padded to 4.
 *
 * @category FDT
 */
export const FDT_BEGIN_NODE = 0x1;
/**
 * Structure-block token ending a node.
 *
 * @category FDT
 */
export const FDT_END_NODE = 0x2;
/**
 * Structure-block token of a property: `{u32 len; u32 nameoff}` then `len` bytes, padded to 4.
 *
 * @category FDT
 */
export const FDT_PROP = 0x3;
/**
 * Structure-block token to be ignored.
 *
 * @category FDT
 */
export const FDT_NOP = 0x4;
/**
 * Structure-block token ending the structure block.
 *
 * @category FDT
 */
export const FDT_END = 0x9;

/**
 * Byte offsets of the header fields (each a big-endian u32).
 *
 * @category FDT
 */
export const FDT_HEADER_FIELD = {
  magic: 0,
  totalSize: 4,
  offDtStruct: 8,
  offDtStrings: 12,
  offMemRsvmap: 16,
  version: 20,
  lastCompVersion: 24,
  bootCpuidPhys: 28,
  sizeDtStrings: 32,
  sizeDtStruct: 36,
} as const;

/**
 * Rounds a non-negative byte count up to a multiple of 4 (structure-block alignment).
 *
 * @category FDT
 */
export function align4(n: number): number {
  return n + ((4 - (n % 4)) % 4);
}

/**
 * Path of the child `name` of the node at `parent` (`/` is the root).
 *
 * @category FDT
 */
export function childPath(parent: string, name: string): string {
  return parent === "/" ? `/${name}` : `${parent}/${name}`;
}
