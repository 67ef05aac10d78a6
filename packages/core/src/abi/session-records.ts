/**
 * Outgoing session records, written when a session is created rather than at reboot.
 *
 * A session's name never changes, so its `luo_session_ser` record (name, then `files`/`nfiles`)
 * is written into the session block chain by {@link SessionRecords.add}; the reboot path
 * ({@link SessionRecords.seal}) only writes the file-chain fields of the sessions that have files
 * and the block counts, so its cost does not grow with the number of empty sessions.
 *
 * The handover lists sessions in creation order with no gaps, as the kernel's list walk does.
 * Appends keep that order; a closed session's record is zeroed and leaves a hole, and holes are
 * closed by sliding the later records down ({@link SessionRecords.compact}, order kept). Compaction
 * runs at reboot, when holes make up more than half of the used slots (so a closed session's
 * memory is not kept for long, amortized O(1) per close), and before growing fails. Holes at the
 * tail are simply dropped. Each session holds a {@link SessionSlot} whose index compaction updates.
 * Errors: `ENOSPC` beyond the block limit, `ENOMEM`; a failed add changes nothing.
 *
 * @module
 */
import type { Kho } from "../kho/index.js";
import { BlockChain } from "./block-chain.js";
import { SESSION_BLOCKS, SESSION_SER } from "./layout.js";
import { writeSessionName } from "./strings.js";

/**
 * Where one session's record lives; the index moves when records are compacted.
 *
 * @category Handover ABI
 */
export class SessionSlot {
  /** @param index - slot index in the chain */
  constructor(public index: number) {}
}

/**
 * A session with files, as the reboot path writes it.
 *
 * @category Handover ABI
 */
export interface SessionFilesField {
  /** The session's record. */
  readonly slot: SessionSlot;
  /** Physical address of its first file block. */
  readonly filesHead: bigint;
  /** Number of files. */
  readonly fileCount: number;
}

/**
 * The outgoing session records of one kernel, in creation order.
 *
 * @category Handover ABI
 */
export class SessionRecords {
  private readonly chain: BlockChain;
  /** Slot index → its session's slot, or `undefined` for a hole. */
  private readonly slots: (SessionSlot | undefined)[] = [];
  private live = 0;
  /** Lowest hole, `slots.length` when there is none. */
  private firstHole = 0;

  /** @param kho - allocator of preserved memory */
  constructor(kho: Kho) {
    this.chain = new BlockChain(kho, SESSION_BLOCKS);
  }

  /** Physical address of the first block, 0 without sessions. */
  get head(): bigint {
    return this.chain.head;
  }

  /** Number of blocks (holes included until compaction). */
  get blocks(): number {
    return this.chain.length;
  }

  /**
   * Appends the record of a session named `name` (validated by the caller). `ENOSPC` above the
   * block limit, `ENOMEM`; compacts holes away before giving up; nothing changes on failure.
   */
  add(name: string): SessionSlot {
    const index = this.slots.length;
    try {
      this.chain.grow(index + 1);
    } catch (e) {
      if (this.live === this.slots.length) throw e;
      this.compact();
      return this.add(name);
    }
    const slot = new SessionSlot(index);
    this.chain.writeEntry(index, (_dv, bytes, off) => writeSessionName(bytes, off + SESSION_SER.name, name));
    this.slots.push(slot);
    this.live++;
    if (this.firstHole === index) this.firstHole = index + 1;
    return slot;
  }

  /** Removes a session's record (cannot fail): zeroed, tail holes dropped, blocks freed. */
  remove(slot: SessionSlot): void {
    const index = slot.index;
    if (this.slots[index] !== slot) return;
    this.chain.zeroEntry(index);
    this.slots[index] = undefined;
    this.live--;
    if (index < this.firstHole) this.firstHole = index;
    while (this.slots.length > 0 && this.slots[this.slots.length - 1] === undefined) this.slots.pop();
    if (this.firstHole > this.slots.length) this.firstHole = this.slots.length;
    if ((this.slots.length - this.live) * 2 > this.slots.length) this.compact();
    else this.chain.shrink(this.slots.length);
  }

  /** Slides every record after the first hole down over the holes (order kept); frees blocks. */
  compact(): void {
    let to = this.firstHole;
    for (let from = this.firstHole; from < this.slots.length; from++) {
      const slot = this.slots[from];
      if (slot === undefined) continue;
      this.chain.moveEntry(from, to);
      slot.index = to;
      this.slots[to++] = slot;
    }
    this.slots.length = to;
    this.firstHole = to;
    this.chain.shrink(to);
  }

  /**
   * Reboot path: closes the holes, writes `files`/`nfiles` of the sessions that have files and
   * the block counts. Allocates nothing and cannot fail; undone by {@link SessionRecords.unseal}.
   */
  seal(withFiles: readonly SessionFilesField[]): void {
    this.compact();
    for (const s of withFiles) {
      this.chain.writeEntry(s.slot.index, (dv, _bytes, off) => {
        dv.setBigUint64(off + SESSION_SER.files, s.filesHead, true);
        dv.setBigUint64(off + SESSION_SER.nfiles, BigInt(s.fileCount), true);
      });
    }
    this.chain.setCounts(this.live);
  }

  /** Undoes {@link SessionRecords.seal} for the same sessions (a failed reboot). */
  unseal(withFiles: readonly SessionFilesField[]): void {
    for (const s of withFiles) {
      if (this.slots[s.slot.index] !== s.slot) continue;
      this.chain.writeEntry(s.slot.index, (dv, _bytes, off) => {
        dv.setBigUint64(off + SESSION_SER.files, 0n, true);
        dv.setBigUint64(off + SESSION_SER.nfiles, 0n, true);
      });
    }
    this.chain.clearCounts();
  }

  /** Unpreserves and frees every block. */
  destroy(): void {
    this.chain.destroy();
    this.slots.length = 0;
    this.live = 0;
    this.firstHole = 0;
  }
}
