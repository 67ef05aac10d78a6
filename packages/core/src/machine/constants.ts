// Page geometry of the emulated machine (page size, buddy orders, default RAM base) and the
// poison byte that scrubbed memory is filled with.

/**
 * Size of one page frame in bytes (4 KiB, as on x86-64 and the usual arm64 configuration).
 *
 * @category Machine
 */
export const PAGE_SIZE = 4096;

/**
 * log2 of {@link PAGE_SIZE}: `phys >> PAGE_SHIFT` is a page frame number.
 *
 * @category Machine
 */
export const PAGE_SHIFT = 12;

/**
 * Largest allocation order of the page allocator. Order `k` is a block of `2^k` pages, so the
 * orders 0..9 cover 4 KiB … 2 MiB. RAM sizes and the RAM base are multiples of the order-9
 * block size ({@link MAX_ORDER_BYTES}).
 *
 * @category Machine
 */
export const MAX_ORDER = 9;

/**
 * Number of pages in a block of order {@link MAX_ORDER} (512).
 *
 * @category Machine
 */
export const MAX_ORDER_PAGES = 1 << MAX_ORDER;

/**
 * Bytes in a block of order {@link MAX_ORDER} (2 MiB): the granule of RAM size and base.
 *
 * @category Machine
 */
export const MAX_ORDER_BYTES = MAX_ORDER_PAGES * PAGE_SIZE;

/**
 * Default physical address of the first byte of RAM (1 GiB). Never 0: physical address 0 means
 * "none" in the handover ABI.
 *
 * @category Machine
 */
export const DEFAULT_RAM_BASE = 0x4000_0000n;

/**
 * The byte every non-preserved page is filled with when the machine is scrubbed at kexec (and
 * what never-allocated RAM reads as): 0x6b, the kernel's `POISON_FREE`.
 *
 * @category Machine
 */
export const POISON_BYTE = 0x6b;

/**
 * Highest physical address (exclusive) the machine models: the 52-bit physical address space.
 *
 * @category Machine
 */
export const PHYS_ADDR_LIMIT = 1n << 52n;
