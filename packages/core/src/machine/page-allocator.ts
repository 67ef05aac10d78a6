// The buddy page allocator: per-page allocation state (allocated / block head / free-block head /
// preserved) in typed arrays, doubly linked free lists per order, and the list of live allocated
// blocks. Works on page indices relative to the start of RAM (numbers, never bigint); the Machine
// validates arguments and translates physical addresses.

import { MAX_ORDER } from "./constants.js";

/**
 * Page belongs to an allocated block.
 *
 * @category Machine
 */
export const PG_ALLOCATED = 1;
/**
 * Page is the first page of an allocated block (its order is in `order[]`).
 *
 * @category Machine
 */
export const PG_HEAD = 2;
/**
 * Page is the first page of a free block on a free list (its order is in `order[]`).
 *
 * @category Machine
 */
export const PG_FREE_HEAD = 4;
/**
 * Page is marked preserved for the handover (only ever set on allocated pages).
 *
 * @category Machine
 */
export const PG_PRESERVED = 8;

const NONE = -1;

/**
 * Buddy allocator over `totalPages` page frames (a multiple of `2^MAX_ORDER`), with per-page
 * state in typed arrays. All operations are O(MAX_ORDER) plus O(pages of the block) for the
 * per-page flags. Callers validate arguments; methods here assume valid input.
 *
 * @category Machine
 */
export class PageAllocator {
  /** Number of page frames managed. */
  readonly totalPages: number;
  /** Per-page `PG_*` flags. */
  readonly flags: Uint8Array;
  /** Block order, meaningful on pages with `PG_HEAD` or `PG_FREE_HEAD`. */
  readonly order: Int8Array;
  /** Pages currently on free lists. */
  freePages: number;
  /** Pages currently in allocated blocks. */
  allocatedPages = 0;
  /** Pages currently marked preserved. */
  preservedPages = 0;

  readonly #next: Int32Array;
  readonly #prev: Int32Array;
  readonly #freeHead = new Int32Array(MAX_ORDER + 1);
  readonly #live: Int32Array;
  readonly #livePos: Int32Array;
  #liveCount = 0;

  /** @param totalPages - number of page frames, a positive multiple of `2^MAX_ORDER` */
  constructor(totalPages: number) {
    this.totalPages = totalPages;
    this.flags = new Uint8Array(totalPages);
    this.order = new Int8Array(totalPages);
    this.#next = new Int32Array(totalPages);
    this.#prev = new Int32Array(totalPages);
    this.#live = new Int32Array(totalPages);
    this.#livePos = new Int32Array(totalPages);
    this.freePages = 0;
    this.reset([]);
  }

  /** Head page indices of all live allocated blocks (a copy, in no particular order). */
  liveBlocks(): Int32Array {
    return this.#live.slice(0, this.#liveCount);
  }

