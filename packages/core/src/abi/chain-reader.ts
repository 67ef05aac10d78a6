/**
 * Incoming linked block chain: validates a chain handed over by the previous kernel and reads its
 * entries.
 *
 * Every block must be a handed-over range of exactly the chain's block size; the walk rejects a
 * cycle, more than {@link LUO_MAX_BLOCKS} blocks, a block whose count is 0 or above the per-block
 * maximum, an address outside preserved memory, and a block already claimed by another chain
 * read with the same `claimed` map (two chains sharing a block would free it twice) — each as a
 * {@link KernelPanicError} naming the chain, the block index and its physical address. Nothing
 * outside preserved memory is read.
 *
 * @module
 */
import { KernelPanicError } from "../errors.js";
import { PAGE_SIZE } from "../machine/index.js";
import type { KhoIncoming } from "../kho/index.js";
import { BLOCK_HEADER_SIZE, LUO_MAX_BLOCKS, type BlockGeometry } from "./layout.js";

/**
 * Reads entry `index` from `bytes` at `offset`.
 *
 * @category Handover ABI
 */
export type EntryReader<T> = (
  view: DataView,
  bytes: Uint8Array,
  offset: number,
  index: number,
  block: bigint,
) => T;

/**
 * The entries of a chain and the addresses of its blocks (to free them later).
 *
 * @category Handover ABI
 */
export interface ReadChain<T> {
  /** Decoded entries in chain order. */
  readonly entries: T[];
  /** Block addresses in chain order. */
  readonly blocks: bigint[];
}

const hex = (p: bigint): string => `0x${p.toString(16)}`;

/** `<label>: block <index> at <phys>`, built only for a panic message. */
const where = (label: string, index: number, block: bigint): string =>
  `${label}: block ${index} at ${hex(block)}`;

/**
 * Walks the chain starting at `head` (0 = empty) and decodes every entry with `read`.
 * `label` names the chain in panic messages (e.g. `file chain of session "vm-0"`). `claimed`
 * (block address → label of the chain that holds it) is shared by the chains of one handover:
 * a block already in it is a panic, and this chain's blocks are added to it.
 *
 * @category Handover ABI
 */
export function readChain<T>(
  kho: KhoIncoming,
  head: bigint,
  geometry: BlockGeometry,
  label: string,
  read: EntryReader<T>,
  claimed: Map<bigint, string> = new Map(),
): ReadChain<T> {
  const entries: T[] = [];
  const blocks: bigint[] = [];
  const seen = new Set<bigint>();
  const size = geometry.pages * PAGE_SIZE;
  for (let block = head, index = 0; block !== 0n; index++) {
    if (index >= LUO_MAX_BLOCKS) {
      throw new KernelPanicError(
        `${label} has more than ${LUO_MAX_BLOCKS} blocks (${where(label, index, block)})`,
        block,
      );
    }
    if (seen.has(block)) throw new KernelPanicError(`${where(label, index, block)} closes a cycle`, block);
    seen.add(block);
    const owner = claimed.get(block);
    if (owner !== undefined)
      throw new KernelPanicError(`${where(label, index, block)} is also in the ${owner}`, block);
    const order = kho.orderOf(block);
    if (order === undefined || !kho.covers(block, size) || PAGE_SIZE << order !== size) {
      throw new KernelPanicError(
        `${where(label, index, block)} is not a preserved ${geometry.pages}-page block`,
        block,
      );
    }
    const bytes = kho.machine.view(block, size);
    const dv = new DataView(bytes.buffer, bytes.byteOffset, size);
    const count = dv.getBigUint64(8, true);
    if (count === 0n || count > BigInt(geometry.perBlock)) {
      throw new KernelPanicError(
        `${where(label, index, block)} has count ${count} (must be 1..${geometry.perBlock})`,
        block,
      );
    }
    for (let j = 0; j < Number(count); j++) {
      entries.push(read(dv, bytes, BLOCK_HEADER_SIZE + j * geometry.entrySize, entries.length, block));
    }
    blocks.push(block);
    claimed.set(block, label);
    block = dv.getBigUint64(0, true);
  }
  return { entries, blocks };
}
