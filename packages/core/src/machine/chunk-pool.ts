// Host memory for the sections of sparse RAM: 2 MiB chunks, each one contiguous Uint8Array.
//
// Why not simply `new Uint8Array(2 MiB)` per chunk: every ArrayBuffer counts as V8 "external
// memory", and V8 starts a full garbage collection each time external memory grows by 64 MiB,
// whether or not the host ever commits the bytes. Measured (Node 20): 4096 chunks with one page
// written in each ran 114 mark-compact GCs and took 6.8 s; in a test runner's larger heap 21 s.
// A WebAssembly.Memory is not external memory: one 4 GiB memory is reserved address space that
// the OS commits page by page as it is written, so the same 4096 chunks in two of them cost no
// GC and ~1 s (the page faults), and RSS grows by the pages written only.
//
// So a machine takes its first SMALL_CHUNKS chunks as plain arrays (cheap: most machines are
// small, and a 4 GiB reservation per machine would be wasteful), and further chunks as 2 MiB
// slots of 4 GiB arenas. Slots of released chunks are reused (their bytes are stale: `fresh`
// says whether a chunk is known to be zeros); an arena with no slot in use is dropped, and its
// memory goes back to the host when the GC collects it. If the host refuses a 4 GiB reservation
// (e.g. strict overcommit), chunks fall back to plain arrays.

/** The part of the WebAssembly global used here (the compiler's lib settings do not include it). */
interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
declare const WebAssembly: {
  Memory: new (descriptor: { initial: number; maximum?: number }) => WasmMemory;
};

/**
 * Bytes per chunk (one section: an order-9 block, 2 MiB).
 *
 * @category Machine
 */
export const CHUNK_BYTES = 2 * 1024 * 1024;
/** Chunks a machine takes as plain arrays before it uses arenas (32 MiB). */
const SMALL_CHUNKS = 16;
/** WebAssembly pages (64 KiB) per arena: 65535, just under 4 GiB, holding 2047 chunks. */
const ARENA_WASM_PAGES = 65535;
const ARENA_SLOTS = Math.floor((ARENA_WASM_PAGES * 65536) / CHUNK_BYTES);

/**
 * A chunk of host memory for one section.
 *
 * @category Machine
 */
export interface Chunk {
  /** The 2 MiB of bytes. */
  readonly bytes: Uint8Array;
  /** True when the bytes are known to be zeros (never used before). */
  readonly fresh: boolean;
  /** Gives the chunk back to the pool; `bytes` must not be used afterwards. */
  release(): void;
}

interface Arena {
  readonly memory: WasmMemory;
  readonly free: number[];
  next: number;
  used: number;
}

/**
 * The chunks of one machine.
 *
 * @category Machine
 */
export class ChunkPool {
  #small = 0;
  #arenas: Arena[] = [];
  #arenasFailed = false;

  /** Host bytes reserved for chunks (plain chunks plus whole arenas; the OS commits less). */
  get reservedBytes(): number {
    return this.#small * CHUNK_BYTES + this.#arenas.length * ARENA_SLOTS * CHUNK_BYTES;
  }

  /** A chunk for a section that gets its first data. */
  acquire(): Chunk {
    if (this.#small < SMALL_CHUNKS || this.#arenasFailed) return this.#plain();
    for (const a of this.#arenas) {
      if (a.free.length > 0) return this.#slot(a, a.free.pop()!, false);
      if (a.next < ARENA_SLOTS) return this.#slot(a, a.next++, true);
    }
    let memory: WasmMemory;
    try {
      memory = new WebAssembly.Memory({ initial: ARENA_WASM_PAGES, maximum: ARENA_WASM_PAGES });
    } catch {
      this.#arenasFailed = true;
      return this.#plain();
    }
    const arena: Arena = { memory, free: [], next: 1, used: 0 };
    this.#arenas.push(arena);
    return this.#slot(arena, 0, true);
  }

  #plain(): Chunk {
    this.#small++;
    return {
      bytes: new Uint8Array(CHUNK_BYTES),
      fresh: true,
      release: () => {
        this.#small--;
      },
    };
  }

  #slot(arena: Arena, slot: number, fresh: boolean): Chunk {
    arena.used++;
    return {
      bytes: new Uint8Array(arena.memory.buffer, slot * CHUNK_BYTES, CHUNK_BYTES),
      fresh,
      release: () => {
        arena.free.push(slot);
        if (--arena.used === 0) this.#arenas = this.#arenas.filter((a) => a !== arena);
      },
    };
  }
}
