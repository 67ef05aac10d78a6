// What each page of RAM *contains*, independent of allocation: a page is either "live" (its bytes
// in the RAM buffer are its contents) or poisoned (it reads as POISON_BYTE). Poisoning is lazy:
// never-touched RAM is poisoned without writing it, and scrub() only rewrites the pages that
// became live since the previous scrub (tracked in a stack), so its cost is proportional to the
// pages touched, not to the size of RAM.

import { PAGE_SIZE, POISON_BYTE } from "./constants.js";

/**
 * Per-page content state of RAM: live pages versus (lazily) poisoned pages.
 *
 * @category Machine
 */
export class PageContents {
  readonly #ram: Uint8Array;
  readonly #live: Uint8Array;
  readonly #stack: Int32Array;
  #top = 0;

  /**
   * @param ram - the RAM buffer (`totalPages * PAGE_SIZE` bytes)
   * @param totalPages - number of page frames
   */
  constructor(ram: Uint8Array, totalPages: number) {
    this.#ram = ram;
    this.#live = new Uint8Array(totalPages);
    this.#stack = new Int32Array(totalPages);
  }

  /**
   * Declares `[first, first + count)` live because the caller is about to overwrite every byte
   * (allocation zeroing, image load). Poisoned contents are not materialized.
   */
  overwrite(first: number, count: number): void {
    const live = this.#live;
    for (let p = first, end = first + count; p < end; p++) {
      if (live[p] === 0) {
        live[p] = 1;
        this.#stack[this.#top++] = p;
      }
    }
  }

  /**
   * Declares `[first, first + count)` live keeping their current contents: poisoned pages get the
   * poison pattern written into the RAM buffer first.
   */
  materialize(first: number, count: number): void {
    const live = this.#live;
    for (let p = first, end = first + count; p < end; p++) {
      if (live[p] === 0) {
        this.#ram.fill(POISON_BYTE, p * PAGE_SIZE, (p + 1) * PAGE_SIZE);
        live[p] = 1;
        this.#stack[this.#top++] = p;
      }
    }
  }

  /**
   * Poisons live pages: pages with `(keep[pfn] & keepMask) !== 0` stay live, every other live
   * page is filled with {@link POISON_BYTE}. Cost is proportional to the number of live pages.
   *
   * @param keep - per-page flags (the allocator's flags array)
   * @param keepMask - the flag bit that protects a page (the preserved bit)
   * @returns the number of pages poisoned
   */
  scrub(keep: Uint8Array, keepMask: number): number {
    const stack = this.#stack;
    const live = this.#live;
    const ram = this.#ram;
    const n = this.#top;
    let kept = 0;
    let poisoned = 0;
    let runStart = -1;
    let runEnd = -1;
    for (let i = 0; i < n; i++) {
      const p = stack[i]!;
      if ((keep[p]! & keepMask) !== 0) {
        stack[kept++] = p;
        continue;
      }
      live[p] = 0;
      poisoned++;
      if (p === runEnd) {
        runEnd++;
      } else {
        if (runStart >= 0) ram.fill(POISON_BYTE, runStart * PAGE_SIZE, runEnd * PAGE_SIZE);
        runStart = p;
        runEnd = p + 1;
      }
    }
    if (runStart >= 0) ram.fill(POISON_BYTE, runStart * PAGE_SIZE, runEnd * PAGE_SIZE);
    this.#top = kept;
    return poisoned;
  }

  /** True when page `pfn` holds contents (it does not read as poison). */
  isLive(pfn: number): boolean {
    return this.#live[pfn] === 1;
  }

  /** Height of the live-page stack; with {@link PageContents.rollback}, undoes later liveness. */
  mark(): number {
    return this.#top;
  }

  /**
   * Pages that became live since `mark` (taken with {@link PageContents.mark}, no scrub in
   * between) read as poison again. Cost is proportional to those pages.
   */
  rollback(mark: number): void {
    for (let i = mark; i < this.#top; i++) this.#live[this.#stack[i]!] = 0;
    this.#top = mark;
  }

  /**
   * Copies `length` bytes at RAM offset `offset` as the machine would read them: live pages from
   * the RAM buffer, poisoned pages as {@link POISON_BYTE}.
   */
  readRaw(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const pfn = Math.floor(pos / PAGE_SIZE);
      const stop = Math.min(end, (pfn + 1) * PAGE_SIZE);
      if (this.#live[pfn] === 1) out.set(this.#ram.subarray(pos, stop), pos - offset);
      else out.fill(POISON_BYTE, pos - offset, stop - offset);
      pos = stop;
    }
    return out;
  }
}
