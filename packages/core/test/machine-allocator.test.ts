import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { DEFAULT_RAM_BASE, Machine, MAX_ORDER, PAGE_SIZE } from "../src/machine/index.js";
import { allBytes, expectErrno } from "./fixtures/machine-helpers.js";

const BASE = DEFAULT_RAM_BASE;

type Op =
  | { kind: "alloc"; order: number }
  | { kind: "free"; pick: number }
  | { kind: "badFree"; pick: number; how: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ kind: fc.constant("alloc" as const), order: fc.nat(MAX_ORDER) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("free" as const), pick: fc.nat() }) },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant("badFree" as const), pick: fc.nat(), how: fc.nat(2) }),
  },
);

interface Owned {
  phys: bigint;
  order: number;
}

function indexOf(phys: bigint): number {
  return Number((phys - BASE) / BigInt(PAGE_SIZE));
}

/** True when some naturally aligned `2^order` run of pages is entirely unowned. */
function someFreeBlock(owner: Uint8Array, order: number): boolean {
  const n = 1 << order;
  for (let s = 0; s < owner.length; s += n) {
    let free = true;
    for (let p = s; p < s + n && free; p++) if (owner[p]) free = false;
    if (free) return true;
  }
  return false;
}

describe("machine page allocator", () => {
  it("never hands a page out twice, keeps accounting, aligns folios, zeroes, coalesces", () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 80 }), (ops) => {
        const m = new Machine({ memory: "8 MiB" });
        const total = m.totalPages;
        const owner = new Uint8Array(total);
        const owned: Owned[] = [];
        let ownedPages = 0;
        for (const op of ops) {
          if (op.kind === "alloc") {
            let phys: bigint;
            try {
              phys = m.allocPages(op.order);
            } catch (e) {
              expect((e as { code?: string }).code).toBe("ENOMEM");
              // Buddy with full coalescing: ENOMEM only when no aligned free run exists.
              expect(someFreeBlock(owner, op.order)).toBe(false);
              continue;
            }
            const size = PAGE_SIZE << op.order;
            expect((phys - BASE) % BigInt(size)).toBe(0n);
            expect(phys % BigInt(size)).toBe(0n);
            expect(phys >= BASE && phys + BigInt(size) <= m.end).toBe(true);
            const first = indexOf(phys);
            const clash = owner.subarray(first, first + (1 << op.order)).indexOf(1);
            expect(clash, "page handed out twice").toBe(-1);
            owner.fill(1, first, first + (1 << op.order));
            // Allocation always returns zeroed memory, even where old data was written and freed.
            expect(allBytes(m.view(phys, size), 0)).toBe(true);
            m.view(phys, size).fill(0xa5);
            owned.push({ phys, order: op.order });
            ownedPages += 1 << op.order;
          } else if (op.kind === "free") {
            if (owned.length === 0) continue;
            const [b] = owned.splice(op.pick % owned.length, 1);
            m.freePages(b!.phys, b!.order);
            owner.fill(0, indexOf(b!.phys), indexOf(b!.phys) + (1 << b!.order));
            ownedPages -= 1 << b!.order;
          } else {
            const before = m.stats();
            if (owned.length === 0 || op.how === 2) {
              // Not a head at all: an unowned page, or the second page of RAM when owned.
              const free = owner.indexOf(0);
              const target = free >= 0 ? BASE + BigInt(free * PAGE_SIZE) : BASE + 1n;
              expectErrno(() => m.freePages(target, 0), "EINVAL");
            } else {
              const b = owned[op.pick % owned.length]!;
              if (op.how === 0)
                expectErrno(() => m.freePages(b.phys, (b.order + 1) % (MAX_ORDER + 1)), "EINVAL");
              else if (b.order > 0) expectErrno(() => m.freePages(b.phys + BigInt(PAGE_SIZE), 0), "EINVAL");
            }
            expect(m.stats()).toEqual(before);
          }
          const s = m.stats();
          expect(s.totalPages).toBe(total);
          expect(s.freePages + s.allocatedPages).toBe(total);
          expect(s.allocatedPages).toBe(ownedPages);
          expect(s.preservedPages).toBe(0);
        }
        expect(m.blocks().map((b) => `${b.phys}/${b.order}`)).toEqual(
          [...owned].sort((a, b) => (a.phys < b.phys ? -1 : 1)).map((b) => `${b.phys}/${b.order}`),
        );
        for (const b of owned) m.freePages(b.phys, b.order);
        expect(m.stats()).toEqual({
          totalPages: total,
          freePages: total,
          allocatedPages: 0,
          preservedPages: 0,
        });
        // Everything coalesced back: RAM is again four free 2 MiB blocks.
        for (let i = 0; i < total >> MAX_ORDER; i++) {
          const p = m.allocPages(MAX_ORDER);
          expect(allBytes(m.view(p, PAGE_SIZE << MAX_ORDER), 0)).toBe(true);
        }
        expectErrno(() => m.allocPages(0), "ENOMEM");
      }),
      { numRuns: 150 },
    );
  });

  it("fails with ENOMEM when exhausted and recovers after a free", () => {
    const m = new Machine({ memory: "2 MiB" });
    const pages: bigint[] = [];
    for (let i = 0; i < 512; i++) pages.push(m.allocPages(0));
    expect(new Set(pages).size).toBe(512);
    const e = expectErrno(() => m.allocPages(0), "ENOMEM");
    expect(e.message).toContain("order 0");
    expectErrno(() => m.allocPages(MAX_ORDER), "ENOMEM");
    m.freePages(pages[7]!);
    expect(m.allocPages(0)).toBe(pages[7]);
    expect(m.stats()).toMatchObject({ freePages: 0, allocatedPages: 512 });
  });

  it("rejects bad orders and bad frees with EINVAL, preserved frees with EBUSY", () => {
    const m = new Machine({ memory: "4 MiB" });
    for (const order of [-1, 10, 1.5, Number.NaN]) expectErrno(() => m.allocPages(order), "EINVAL");
    const p = m.allocPages(2);
    expectErrno(() => m.freePages(p, 1), "EINVAL");
    expectErrno(() => m.freePages(p, 3), "EINVAL");
    expectErrno(() => m.freePages(p + 4096n, 0), "EINVAL");
    expectErrno(() => m.freePages(p + 1n, 2), "EINVAL");
    expectErrno(() => m.freePages(0n, 0), "EINVAL");
    expectErrno(() => m.freePages(m.end, 0), "EINVAL");
    const e = expectErrno(() => m.freePages(p + 4096n, 2), "EINVAL");
    expect(e.message).toContain(`0x${(p + 4096n).toString(16)}`);
    m.markPreserved(p + 4096n, 0);
    expectErrno(() => m.freePages(p, 2), "EBUSY");
    m.clearPreserved(p + 4096n, 0);
    m.freePages(p, 2);
    expectErrno(() => m.freePages(p, 2), "EINVAL"); // double free
    expect(m.stats().allocatedPages).toBe(0);
  });

  it("validates the machine configuration", () => {
    expectErrno(() => new Machine({ memory: "3 MiB" }), "EINVAL");
    expectErrno(() => new Machine({ memory: "4 MiB", base: 0n }), "EINVAL");
    expectErrno(() => new Machine({ memory: "4 MiB", base: 0x1000n }), "EINVAL");
    expectErrno(() => new Machine({ memory: "4 MiB", base: 1n << 52n }), "EINVAL");
    const m = new Machine({ memory: "4 MiB", base: 0x20_0000n });
    expect(m.base).toBe(0x20_0000n);
    expect(m.end).toBe(0x60_0000n);
    expect(m.memoryBytes).toBe(4 << 20);
    expect(m.totalPages).toBe(1024);
    expect(m.khoRoot).toBe(0n);
    expect(new Machine({ memory: "2 MiB" }).base).toBe(0x4000_0000n);
  });

  it("allocates and frees 20 000 mixed-order blocks on a 512 MiB machine and coalesces them all", () => {
    // Allocator cost is a benchmark figure, not a wall-clock assertion here.
    const m = new Machine({ memory: "512 MiB" });
    const blocks: Array<[bigint, number]> = [];
    for (let i = 0; i < 20_000; i++) {
      const order = i % 2;
      blocks.push([m.allocPages(order), order]);
    }
    for (let i = 0; i < blocks.length; i += 2) m.freePages(blocks[i]![0], blocks[i]![1]);
    for (let i = 1; i < blocks.length; i += 2) m.freePages(blocks[i]![0], blocks[i]![1]);
    expect(m.stats().freePages).toBe(m.totalPages);
    for (let i = 0; i < m.totalPages >> MAX_ORDER; i++) m.allocPages(MAX_ORDER);
    expect(m.stats().freePages).toBe(0);
  });
});
