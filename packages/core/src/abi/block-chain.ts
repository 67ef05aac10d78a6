/**
 * Outgoing linked block chain: the storage for session or file records in preserved memory.
 *
 * The chain is grown while sessions/files are added ({@link BlockChain.grow}) and shrunk when they
 * go ({@link BlockChain.shrink}); entries are written as they are added
 * ({@link BlockChain.writeEntry}), zeroed when removed ({@link BlockChain.zeroEntry}) and moved
 * down to close holes ({@link BlockChain.moveEntry}). The reboot path sets the block counts
 * ({@link BlockChain.setCounts}) and writes only what changed since the entries were added: the
 * session records' seal slides records over holes and writes `files`/`nfiles` of the sessions
 * that have files, and a file set's freeze rewrites the records whose data `freeze` changed.
 * Blocks are linked through their `next` field at growth time. Invariant kept by callers:
 * blocks = ⌈entries / perBlock⌉, so an outgoing chain never carries an empty block (the kernel
 * can leave one behind after removals; see docs/differences.md). Errors: `ENOSPC` beyond
 * {@link LUO_MAX_BLOCKS}, `ENOMEM` when pages run out; a failed grow removes the blocks it added.
 *
 * @module
 */
import { LiveUpdateError } from "../errors.js";
import { PAGE_SIZE } from "../machine/index.js";
import type { Kho, PreservedBlock } from "../kho/index.js";
import { BLOCK_HEADER_SIZE, LUO_MAX_BLOCKS, type BlockGeometry } from "./layout.js";

/**
 * Writes entry `index` into `view` at byte `offset`. The entry's space holds what was written
 * there before (zero for a new entry), so a writer may update single fields.
 *
 * @category Handover ABI
 */
export type EntryWriter = (view: DataView, bytes: Uint8Array, offset: number, index: number) => void;

/**
 * A chain of preserved blocks owned by the outgoing kernel.
 *
 * @category Handover ABI
 */
export class BlockChain {
  private readonly blocks: PreservedBlock[] = [];
  private readonly views: DataView[] = [];

  /**
   * @param kho - allocator of preserved memory
   * @param geometry - block size and entry size
   */
  constructor(
    private readonly kho: Kho,
    readonly geometry: BlockGeometry,
  ) {}

  /** Number of blocks. */
  get length(): number {
    return this.blocks.length;
  }

  /** Entries the chain can hold now. */
  get capacity(): number {
    return this.blocks.length * this.geometry.perBlock;
  }

  /** Physical address of the first block, 0 when empty. */
  get head(): bigint {
    return this.blocks.length === 0 ? 0n : this.blocks[0]!.phys;
  }

  /** Makes room for `target` entries. `ENOSPC` above the block limit, `ENOMEM`; all-or-nothing. */
  grow(target: number): void {
    const { perBlock, pages, what } = this.geometry;
    const need = Math.ceil(target / perBlock);
    if (need <= this.blocks.length) return;
    if (need > LUO_MAX_BLOCKS) {
      throw new LiveUpdateError(
        "ENOSPC",
        `${what} chain would need ${need} blocks; the limit is ${LUO_MAX_BLOCKS}`,
      );
    }
    const before = this.blocks.length;
    try {
      while (this.blocks.length < need) {
        const block = this.kho.allocPreserve(pages * PAGE_SIZE);
        const dv = new DataView(block.view.buffer, block.view.byteOffset, block.view.byteLength);
        const last = this.views[this.views.length - 1];
        if (last) last.setBigUint64(0, block.phys, true);
        this.blocks.push(block);
        this.views.push(dv);
      }
    } catch (e) {
      this.shrinkTo(before);
      throw e;
    }
  }

  /** Frees trailing blocks no longer needed for `target` entries. */
  shrink(target: number): void {
    this.shrinkTo(Math.ceil(target / this.geometry.perBlock));
  }

  private shrinkTo(blocks: number): void {
    while (this.blocks.length > blocks) {
      const block = this.blocks.pop()!;
      this.views.pop();
      this.kho.unpreserveFree(block.phys);
      const last = this.views[this.views.length - 1];
      if (last) last.setBigUint64(0, 0n, true);
    }
  }

  /**
   * Writes entry `index` in place (the chain must already hold it). Callers write each record
   * when it is added; at reboot only the fields that changed since are written (a session's
   * `files`/`nfiles`, a file whose `freeze` changed its data) before {@link BlockChain.setCounts}.
   */
  writeEntry(index: number, write: EntryWriter): void {
    const { perBlock, entrySize } = this.geometry;
    const b = this.blockOf(index);
    write(this.views[b]!, this.blocks[b]!.view, BLOCK_HEADER_SIZE + (index % perBlock) * entrySize, index);
  }

  /**
   * Sets every block's count for `count` entries written with {@link BlockChain.writeEntry}
   * (reboot path). `ENOSPC` if the chain does not have exactly the blocks `count` needs.
   */
  setCounts(count: number): void {
    const { perBlock, what } = this.geometry;
    if (Math.ceil(count / perBlock) !== this.blocks.length) {
      throw new LiveUpdateError(
        "ENOSPC",
        `${what} chain has ${this.blocks.length} blocks for ${count} entries`,
      );
    }
    for (let b = 0; b < this.blocks.length; b++) {
      this.views[b]!.setBigUint64(8, BigInt(Math.min(perBlock, count - b * perBlock)), true);
    }
  }

  /** Zeroes every block's count (rollback of {@link BlockChain.setCounts}); keeps the entries. */
  clearCounts(): void {
    for (const dv of this.views) dv.setBigUint64(8, 0n, true);
  }

  /** Zeroes entry `index` (the chain must hold it). */
  zeroEntry(index: number): void {
    const { perBlock, entrySize } = this.geometry;
    const off = BLOCK_HEADER_SIZE + (index % perBlock) * entrySize;
    this.slot(index).fill(0, off, off + entrySize);
  }

  /** Copies entry `from` over entry `to` and zeroes `from` (both must be in the chain). */
  moveEntry(from: number, to: number): void {
    const { perBlock, entrySize } = this.geometry;
    const src = BLOCK_HEADER_SIZE + (from % perBlock) * entrySize;
    const dst = BLOCK_HEADER_SIZE + (to % perBlock) * entrySize;
    const fromBytes = this.slot(from);
    this.slot(to).set(fromBytes.subarray(src, src + entrySize), dst);
    fromBytes.fill(0, src, src + entrySize);
  }

  /** The bytes of the block holding entry `index`. */
  private slot(index: number): Uint8Array {
    return this.blocks[this.blockOf(index)]!.view;
  }

  /** The block holding entry `index`; `ENOSPC` if the chain does not hold it. */
  private blockOf(index: number): number {
    const { perBlock, what } = this.geometry;
    const b = Math.floor(index / perBlock);
    if (index < 0 || b >= this.blocks.length) {
      throw new LiveUpdateError("ENOSPC", `${what} chain has no slot ${index} (capacity ${this.capacity})`);
    }
    return b;
  }

  /** Unpreserves and frees every block. */
  destroy(): void {
    this.shrinkTo(0);
  }
}
