// What each page of RAM *contains*, independent of allocation, with host memory only for pages
// that hold data. A page is in one of three states:
// - POISONED: reads as POISON_BYTE (never-touched RAM, scrubbed pages). No host memory.
// - ZERO: reads as zeros (allocated and zeroed, never written since). No host memory.
// - DATA: its bytes live in the host chunk of its section.
// Host chunks are 2 MiB, one per section (an order-9 block, so a block or a huge folio is always
// one contiguous chunk), taken from the machine's ChunkPool when a page of the section first
// gets DATA. Chunk memory is committed by the host OS page by page as it is written, so host
// memory follows the 4 KiB pages written, not the 2 MiB chunks: measured, 1 page written in
// each of 4096 sections of a 64 GiB machine grows RSS by ~25 MiB, not 8 GiB. The scrub gives
// the chunks of sections left without DATA pages back to the pool.
// Per-section state (a SectionTable): 512 state bytes and the chunk. Cost is proportional to
// the sections touched since they were last entirely poisoned, never to the size of RAM.

import { ChunkPool, type Chunk } from "./chunk-pool.js";
import { PAGE_SIZE, POISON_BYTE } from "./constants.js";
import { SECTION_PAGES } from "./page-allocator.js";
import { SectionTable } from "./section-table.js";

const POISONED = 0;
const ZERO = 1;
const DATA = 2;

/**
 * Bytes per section chunk (2 MiB).
 *
 * @category Machine
 */
export const SECTION_BYTES = SECTION_PAGES * PAGE_SIZE;

const ZERO_PAGE = Buffer.alloc(PAGE_SIZE);

class SectionContents {
  /** Per-page state (POISONED, ZERO or DATA); undefined while every page is in state `uniform`. */
  state: Uint8Array | undefined;
  /** The state of every page while `state` is undefined. */
  uniform = POISONED;
  /** Pages not POISONED. */
  touched = 0;
  /** Pages in DATA state. */
  data = 0;
  /** The section's bytes (of `handle`); present while `data > 0`. */
  chunk: Uint8Array | undefined;
  handle: Chunk | undefined;
  dv: DataView | undefined;
  /** Per page: 1 once its chunk bytes were written (a fresh chunk is zeros the host has not committed). */
  dirty: Uint8Array | undefined;
}

/**
 * A page as a checkpoint saved it: its state, and its bytes when it held data.
 *
 * @category Machine
 */
export interface SavedPage {
  readonly state: number;
  readonly bytes?: Uint8Array;
}

/**
 * Per-page content state of RAM (see the module comment). Offsets are bytes from the start of RAM.
 *
 * @category Machine
 */
export class PageContents {
  readonly #table = new SectionTable<SectionContents>();
  readonly #pool = new ChunkPool();

