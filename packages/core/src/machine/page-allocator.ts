// The buddy page allocator, sparse: its state costs memory in proportion to the sections
// (2 MiB, order-9 blocks) in use, not to the size of RAM, so a 1 TiB machine is as cheap to
// power on as a 4 MiB one. Works on page indices relative to the start of RAM (numbers, never
// bigint, exact up to 2^53); the Machine validates arguments and translates physical addresses.
//
// Per section, in a SectionTable:
// - absent: the section is one free order-9 block. Free order-9 blocks are a LIFO stack of
//   sections freed since the last reset on top of the ascending runs of sections the last reset
//   left free, so a fresh 1 TiB machine is one run, not 512 Ki list entries. Popping the stack,
//   then the lowest run, hands out exactly the blocks the classic doubly linked list would.
// - WHOLE: one allocated order-9 block with no preserved page (a shared marker, no memory of its
//   own): the common case for huge folios and for a host whose RAM is all in use.
// - KEPT: one allocated order-9 block with every page preserved (a shared marker too): a
//   preserved huge folio. Measured: 32 Ki preserved 2 MiB folios (a 64 GiB guest) as Sections
//   cost 0.7 s in typed-array allocation and GC at preserve time; as markers, nothing.
// - a Section: per-page flags and orders (1 KiB) and, once a free block of order < 9 lives in
//   it, the links of the per-order free lists (8 KiB). Sections only hold order < 9 blocks or a
//   preserved order-9 block, i.e. memory in use at 4 KiB granularity, where 9 KiB per 2 MiB
//   (0.4 %) is the cost of the kernel's own struct page (64 B per 4 KiB page, 1.6 %) or less.
// Measured (Node 20): a 1 TiB machine powers on in ~0.5 ms with no measurable heap; allocating
// all of it as 512 Ki order-9 blocks (none written) grows RSS by ~72 MiB — the table leaves and
// the per-section content records — against 6 GiB for the per-page arrays this replaced.

import { MAX_ORDER } from "./constants.js";
import { SectionTable } from "./section-table.js";

/**
 * Page belongs to an allocated block.
 *
 * @category Machine
 */
export const PG_ALLOCATED = 1;
/** Page is the first page of an allocated block (its order is in the section's `order`). */
export const PG_HEAD = 2;
/** Page is the first page of a free block on a free list (order < 9). */
export const PG_FREE_HEAD = 4;
/**
 * Page is marked preserved for the handover (only ever set on allocated pages).
 *
 * @category Machine
 */
export const PG_PRESERVED = 8;

const NONE = -1;
/** Pages per section (an order-9 block). */
export const SECTION_PAGES = 1 << MAX_ORDER;

/** Per-page state of a section that holds blocks of order < 9 or a preserved order-9 block. */
class Section {
  readonly flags = new Uint8Array(SECTION_PAGES);
  readonly order = new Int8Array(SECTION_PAGES);
  /** Free-list links (next at 2i, prev at 2i + 1), created on the first free block. */
  links: Float64Array | undefined;
  /** Preserved pages in this section. */
  preserved = 0;
}

/** Marker of a section that is one allocated, unpreserved order-9 block. */
const WHOLE = Object.freeze({ whole: true });
/** Marker of a section that is one allocated order-9 block with every page preserved. */
const KEPT = Object.freeze({ kept: true });
type Slot = Section | typeof WHOLE | typeof KEPT;

/** An opaque copy of a {@link PageAllocator}'s state ({@link PageAllocator.snapshot}). */
export interface AllocatorSnapshot {
  readonly __allocatorSnapshot: never;
}

interface SnapshotState {
  readonly table: SectionTable<Slot>;
  readonly freeHead: readonly number[];
  readonly stack: readonly number[];
  readonly runs: readonly number[];
  readonly run: number;
  readonly counts: readonly [number, number, number];
  readonly copySection: (s: Slot) => Slot;
}