  /**
   * Allocates a naturally aligned block of `2^order` pages.
   *
   * @returns the head page index, or -1 when no block is available
   */
  alloc(order: number): number {
    let k = order;
    while (k <= MAX_ORDER && this.#freeHead[k] === NONE) k++;
    if (k > MAX_ORDER) return NONE;
    const pfn = this.#freeHead[k]!;
    this.#unlinkFree(pfn, k);
    while (k > order) {
      k--;
      this.#pushFree(pfn + (1 << k), k);
    }
    this.#setAllocated(pfn, order);
    return pfn;
  }

  /** True when `pfn` is the head of a live allocated block of exactly `order`. */
  isHead(pfn: number, order: number): boolean {
    return (this.flags[pfn]! & PG_HEAD) !== 0 && this.order[pfn] === order;
  }

  /** Frees the allocated block headed by `pfn` (caller checked `isHead`); clears preserved marks. */
  free(pfn: number): void {
    const order = this.order[pfn]!;
    this.#removeLive(pfn);
    this.#release(pfn, order);
  }

  /** True when every page in `[first, first + count)` is allocated. */
  allAllocated(first: number, count: number): boolean {
    const f = this.flags;
    for (let p = first, end = first + count; p < end; p++) if ((f[p]! & PG_ALLOCATED) === 0) return false;
    return true;
  }

  /** Number of preserved pages in `[first, first + count)`. */
  countPreserved(first: number, count: number): number {
    const f = this.flags;
    let n = 0;
    for (let p = first, end = first + count; p < end; p++) if (f[p]! & PG_PRESERVED) n++;
    return n;
  }

  /** Marks `[first, first + count)` preserved (pages must be allocated). Idempotent. */
  markPreserved(first: number, count: number): void {
    const f = this.flags;
    for (let p = first, end = first + count; p < end; p++) {
      if ((f[p]! & PG_PRESERVED) === 0) {
        f[p] = f[p]! | PG_PRESERVED;
        this.preservedPages++;
      }
    }
  }

  /** Clears preserved marks in `[first, first + count)`. Idempotent. */
  clearPreserved(first: number, count: number): void {
    const f = this.flags;
    for (let p = first, end = first + count; p < end; p++) {
      if (f[p]! & PG_PRESERVED) {
        f[p] = f[p]! & ~PG_PRESERVED;
        this.preservedPages--;
      }
    }
  }

  /**
   * Frees every allocated page that is not preserved. Fully preserved blocks stay as they are;
   * partially preserved blocks are split into maximal naturally aligned preserved blocks (which
   * stay allocated) and the rest is freed. Afterwards allocated pages == preserved pages.
   */
  releaseUnpreserved(): void {
    const heads = this.liveBlocks();
    for (let i = 0; i < heads.length; i++) {
      const pfn = heads[i]!;
      const order = this.order[pfn]!;
      const n = 1 << order;
      const kept = this.countPreserved(pfn, n);
      if (kept === n) continue;
      this.#removeLive(pfn);
      this.flags[pfn] = this.flags[pfn]! & ~PG_HEAD;
      this.allocatedPages -= n;
      this.freePages += n;
      if (kept === 0) this.#clearAndFree(pfn, order);
      else this.splitPreserved(pfn, order, this.#keepSplit, this.#clearAndFree);
    }
  }

  /**
   * Walks the block `[pfn, pfn + 2^order)` as its maximal naturally aligned sub-blocks that are
   * either fully preserved (`keep`) or hold no preserved page (`drop`), in ascending address
   * order, halving only blocks that are partly preserved. The callbacks may change the flags of
   * the sub-block they are given (never those of a later one).
   */
  splitPreserved(
    pfn: number,
    order: number,
    keep: (pfn: number, order: number) => void,
    drop?: (pfn: number, order: number) => void,
  ): void {
    const n = 1 << order;
    const kept = this.countPreserved(pfn, n);
    if (kept === n) keep(pfn, order);
    else if (kept === 0) drop?.(pfn, order);
    else {
      this.splitPreserved(pfn, order - 1, keep, drop);
      this.splitPreserved(pfn + (n >> 1), order - 1, keep, drop);
    }
  }

  /**
   * Makes every page free except the given blocks, which become allocated and not preserved.
   * The blocks must be validated by the caller: naturally aligned, in range, non-overlapping,
   * and sorted by ascending head index (`Machine.resetAllocator` sorts them; a loaded image's
   * page state is rejected unless it is in ascending order).
   *
   * @param keep - `[headPageIndex, order]` pairs in ascending order of `headPageIndex`
   */
  reset(keep: ReadonlyArray<readonly [number, number]>): void {
    this.flags.fill(0);
    this.order.fill(0);
    this.#freeHead.fill(NONE);
    this.#liveCount = 0;
    this.preservedPages = 0;
    this.allocatedPages = 0;
    this.freePages = this.totalPages;
    let cursor = this.totalPages;
    // Free the gaps top-down so that the lowest addresses end up at the heads of the free lists.
    for (let i = keep.length - 1; i >= 0; i--) {
      const [pfn, order] = keep[i]!;
      const end = pfn + (1 << order);
      this.#freeRange(end, cursor);
      this.#setAllocated(pfn, order);
      cursor = pfn;
    }
    this.#freeRange(0, cursor);
  }

  #freeRange(from: number, to: number): void {
    // Decompose [from, to) into maximal naturally aligned blocks, highest address first.
    let end = to;
    while (end > from) {
      let k = 0;
      while (k < MAX_ORDER && end % (1 << (k + 1)) === 0 && end - (1 << (k + 1)) >= from) k++;
      const pfn = end - (1 << k);
      this.#coalesceInsert(pfn, k);
      end = pfn;
    }
  }

  /** A fully preserved sub-block of a split block stays allocated as a block of its own. */
  readonly #keepSplit = (pfn: number, order: number): void => {
    const n = 1 << order;
    this.allocatedPages += n;
    this.freePages -= n;
    this.flags[pfn] = this.flags[pfn]! | PG_HEAD;
    this.order[pfn] = order;
    this.#addLive(pfn);
  };

  readonly #clearAndFree = (pfn: number, order: number): void => {
    this.flags.fill(0, pfn, pfn + (1 << order));
    this.#coalesceInsert(pfn, order);
  };

  #setAllocated(pfn: number, order: number): void {
    const n = 1 << order;
    this.flags.fill(PG_ALLOCATED, pfn, pfn + n);
    this.flags[pfn] = PG_ALLOCATED | PG_HEAD;
    this.order[pfn] = order;
    this.#addLive(pfn);
    this.allocatedPages += n;
    this.freePages -= n;
  }

  #release(pfn: number, order: number): void {
    const n = 1 << order;
    const f = this.flags;
    for (let p = pfn, end = pfn + n; p < end; p++) if (f[p]! & PG_PRESERVED) this.preservedPages--;
    f.fill(0, pfn, pfn + n);
    this.allocatedPages -= n;
    this.freePages += n;
    this.#coalesceInsert(pfn, order);
  }

  #coalesceInsert(pfn: number, order: number): void {
    let head = pfn;
    let k = order;
    while (k < MAX_ORDER) {
      const buddy = head ^ (1 << k);
      if ((this.flags[buddy]! & PG_FREE_HEAD) === 0 || this.order[buddy] !== k) break;
      this.#unlinkFree(buddy, k);
      head = Math.min(head, buddy);
      k++;
    }
    this.#pushFree(head, k);
  }

  #pushFree(pfn: number, order: number): void {
    const first = this.#freeHead[order]!;
    this.#next[pfn] = first;
    this.#prev[pfn] = NONE;
    if (first !== NONE) this.#prev[first] = pfn;
    this.#freeHead[order] = pfn;
    this.flags[pfn] = PG_FREE_HEAD;
    this.order[pfn] = order;
  }

  #unlinkFree(pfn: number, order: number): void {
    const next = this.#next[pfn]!;
    const prev = this.#prev[pfn]!;
    if (prev === NONE) this.#freeHead[order] = next;
    else this.#next[prev] = next;
    if (next !== NONE) this.#prev[next] = prev;
    this.flags[pfn] = this.flags[pfn]! & ~PG_FREE_HEAD;
  }

  #addLive(pfn: number): void {
    this.#livePos[pfn] = this.#liveCount;
    this.#live[this.#liveCount++] = pfn;
  }

  #removeLive(pfn: number): void {
    const pos = this.#livePos[pfn]!;
    const last = this.#live[--this.#liveCount]!;
    this.#live[pos] = last;
    this.#livePos[last] = pos;
  }
}
