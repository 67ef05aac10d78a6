// The deterministic PRNG of the fuzz tests (mulberry32): small, fast, and the same seed gives the
// same mutants everywhere. Used by the corrupt-handover fuzz (helpers/handover-fuzz.ts) and the
// FDT reader fuzz (fdt-fuzz.test.ts). Two ways to draw a bounded integer exist on purpose, since
// each fuzz's mutant sequence was generated with its own: `int`/`pick` scale (handover fuzz),
// `below`/`pickBelow` take the remainder (FDT fuzz). Changing either changes that fuzz's mutants.

/** mulberry32 with the helpers the fuzzers draw from. */
export class Rng {
  private state: number;

  /** @param seed - any number; its low 32 bits seed the generator (0 becomes 1) */
  constructor(seed: number) {
    this.state = seed >>> 0 || 1;
  }

  /** Uniform u32. */
  u32(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** Uniform integer in [0, n), by scaling a u32. */
  int(n: number): number {
    return Math.floor((this.u32() / 0x1_0000_0000) * n);
  }

  /** Integer in [0, n) as `u32() % n` (0, drawing nothing, when n ≤ 0). */
  below(n: number): number {
    return n <= 0 ? 0 : this.u32() % n;
  }

  /** Uniform u64. */
  u64(): bigint {
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32());
  }

  /** A uniformly chosen element (by {@link int}); throws on an empty list. */
  pick<T>(list: readonly T[]): T {
    if (list.length === 0) throw new Error("pick from an empty list");
    return list[this.int(list.length)]!;
  }

  /** The element at {@link below}(length); throws on an empty list. */
  pickBelow<T>(list: readonly T[]): T {
    if (list.length === 0) throw new Error("pick from an empty list");
    return list[this.below(list.length)]!;
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }
}