/**
 * Buddy allocator over `totalPages` page frames (a multiple of `2^MAX_ORDER`). Allocation and
 * free are O(MAX_ORDER) plus the pages of the block for its flags (none for an order-9 block).
 * Callers validate arguments; methods here assume valid input.
 *
 * @category Machine
 */
export class PageAllocator {
  /** Number of page frames managed. */
  readonly totalPages: number;
  /** Pages currently free. */
  freePages = 0;
  /** Pages currently in allocated blocks. */
  allocatedPages = 0;
  /** Pages currently marked preserved. */
  preservedPages = 0;

  #table = new SectionTable<Slot>();
  /** Heads of the free lists of orders 0..8 (page index, or NONE). */
  readonly #freeHead = new Array<number>(MAX_ORDER).fill(NONE);
  /** Free order-9 blocks freed since the last reset (section numbers, top = next handed out). */
  #stack: number[] = [];
  /** Free order-9 runs left by the last reset, ascending: `[start, end)` section pairs. */
  #runs: number[] = [];
  #run = 0;

  /** @param totalPages - number of page frames, a positive multiple of `2^MAX_ORDER` */
  constructor(totalPages: number) {
    this.totalPages = totalPages;
    this.reset([]);
  }

  // ---------------------------------------------------------------- snapshot

  /**
   * A copy of the whole allocator state, for {@link PageAllocator.restore} (a boot checkpoint).
   * Cost: the sections in use — markers are shared, per-page sections copied (9 KiB each) — and
   * no object per block. Measured against the list of blocks a machine image records, which the
   * checkpoint used before: 32 Ki preserved 2 MiB folios (a 64 GiB guest) took about 20 ms to
   * list at every boot, and the 32 Ki objects lengthened the next GC.
   */
  snapshot(): AllocatorSnapshot {
    const copySection = (s: Slot): Slot => {
      if (s === WHOLE || s === KEPT) return s;
      const from = s as Section;
      const to = new Section();
      to.flags.set(from.flags);
      to.order.set(from.order);
      to.links = from.links?.slice();
      to.preserved = from.preserved;
      return to;
    };
    return {
      table: this.#table.clone(copySection),
      freeHead: this.#freeHead.slice(),
      stack: this.#stack.slice(),
      runs: this.#runs.slice(),
      run: this.#run,
      counts: [this.freePages, this.allocatedPages, this.preservedPages],
      copySection,
    } satisfies SnapshotState as unknown as AllocatorSnapshot;
  }

  /** Puts back the state of `snapshot` (which stays usable for another restore). */
  restore(snapshot: AllocatorSnapshot): void {
    const s = snapshot as unknown as SnapshotState;
    this.#table = s.table.clone(s.copySection);
    for (let k = 0; k < MAX_ORDER; k++) this.#freeHead[k] = s.freeHead[k]!;
    this.#stack = s.stack.slice();
    this.#runs = s.runs.slice();
    this.#run = s.run;
    [this.freePages, this.allocatedPages, this.preservedPages] = s.counts;
  }

  // ---------------------------------------------------------------- queries

  /** The `PG_*` flags of page `pfn` (a free order-9 block reads as 0). */
  flagsOf(pfn: number): number {
    const sec = Math.floor(pfn / SECTION_PAGES);
    const s = this.#table.get(sec);
    if (s === undefined) return 0;
    const i = pfn - sec * SECTION_PAGES;
    if (s === WHOLE) return i === 0 ? PG_ALLOCATED | PG_HEAD : PG_ALLOCATED;
    if (s === KEPT) return (i === 0 ? PG_ALLOCATED | PG_HEAD : PG_ALLOCATED) | PG_PRESERVED;
    return (s as Section).flags[i]!;
  }

  /** The order of the allocated block headed by `pfn` (caller checked `PG_HEAD`). */
  orderOf(pfn: number): number {
    const sec = Math.floor(pfn / SECTION_PAGES);
    const s = this.#table.get(sec)!;
    return s === WHOLE || s === KEPT ? MAX_ORDER : (s as Section).order[pfn - sec * SECTION_PAGES]!;
  }

