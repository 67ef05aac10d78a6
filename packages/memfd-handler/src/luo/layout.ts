/**
 * Byte layout of the memfd handover ABI, `"memfd-v2"` (Linux `include/linux/kho/abi/memfd.h`
 * with the seals patch, and `struct kho_vmalloc` from `include/linux/kho/abi/kexec_handover.h`).
 * Little-endian, packed, PAGE_SIZE 4096. Offsets are written out; sizes are computed from the
 * last field. Any change to this layout needs a new compatible string.
 *
 * ```text
 * memfd_luo_ser (48 B)        0 u64 pos | 8 u64 size | 16 u32 seals | 20 u32 flags (0)
 *                            24 u64 nr_folios | 32 struct kho_vmalloc folios (16 B)
 * kho_vmalloc (16 B)          0 u64 first (phys of the first chunk) | 8 u32 total_pages
 *                            12 u16 flags | 14 u16 order
 * kho_vmalloc_chunk (4 KiB)   0 u64 next | 8 u64 phys[511] (zero-terminated when not full)
 * memfd_luo_folio_ser (16 B)  0 u64 pfn:52 (low bits) | flags:12 (high bits) | 8 u64 index
 * ```
 *
 * The folio records form an array spread over the pages the chunks list (each a `2^order`-page
 * block; order 0 here), 256 records per page. A record with pfn 0 is an empty slot. A zero-size
 * memfd has `nr_folios = 0` and an all-zero `folios` descriptor.
 *
 * @module
 */
import { PAGE_SIZE } from "@luo/core";
import { F_ALL_SEALS } from "../seals.js";

/** Compatible string of the memfd handler: v2 carries seals. */
export const MEMFD_LUO_COMPATIBLE = "memfd-v2";

/** Field offsets of `struct kho_vmalloc`: `u64 first; u32 total_pages; u16 flags; u16 order`. */
export const KHO_VMALLOC = { first: 0, totalPages: 8, flags: 12, order: 14 } as const;
/** Bytes of `struct kho_vmalloc` (16). */
export const KHO_VMALLOC_SIZE = KHO_VMALLOC.order + 2;
/** `kho_vmalloc.flags` bit: the area was made by `vmalloc()` (`KHO_VMALLOC_ALLOC`). */
export const KHO_VMALLOC_ALLOC = 0x0001;

/** Field offsets of `struct kho_vmalloc_chunk` (one page): `u64 next; u64 phys[]`. */
export const KHO_VMALLOC_CHUNK = { next: 0, phys: 8 } as const;
/** Entries of `phys[]` per chunk: `(PAGE_SIZE - 8) / 8` = 511. */
export const KHO_VMALLOC_CHUNK_ENTRIES = (PAGE_SIZE - KHO_VMALLOC_CHUNK.phys) / 8;

/**
 * Field offsets of `struct memfd_luo_ser`:
 * `u64 pos; u64 size; u32 seals; u32 flags; u64 nr_folios; struct kho_vmalloc folios`.
 */
export const MEMFD_LUO_SER = { pos: 0, size: 8, seals: 16, flags: 20, nrFolios: 24, folios: 32 } as const;
/** Bytes of `struct memfd_luo_ser` (48). */
export const MEMFD_LUO_SER_SIZE = MEMFD_LUO_SER.folios + KHO_VMALLOC_SIZE;

/** Field offsets of `struct memfd_luo_folio_ser`: `u64 pfn:52, flags:12; u64 index`. */
export const MEMFD_LUO_FOLIO_SER = { pfnFlags: 0, index: 8 } as const;
/** Bytes of `struct memfd_luo_folio_ser` (16). */
export const MEMFD_LUO_FOLIO_SER_SIZE = MEMFD_LUO_FOLIO_SER.index + 8;
/** Width of the pfn bitfield; the 12 flag bits sit above it. */
export const MEMFD_LUO_FOLIO_PFN_BITS = 52;
/** Folio records per page of the array (256). */
export const MEMFD_LUO_FOLIOS_PER_PAGE = PAGE_SIZE / MEMFD_LUO_FOLIO_SER_SIZE;

/** Folio flag: the folio holds data from the user (every preserved folio is marked dirty). */
export const MEMFD_LUO_FOLIO_DIRTY = 1 << 0;
/** Folio flag: the folio is zeroed/initialised (every preserved folio is marked up to date). */
export const MEMFD_LUO_FOLIO_UPTODATE = 1 << 1;

/** The seals this version can carry (`MEMFD_LUO_ALL_SEALS`); others are `EOPNOTSUPP`. */
export const MEMFD_LUO_ALL_SEALS = F_ALL_SEALS;
