/**
 * The in-memory shape of a device tree: nodes with raw property values, the memory reservation
 * list and the boot CPU id. These are plain data; {@link encodeFdt} turns them into a blob and
 * {@link decodeFdt} back.
 *
 * @module
 */

/**
 * One node of a device tree.
 *
 * Property values are raw bytes (use the `fdtString`/`fdtU32`/... helpers to build them and the
 * `readFdt*` helpers to interpret them). Map insertion order and `children` order are the order
 * in the blob.
 *
 * @category FDT
 */
export interface FdtNode {
  /** Node name with optional unit address, e.g. `"LUO"` or `"memory@1000"`; `""` for the root. */
  name: string;
  /** Properties by name, in blob order. */
  props: Map<string, Uint8Array>;
  /** Child nodes, in blob order; names are unique among siblings. */
  children: FdtNode[];
}

/**
 * One entry of the memory reservation block.
 *
 * @category FDT
 */
export interface FdtReservation {
  /** Physical start address (u64). */
  address: bigint;
  /**
   * Size in bytes (u64), at least 1: the block's terminator is an entry of size 0 (readers such as
   * libfdt and dtc stop at any size-0 entry), so a size-0 reservation cannot be stored.
   */
  size: bigint;
}

/**
 * A whole flattened device tree: what one blob holds.
 *
 * @category FDT
 */
export interface FdtTree {
  /** The root node; its name is `""`. */
  root: FdtNode;
  /** The memory reservation entries, in blob order (without the terminator). */
  reservations: FdtReservation[];
  /** `boot_cpuid_phys` from the header (u32). */
  bootCpuid: number;
}
