/**
 * A KHO-preserved "vmalloc" area (`kho_preserve_vmalloc` / `kho_restore_vmalloc`): an array that
 * may be larger than one contiguous block, stored in separate preserved pages whose addresses are
 * listed in a chain of one-page chunks, described by a 16-byte `struct kho_vmalloc` (layout in
 * `layout.ts`). The memfd handler keeps its folio records in one.
 *
 * Outgoing: {@link preserveVmalloc} allocates and preserves the data pages and the chunk chain
 * (all or nothing, `ENOMEM`), {@link unpreserveVmalloc} undoes it. Incoming: {@link parseVmalloc}
 * walks the chain from the descriptor alone — bounded by the page count, every page checked by
 * the caller's `owns` — and fails with `EINVAL` on anything malformed.
 *
 * @module
 */
import { LiveUpdateError, MAX_ORDER, PAGE_SIZE, type Kho, type Machine } from "@luo/core";
import { KHO_VMALLOC, KHO_VMALLOC_ALLOC, KHO_VMALLOC_CHUNK, KHO_VMALLOC_CHUNK_ENTRIES } from "./layout.js";

/** The fields of a `struct kho_vmalloc`. */
export interface KhoVmalloc {
  /** Physical address of the first chunk (0 for an empty area). */
  readonly first: bigint;
  /** Pages of data (a multiple of `2^order`). */
  readonly totalPages: number;
  /** `KHO_VMALLOC_*` flags. */
  readonly flags: number;
  /** Order of every data block. */
  readonly order: number;
}

/** The pages of a vmalloc area. */
export interface VmallocArea {
  /** The descriptor to store in the owner's record. */
  readonly descriptor: KhoVmalloc;
  /** Physical addresses of the data blocks, in array order. */
  readonly pages: readonly bigint[];
  /** Physical addresses of the chunk pages, in chain order. */
  readonly chunks: readonly bigint[];
}

/** The descriptor of an empty area (all zero). */
export const EMPTY_KHO_VMALLOC: KhoVmalloc = { first: 0n, totalPages: 0, flags: 0, order: 0 };

/** Writes `desc` as a `struct kho_vmalloc` at `offset` of `dv`. */
export function writeKhoVmalloc(dv: DataView, offset: number, desc: KhoVmalloc): void {
  dv.setBigUint64(offset + KHO_VMALLOC.first, desc.first, true);
  dv.setUint32(offset + KHO_VMALLOC.totalPages, desc.totalPages, true);
  dv.setUint16(offset + KHO_VMALLOC.flags, desc.flags, true);
  dv.setUint16(offset + KHO_VMALLOC.order, desc.order, true);
}

/** Reads a `struct kho_vmalloc` at `offset` of `dv`. */
export function readKhoVmalloc(dv: DataView, offset: number): KhoVmalloc {
  return {
    first: dv.getBigUint64(offset + KHO_VMALLOC.first, true),
    totalPages: dv.getUint32(offset + KHO_VMALLOC.totalPages, true),
    flags: dv.getUint16(offset + KHO_VMALLOC.flags, true),
    order: dv.getUint16(offset + KHO_VMALLOC.order, true),
  };
}

/**
 * Allocates a preserved, zeroed area of at least `bytes` bytes in order-0 pages, with its chunk
 * chain written. `bytes` must be positive. Errors: `ENOMEM` (nothing stays allocated).
 */
export function preserveVmalloc(kho: Kho, bytes: number): VmallocArea {
  const pageCount = Math.ceil(bytes / PAGE_SIZE);
  const chunkCount = Math.ceil(pageCount / KHO_VMALLOC_CHUNK_ENTRIES);
  const pages: bigint[] = [];
  const chunks: bigint[] = [];
  try {
    for (let i = 0; i < chunkCount; i++) chunks.push(kho.allocPreserve(PAGE_SIZE).phys);
    for (let i = 0; i < pageCount; i++) pages.push(kho.allocPreserve(PAGE_SIZE).phys);
  } catch (e) {
    for (const p of [...pages, ...chunks]) kho.unpreserveFree(p);
    throw e;
  }
  const machine = kho.machine;
  for (let c = 0; c < chunkCount; c++) {
    const page = machine.view(chunks[c]!, PAGE_SIZE);
    const dv = new DataView(page.buffer, page.byteOffset, PAGE_SIZE);
    dv.setBigUint64(KHO_VMALLOC_CHUNK.next, c + 1 < chunkCount ? chunks[c + 1]! : 0n, true);
    const from = c * KHO_VMALLOC_CHUNK_ENTRIES;
    const to = Math.min(pageCount, from + KHO_VMALLOC_CHUNK_ENTRIES);
    for (let i = from; i < to; i++) dv.setBigUint64(KHO_VMALLOC_CHUNK.phys + (i - from) * 8, pages[i]!, true);
  }
  return {
    descriptor: { first: chunks[0]!, totalPages: pageCount, flags: KHO_VMALLOC_ALLOC, order: 0 },
    pages,
    chunks,
  };
}