  /** True when `pfn` is the head of a live allocated block of exactly `order`. */
  isHead(pfn: number, order: number): boolean {
    return (this.flagsOf(pfn) & PG_HEAD) !== 0 && this.orderOf(pfn) === order;
  }

  /** True when every page in `[first, first + count)` is allocated. */
  allAllocated(first: number, count: number): boolean {
    return this.firstUnallocated(first, count) < 0;
  }

  /** The first page in `[first, first + count)` that is not allocated, or -1. */
  firstUnallocated(first: number, count: number): number {
    const end = first + count;
    for (let p = first; p < end;) {
      const sec = Math.floor(p / SECTION_PAGES);
      const stop = Math.min(end, (sec + 1) * SECTION_PAGES);
      const s = this.#table.get(sec);
      if (s === undefined) return p;
      if (s !== WHOLE && s !== KEPT) {
        const f = (s as Section).flags;
        const base = sec * SECTION_PAGES;
        for (let q = p; q < stop; q++) if ((f[q - base]! & PG_ALLOCATED) === 0) return q;
      }
      p = stop;
    }
    return NONE;
  }

  /** Number of preserved pages in `[first, first + count)`. */
  countPreserved(first: number, count: number): number {
    const end = first + count;
    let n = 0;
    for (let p = first; p < end;) {
      const sec = Math.floor(p / SECTION_PAGES);
      const stop = Math.min(end, (sec + 1) * SECTION_PAGES);
      const s = this.#table.get(sec);
      if (s === KEPT) n += stop - p;
      else if (s !== undefined && s !== WHOLE && (s as Section).preserved > 0) {
        const sect = s as Section;
        const base = sec * SECTION_PAGES;
        if (p === base && stop === base + SECTION_PAGES) n += sect.preserved;
        else for (let q = p; q < stop; q++) if (sect.flags[q - base]! & PG_PRESERVED) n++;
      }
      p = stop;
    }
    return n;
  }

  /**
   * The per-page flags of section `sec` when some of its pages are preserved, `"all"` when all
   * are, else undefined (what the scrub needs to know which pages keep their contents).
   */
  preservedFlags(sec: number): Uint8Array | "all" | undefined {
    const s = this.#table.get(sec);
    if (s === KEPT) return "all";
    if (s === undefined || s === WHOLE || (s as Section).preserved === 0) return undefined;
    return (s as Section).preserved === SECTION_PAGES ? "all" : (s as Section).flags;
  }

  /** Calls `fn(head, order)` for every allocated block, in ascending address order. */
  forEachBlock(fn: (pfn: number, order: number) => void): void {
    for (const sec of this.#table.keys()) {
      const s = this.#table.get(sec)!;
      const base = sec * SECTION_PAGES;
      if (s === WHOLE || s === KEPT) {
        fn(base, MAX_ORDER);
        continue;
      }
      const { flags, order } = s as Section;
      for (let i = 0; i < SECTION_PAGES; i++) if (flags[i]! & PG_HEAD) fn(base + i, order[i]!);
    }
  }

  // ---------------------------------------------------------------- allocation