  /** Gives the chunk of `c` back (its pages must hold no DATA any more). */
  #dropChunk(c: SectionContents): void {
    c.handle?.release();
    c.handle = undefined;
    c.chunk = undefined;
    c.dv = undefined;
    c.dirty = undefined;
  }

  #get(sec: number): SectionContents {
    let c = this.#table.get(sec);
    if (c === undefined) {
      c = new SectionContents();
      this.#table.set(sec, c);
    }
    return c;
  }

  #stateOf(c: SectionContents, i: number): number {
    return c.state === undefined ? c.uniform : c.state[i]!;
  }

  #setState(c: SectionContents, i: number, to: number): void {
    const from = this.#stateOf(c, i);
    if (from === to) return;
    c.state ??= new Uint8Array(SECTION_PAGES).fill(c.uniform);
    if (from === POISONED) c.touched++;
    if (to === POISONED) c.touched--;
    if (from === DATA) c.data--;
    if (to === DATA) c.data++;
    c.state[i] = to;
  }

  /** Makes page `i` of section `c` DATA, filling its chunk bytes with what it read as. */
  #materialize(c: SectionContents, i: number, overwritten: boolean): void {
    const st = this.#stateOf(c, i);
    if (st === DATA) return;
    if (c.chunk === undefined) {
      c.handle = this.#pool.acquire();
      c.chunk = c.handle.bytes;
      c.dv = new DataView(c.chunk.buffer, c.chunk.byteOffset, SECTION_BYTES);
      c.dirty = new Uint8Array(SECTION_PAGES).fill(c.handle.fresh ? 0 : 1);
    }
    // Zeroing a page of a fresh chunk would only make the host commit it: it is zeros already.
    if (!overwritten && (st === POISONED || c.dirty![i] === 1)) {
      c.chunk.fill(st === ZERO ? 0 : POISON_BYTE, i * PAGE_SIZE, (i + 1) * PAGE_SIZE);
    }
    c.dirty![i] = 1;
    this.#setState(c, i, DATA);
  }

  /** {@link PageContents.#materialize} for pages `[from, to)` of `c`, one fill per run of equal state. */
  #materializeRange(c: SectionContents, from: number, to: number): void {
    let p = from;
    while (p < to) {
      const s0 = this.#stateOf(c, p);
      let q = p + 1;
      while (q < to && this.#stateOf(c, q) === s0) q++;
      if (s0 === POISONED) {
        this.#materialize(c, p, true);
        c.chunk!.fill(POISON_BYTE, p * PAGE_SIZE, q * PAGE_SIZE);
        c.dirty!.fill(1, p, q);
        for (let i = p + 1; i < q; i++) this.#setState(c, i, DATA);
      } else if (s0 === ZERO) {
        for (let i = p; i < q; i++) this.#materialize(c, i, false);
      }
      p = q;
    }
  }

  /** Calls `fn(section, pageInSection, offsetInChunk, offsetInRange, length)` per page piece. */
  #pieces(
    offset: number,
    length: number,
    fn: (sec: number, page: number, inChunk: number, at: number, len: number) => void,
  ): void {
    const end = offset + length;
    for (let pos = offset; pos < end;) {
      const sec = Math.floor(pos / SECTION_BYTES);
      const inChunk = pos - sec * SECTION_BYTES;
      const page = Math.floor(inChunk / PAGE_SIZE);
      const len = Math.min(end - pos, (page + 1) * PAGE_SIZE - inChunk);
      fn(sec, page, inChunk, pos - offset, len);
      pos += len;
    }
  }

  /** `[first, first + count)` pages now read as zeros (allocation). No host memory is used. */
  zeroPages(first: number, count: number): void {
    if (count === SECTION_PAGES && first % SECTION_PAGES === 0) {
      // A whole section (an order-9 block): one uniform state, and any old chunk goes.
      const c = this.#get(first / SECTION_PAGES);
      c.state = undefined;
      c.uniform = ZERO;
      c.touched = SECTION_PAGES;
      c.data = 0;
      this.#dropChunk(c);
      return;
    }
    for (let p = first, end = first + count; p < end; p++) {
      const sec = Math.floor(p / SECTION_PAGES);
      this.#setState(this.#get(sec), p - sec * SECTION_PAGES, ZERO);
    }
  }

  /** Copies `length` bytes at `offset` into `out` at `outOffset`: DATA, zeros or poison per page. */
  readInto(offset: number, length: number, out: Uint8Array, outOffset = 0): void {
    // Fast path: one section whose pages in the range all hold data is one copy.
    const sec0 = Math.floor(offset / SECTION_BYTES);
    const in0 = offset - sec0 * SECTION_BYTES;
    const c0 = this.#table.get(sec0);
    if (c0 !== undefined && c0.chunk !== undefined && length > 0 && in0 + length <= SECTION_BYTES) {
      let all = true;
      const last = Math.floor((in0 + length - 1) / PAGE_SIZE);
      for (let p = Math.floor(in0 / PAGE_SIZE); p <= last && all; p++) all = this.#stateOf(c0, p) === DATA;
      if (all) {
        out.set(c0.chunk.subarray(in0, in0 + length), outOffset);
        return;
      }
    }
    this.#pieces(offset, length, (sec, page, inChunk, at, len) => {
      const c = this.#table.get(sec);
      const st = c === undefined ? POISONED : this.#stateOf(c, page);
      const o = outOffset + at;
      if (st === DATA) out.set(c!.chunk!.subarray(inChunk, inChunk + len), o);
      else out.fill(st === ZERO ? 0 : POISON_BYTE, o, o + len);
    });
  }

  /** Copies `length` bytes at `offset` out (see {@link PageContents.readInto}). */
  read(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    this.readInto(offset, length, out);
    return out;
  }

  /** Writes `bytes` at `offset`; the pages written become DATA. */
  write(offset: number, bytes: Uint8Array): void {
    // Per section: materialize the pages (whole ones need no fill), then one copy.
    const end = offset + bytes.length;
    for (let pos = offset; pos < end;) {
      const sec = Math.floor(pos / SECTION_BYTES);
      const inChunk = pos - sec * SECTION_BYTES;
      const len = Math.min(end - pos, SECTION_BYTES - inChunk);
      const c = this.#get(sec);
      const first = Math.floor(inChunk / PAGE_SIZE);
      const last = Math.floor((inChunk + len - 1) / PAGE_SIZE);
      for (let p = first; p <= last; p++) {
        const whole = p * PAGE_SIZE >= inChunk && (p + 1) * PAGE_SIZE <= inChunk + len;
        this.#materialize(c, p, whole);
      }
      c.chunk!.set(bytes.subarray(pos - offset, pos - offset + len), inChunk);
      pos += len;
    }
  }

  /**
   * Fills `length` bytes at `offset` with `value`. Whole pages that hold no data and are
   * filled with zero just become ZERO (no host memory); DATA pages are written in place, so
   * views of them stay live.
   */
  fill(offset: number, length: number, value: number): void {
    this.#pieces(offset, length, (sec, page, inChunk, _at, len) => {
      const c = this.#get(sec);
      if (len === PAGE_SIZE && value === 0 && this.#stateOf(c, page) !== DATA) {
        this.#setState(c, page, ZERO);
        return;
      }
      this.#materialize(c, page, len === PAGE_SIZE);
      c.chunk!.fill(value, inChunk, inChunk + len);
    });
  }

  /**
   * Loads page data read from an image at `offset` (whole pages): all-zero pages become ZERO
   * (no host memory), the others DATA.
   */
  load(offset: number, bytes: Uint8Array): void {
    for (let at = 0; at < bytes.length; at += PAGE_SIZE) {
      const page = bytes.subarray(at, at + PAGE_SIZE);
      const pos = offset + at;
      const sec = Math.floor(pos / SECTION_BYTES);
      const i = (pos - sec * SECTION_BYTES) / PAGE_SIZE;
      const c = this.#get(sec);
      if (ZERO_PAGE.equals(page)) {
        this.#setState(c, i, ZERO);
      } else {
        this.#materialize(c, i, true);
        c.chunk!.set(page, i * PAGE_SIZE);
      }
    }
  }

  /**
   * A live view of `length` bytes at `offset` (its pages become DATA), or undefined when the
   * range crosses a section (2 MiB) boundary and so is not one piece of host memory.
   */
  view(offset: number, length: number): Uint8Array | undefined {
    const sec = Math.floor(offset / SECTION_BYTES);
    const inChunk = offset - sec * SECTION_BYTES;
    if (inChunk + length > SECTION_BYTES) return undefined;
    const c = this.#get(sec);
    if (length === 0 && c.chunk === undefined) return new Uint8Array(0);
    const last = length === 0 ? -1 : Math.floor((inChunk + length - 1) / PAGE_SIZE);
    this.#materializeRange(c, Math.floor(inChunk / PAGE_SIZE), last + 1);
    if (c.chunk === undefined) return new Uint8Array(0);
    return new Uint8Array(c.chunk.buffer, c.chunk.byteOffset + inChunk, length);
  }

  /**
   * The DataView and offset for `length` (≤ 8) bytes at `offset` when they lie in one section
   * whose touched pages are all DATA (the fast path of the u32/u64 accessors), else undefined.
   */
  dataView(offset: number, length: number, forWrite: boolean): { dv: DataView; pos: number } | undefined {
    const sec = Math.floor(offset / SECTION_BYTES);
    const inChunk = offset - sec * SECTION_BYTES;
    if (inChunk + length > SECTION_BYTES) return undefined;
    const c = this.#table.get(sec);
    if (c === undefined && !forWrite) return undefined;
    const sc = c ?? this.#get(sec);
    const first = Math.floor(inChunk / PAGE_SIZE);
    const last = Math.floor((inChunk + length - 1) / PAGE_SIZE);
    for (let p = first; p <= last; p++) {
      if (this.#stateOf(sc, p) !== DATA) {
        if (!forWrite) return undefined;
        this.#materialize(sc, p, false);
      }
    }
    return { dv: sc.dv!, pos: inChunk };
  }

  /** The state of page `pfn` and, when it holds data, a copy of its bytes (for a checkpoint). */
  savePage(pfn: number): SavedPage {
    const sec = Math.floor(pfn / SECTION_PAGES);
    const c = this.#table.get(sec);
    const i = pfn - sec * SECTION_PAGES;
    const state = c === undefined ? POISONED : this.#stateOf(c, i);
    if (state !== DATA) return { state };
    return { state, bytes: c!.chunk!.slice(i * PAGE_SIZE, (i + 1) * PAGE_SIZE) };
  }

  /** Puts page `pfn` back as {@link PageContents.savePage} saved it. */
  restorePage(pfn: number, saved: SavedPage): void {
    const sec = Math.floor(pfn / SECTION_PAGES);
    const i = pfn - sec * SECTION_PAGES;
    if (saved.bytes !== undefined) {
      const c = this.#get(sec);
      this.#materialize(c, i, true);
      c.chunk!.set(saved.bytes, i * PAGE_SIZE);
      return;
    }
    const c = saved.state === POISONED ? this.#table.get(sec) : this.#get(sec);
    if (c !== undefined) this.#setState(c, i, saved.state);
  }

  /**
   * Poisons every touched page for which `keep(section)` does not mark the page preserved:
   * `keep` returns the allocator's per-page flags of a section with preserved pages (bit
   * `keepMask` set on the pages to keep), `"all"` for a fully preserved section, or undefined. Sections left without data give their
   * chunk back; sections left all poisoned leave the table. Cost: the sections touched.
   *
   * @returns the number of pages poisoned
   */
  scrub(keep: (sec: number) => Uint8Array | "all" | undefined, keepMask: number): number {
    let poisoned = 0;
    for (const sec of this.#table.keys()) {
      const c = this.#table.get(sec)!;
      const flags = keep(sec);
      if (flags === "all") continue; // a fully preserved section keeps everything
      if (flags === undefined) {
        // Nothing preserved here: the whole section is poisoned at once.
        poisoned += c.touched;
        this.#dropChunk(c);
        this.#table.delete(sec);
        continue;
      }
      for (let i = 0; i < SECTION_PAGES; i++) {
        if ((flags[i]! & keepMask) !== 0 || this.#stateOf(c, i) === POISONED) continue;
        this.#setState(c, i, POISONED);
        poisoned++;
      }
      if (c.data === 0) this.#dropChunk(c);
      if (c.touched === 0) this.#table.delete(sec);
    }
    return poisoned;
  }
}