/** Unpreserves and frees an area made by {@link preserveVmalloc}. */
export function unpreserveVmalloc(kho: Kho, area: VmallocArea): void {
  for (const p of area.pages) kho.unpreserveFree(p);
  for (const c of area.chunks) kho.unpreserveFree(c);
}

/**
 * Walks the chunk chain of `desc` in `machine`. `owns(phys, order)` must say whether a block of
 * `2^order` pages at `phys` is memory the caller may read (e.g. handed over and not restored).
 * Errors (`EINVAL`, naming `what`): no first chunk, a bad order, a chunk or data block not owned,
 * a page listed twice (or a cycle), a chain longer than the page count needs, a page count that
 * disagrees with the chain.
 */
export function parseVmalloc(
  machine: Machine,
  desc: KhoVmalloc,
  owns: (phys: bigint, order: number) => boolean,
  what: string,
): VmallocArea {
  const hex = (p: bigint): string => `0x${p.toString(16)}`;
  const bad = (msg: string): never => {
    throw new LiveUpdateError("EINVAL", `${what}: ${msg}`);
  };
  if (desc.first === 0n) bad("the vmalloc descriptor has no first chunk");
  if (desc.order > MAX_ORDER) bad(`vmalloc order ${desc.order} exceeds ${MAX_ORDER}`);
  const perBlock = 1 << desc.order;
  if (desc.totalPages === 0 || desc.totalPages % perBlock !== 0) {
    bad(`vmalloc total_pages ${desc.totalPages} is not a positive multiple of ${perBlock}`);
  }
  const blocks = desc.totalPages / perBlock;
  const maxChunks = Math.ceil(blocks / KHO_VMALLOC_CHUNK_ENTRIES);
  const pages: bigint[] = [];
  const chunks: bigint[] = [];
  const seen = new Set<bigint>();
  const claim = (phys: bigint, name: string): void => {
    if (seen.has(phys)) bad(`${name} at ${hex(phys)} is listed twice (or the chain has a cycle)`);
    seen.add(phys);
  };
  for (let chunk = desc.first; chunk !== 0n;) {
    if (chunks.length >= maxChunks) bad(`the chunk chain is longer than ${maxChunks} chunk(s)`);
    claim(chunk, `chunk ${chunks.length}`);
    if (!owns(chunk, 0)) bad(`chunk ${chunks.length} at ${hex(chunk)} is not handed-over memory`);
    const page = machine.read(chunk, PAGE_SIZE);
    const dv = new DataView(page.buffer, page.byteOffset, PAGE_SIZE);
    for (let i = 0; i < KHO_VMALLOC_CHUNK_ENTRIES; i++) {
      const phys = dv.getBigUint64(KHO_VMALLOC_CHUNK.phys + i * 8, true);
      if (phys === 0n) break;
      if (pages.length >= blocks) bad(`the chunks list more than ${blocks} block(s)`);
      claim(phys, `data block ${pages.length}`);
      if (!owns(phys, desc.order))
        bad(`data block ${pages.length} at ${hex(phys)} is not handed-over memory`);
      pages.push(phys);
    }
    chunks.push(chunk);
    chunk = dv.getBigUint64(KHO_VMALLOC_CHUNK.next, true);
  }
  if (pages.length !== blocks) bad(`the chunks list ${pages.length} block(s), the descriptor says ${blocks}`);
  return { descriptor: desc, pages, chunks };
}