  /**
   * Allocates a naturally aligned block of `2^order` pages.
   *
   * @returns the head page index, or -1 when no block is available
   */
  alloc(order: number): number {
    let k = order;
    while (k < MAX_ORDER && this.#freeHead[k] === NONE) k++;
    let pfn: number;
    if (k === MAX_ORDER) {
      const sec = this.#popFreeSection();
      if (sec === NONE) return NONE;
      pfn = sec * SECTION_PAGES;
      if (order === MAX_ORDER) {
        this.#table.set(sec, WHOLE);
        this.allocatedPages += SECTION_PAGES;
        this.freePages -= SECTION_PAGES;
        return pfn;
      }
      this.#table.set(sec, new Section());
    } else {
      pfn = this.#freeHead[k]!;
      this.#unlinkFree(pfn, k);
    }
    while (k > order) {
      k--;
      this.#pushFree(pfn + (1 << k), k);
    }
    this.#setAllocated(pfn, order);
    return pfn;
  }

  /** Frees the allocated block headed by `pfn` (caller checked `isHead`); clears preserved marks. */
  free(pfn: number): void {
    const order = this.orderOf(pfn);
    const n = 1 << order;
    this.preservedPages -= this.countPreserved(pfn, n);
    this.allocatedPages -= n;
    this.freePages += n;
    this.#clearAndFree(pfn, order);
  }

  /**
   * Splits the allocated block headed by `pfn` (order `order` > 0, caller checked `isHead`) into
   * `2^order` allocated order-0 blocks, keeping preserved marks (the kernel's `split_page`).
   */
  split(pfn: number, order: number): void {
    const sec = Math.floor(pfn / SECTION_PAGES);
    const s = this.#section(sec);
    const i0 = pfn - sec * SECTION_PAGES;
    for (let i = i0, end = i0 + (1 << order); i < end; i++) {
      s.flags[i] = s.flags[i]! | PG_HEAD;
      s.order[i] = 0;
    }
  }

  // ---------------------------------------------------------------- preserved marks

  /** Marks `[first, first + count)` preserved (pages must be allocated). Idempotent. */
  markPreserved(first: number, count: number): void {
    this.#eachSectionPart(first, count, (sec, from, to) => {
      const slot = this.#table.get(sec);
      if (slot === KEPT) return;
      if (slot === WHOLE && from === 0 && to === SECTION_PAGES) {
        this.#table.set(sec, KEPT);
        this.preservedPages += SECTION_PAGES;
        return;
      }
      const s = this.#section(sec);
      const f = s.flags;
      for (let i = from; i < to; i++) {
        if ((f[i]! & PG_PRESERVED) === 0) {
          f[i] = f[i]! | PG_PRESERVED;
          s.preserved++;
          this.preservedPages++;
        }
      }
    });
  }

  /** Clears preserved marks in `[first, first + count)`. Idempotent. */
  clearPreserved(first: number, count: number): void {
    this.#eachSectionPart(first, count, (sec, from, to) => {
      if (this.#table.get(sec) === KEPT && from === 0 && to === SECTION_PAGES) {
        this.#table.set(sec, WHOLE);
        this.preservedPages -= SECTION_PAGES;
        return;
      }
      const s = this.#table.get(sec) === KEPT ? this.#section(sec) : this.#table.get(sec);
      if (s === undefined || s === WHOLE || (s as Section).preserved === 0) return;
      const sect = s as Section;
      const f = sect.flags;
      for (let i = from; i < to; i++) {
        if (f[i]! & PG_PRESERVED) {
          f[i] = f[i]! & ~PG_PRESERVED;
          sect.preserved--;
          this.preservedPages--;
        }
      }
    });
  }

  /**
   * Frees every allocated page that is not preserved. Fully preserved blocks stay as they are;
   * partially preserved blocks are split into maximal naturally aligned preserved blocks (which
   * stay allocated) and the rest is freed. Afterwards allocated pages == preserved pages.
   * Cost: proportional to the sections in use.
   */
  releaseUnpreserved(): void {
    for (const sec of this.#table.keys()) {
      const s = this.#table.get(sec)!;
      const base = sec * SECTION_PAGES;
      if (s === KEPT) continue;
      if (s === WHOLE) {
        this.allocatedPages -= SECTION_PAGES;
        this.freePages += SECTION_PAGES;
        this.#table.delete(sec);
        this.#stack.push(sec);
        continue;
      }
      // Fully preserved: every block in it stays (the common case of a preserved huge folio).
      if ((s as Section).preserved === SECTION_PAGES) continue;
      const { flags, order } = s as Section;
      const heads: number[] = [];
      for (let i = 0; i < SECTION_PAGES; i++) if (flags[i]! & PG_HEAD) heads.push(i);
      for (const i of heads) {
        const pfn = base + i;
        const o = order[i]!;
        const n = 1 << o;
        const kept = this.countPreserved(pfn, n);
        if (kept === n) continue;
        flags[i] = flags[i]! & ~PG_HEAD;
        this.allocatedPages -= n;
        this.freePages += n;
        if (kept === 0) this.#clearAndFree(pfn, o);
        else this.splitPreserved(pfn, o, this.#keepSplit, this.#clearAndFree);
      }
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
   * page state is rejected unless it is in ascending order). Cost: proportional to the blocks.
   *
   * @param keep - `[headPageIndex, order]` pairs in ascending order of `headPageIndex`
   */
  reset(keep: ReadonlyArray<readonly [number, number]>): void {
    this.resetSorted(
      keep.map((k) => k[0]),
      keep.map((k) => k[1]),
    );
  }

  /** {@link PageAllocator.reset} with the heads and orders of the kept blocks in two arrays. */
  resetSorted(first: ArrayLike<number>, orders: ArrayLike<number>): void {
    this.#table.clear();
    this.#freeHead.fill(NONE);
    this.#stack.length = 0;
    this.preservedPages = 0;
    this.allocatedPages = 0;
    this.freePages = this.totalPages;
    const runs: number[] = [];
    let cursor = this.totalPages;
    // Free the gaps top-down so that the lowest addresses end up at the heads of the free lists.
    for (let i = first.length - 1; i >= 0; i--) {
      const pfn = first[i]!;
      const order = orders[i]!;
      this.#freeRange(pfn + (1 << order), cursor, runs);
      this.#setAllocated(pfn, order);
      cursor = pfn;
    }
    this.#freeRange(0, cursor, runs);
    // `runs` was built top-down as [end, start] pairs; hand them out lowest first.
    runs.reverse();
    this.#runs = runs;
    this.#run = 0;
  }

  /** Frees `[from, to)` (not allocated, not on a list): whole sections become a run. */
  #freeRange(from: number, to: number, runs: number[]): void {
    let end = to;
    while (end > from) {
      if (end % SECTION_PAGES === 0 && end - SECTION_PAGES >= from) {
        const start = Math.ceil(from / SECTION_PAGES) * SECTION_PAGES;
        runs.push(end / SECTION_PAGES, start / SECTION_PAGES);
        end = start;
        continue;
      }
      let k = 0;
      while (k < MAX_ORDER - 1 && end % (1 << (k + 1)) === 0 && end - (1 << (k + 1)) >= from) k++;
      const pfn = end - (1 << k);
      this.#coalesceInsert(pfn, k);
      end = pfn;
    }
  }

  // ---------------------------------------------------------------- internals

  /**
   * The Section of `sec`, turning a WHOLE or KEPT marker into one (order-9 head, all pages
   * allocated, and for KEPT all preserved).
   */
  #section(sec: number): Section {
    const s = this.#table.get(sec);
    if (s !== undefined && s !== WHOLE && s !== KEPT) return s as Section;
    const sect = new Section();
    if (s === WHOLE || s === KEPT) {
      const kept = s === KEPT ? PG_PRESERVED : 0;
      sect.flags.fill(PG_ALLOCATED | kept);
      sect.flags[0] = PG_ALLOCATED | PG_HEAD | kept;
      sect.order[0] = MAX_ORDER;
      if (s === KEPT) sect.preserved = SECTION_PAGES;
    }
    this.#table.set(sec, sect);
    return sect;
  }

  #eachSectionPart(first: number, count: number, fn: (sec: number, from: number, to: number) => void): void {
    const end = first + count;
    for (let p = first; p < end;) {
      const sec = Math.floor(p / SECTION_PAGES);
      const base = sec * SECTION_PAGES;
      const stop = Math.min(end, base + SECTION_PAGES);
      fn(sec, p - base, stop - base);
      p = stop;
    }
  }

  #popFreeSection(): number {
    if (this.#stack.length > 0) return this.#stack.pop()!;
    const runs = this.#runs;
    while (this.#run < runs.length) {
      const start = runs[this.#run]!;
      const end = runs[this.#run + 1]!;
      if (start < end) {
        runs[this.#run] = start + 1;
        return start;
      }
      this.#run += 2;
    }
    return NONE;
  }

  /** A fully preserved sub-block of a split block stays allocated as a block of its own. */
  readonly #keepSplit = (pfn: number, order: number): void => {
    const n = 1 << order;
    this.allocatedPages += n;
    this.freePages -= n;
    const sec = Math.floor(pfn / SECTION_PAGES);
    const s = this.#table.get(sec) as Section;
    const i = pfn - sec * SECTION_PAGES;
    s.flags[i] = s.flags[i]! | PG_HEAD;
    s.order[i] = order;
  };

  /** Clears the flags of `[pfn, pfn + 2^order)` and puts it on the free lists. */
  readonly #clearAndFree = (pfn: number, order: number): void => {
    const sec = Math.floor(pfn / SECTION_PAGES);
    if (order === MAX_ORDER) {
      this.#table.delete(sec);
      this.#stack.push(sec);
      return;
    }
    const s = this.#table.get(sec) as Section;
    const i = pfn - sec * SECTION_PAGES;
    const f = s.flags;
    for (let q = i, end = i + (1 << order); q < end; q++) {
      if (f[q]! & PG_PRESERVED) s.preserved--;
      f[q] = 0;
    }
    this.#coalesceInsert(pfn, order);
  };

  #setAllocated(pfn: number, order: number): void {
    const n = 1 << order;
    this.allocatedPages += n;
    this.freePages -= n;
    const sec = Math.floor(pfn / SECTION_PAGES);
    if (order === MAX_ORDER) {
      this.#table.set(sec, WHOLE);
      return;
    }
    const s = this.#section(sec);
    const i = pfn - sec * SECTION_PAGES;
    s.flags.fill(PG_ALLOCATED, i, i + n);
    s.flags[i] = PG_ALLOCATED | PG_HEAD;
    s.order[i] = order;
  }

  /** Inserts the free block `[pfn, pfn + 2^order)` (order < 9), merging with free buddies. */
  #coalesceInsert(pfn: number, order: number): void {
    const sec = Math.floor(pfn / SECTION_PAGES);
    const base = sec * SECTION_PAGES;
    const s = this.#section(sec);
    // Buddies never leave their section below order 9, so the XOR works on the in-section index.
    let i = pfn - base;
    let k = order;
    while (k < MAX_ORDER) {
      const buddy = i ^ (1 << k);
      if ((s.flags[buddy]! & PG_FREE_HEAD) === 0 || s.order[buddy] !== k) break;
      this.#unlinkFree(base + buddy, k);
      i = Math.min(i, buddy);
      k++;
    }
    if (k === MAX_ORDER) {
      // The whole section is free again: it leaves the table.
      this.#table.delete(sec);
      this.#stack.push(sec);
      return;
    }
    this.#pushFree(base + i, k);
  }

  #links(pfn: number): { s: Section; i: number } {
    const sec = Math.floor(pfn / SECTION_PAGES);
    const s = this.#section(sec);
    s.links ??= new Float64Array(2 * SECTION_PAGES);
    return { s, i: pfn - sec * SECTION_PAGES };
  }

  #pushFree(pfn: number, order: number): void {
    const first = this.#freeHead[order]!;
    const { s, i } = this.#links(pfn);
    s.links![2 * i] = first;
    s.links![2 * i + 1] = NONE;
    if (first !== NONE) {
      const f = this.#links(first);
      f.s.links![2 * f.i + 1] = pfn;
    }
    this.#freeHead[order] = pfn;
    s.flags[i] = PG_FREE_HEAD;
    s.order[i] = order;
  }

  #unlinkFree(pfn: number, order: number): void {
    const { s, i } = this.#links(pfn);
    const next = s.links![2 * i]!;
    const prev = s.links![2 * i + 1]!;
    if (prev === NONE) this.#freeHead[order] = next;
    else {
      const p = this.#links(prev);
      p.s.links![2 * p.i] = next;
    }
    if (next !== NONE) {
      const n = this.#links(next);
      n.s.links![2 * n.i + 1] = prev;
    }
    s.flags[i] = s.flags[i]! & ~PG_FREE_HEAD;
  }
}
