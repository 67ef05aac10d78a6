import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Machine, MAX_ORDER, PAGE_SIZE } from "../src/machine/index.js";
import { allBytes, expectErrno, isPoison, pattern, sameBytes } from "./fixtures/machine-helpers.js";

const P = BigInt(PAGE_SIZE);

describe("machine scrub (kexec)", () => {
  it("keeps preserved pages, poisons every other page and frees non-preserved allocations", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            order: fc.nat(4),
            preserve: fc.oneof(
              fc.constant("none" as const),
              fc.constant("all" as const),
              fc.record({ first: fc.nat(15), order: fc.nat(2) }),
            ),
            free: fc.boolean(),
          }),
          { maxLength: 25 },
        ),
        (specs) => {
          const m = new Machine({ memory: "8 MiB" });
          const expected = new Map<bigint, Uint8Array>(); // preserved page → bytes
          specs.forEach((s, i) => {
            const phys = m.allocPages(s.order);
            const size = PAGE_SIZE << s.order;
            const data = pattern(size, i + 1);
            m.write(phys, data);
            if (s.free) {
              m.freePages(phys, s.order);
              return;
            }
            let first = 0;
            let count = 0;
            if (s.preserve === "all") count = 1 << s.order;
            else if (s.preserve !== "none") {
              const n = 1 << Math.min(s.preserve.order, s.order);
              first = Math.floor((s.preserve.first % (1 << s.order)) / n) * n;
              count = n;
            }
            if (count > 0) m.markPreserved(phys + BigInt(first) * P, Math.log2(count));
            for (let k = first; k < first + count; k++) {
              expected.set(phys + BigInt(k) * P, data.subarray(k * PAGE_SIZE, (k + 1) * PAGE_SIZE));
            }
          });
          expect(m.stats().preservedPages).toBe(expected.size);
          m.scrub();
          const s = m.stats();
          expect(s.allocatedPages).toBe(s.preservedPages);
          expect(s.preservedPages).toBe(expected.size);
          expect(s.freePages + s.allocatedPages).toBe(s.totalPages);
          for (let pfn = 0; pfn < m.totalPages; pfn++) {
            const phys = m.base + BigInt(pfn) * P;
            const bytes = m.peek(phys, PAGE_SIZE);
            const want = expected.get(phys);
            if (want === undefined) {
              if (!isPoison(bytes)) expect.fail(`page 0x${phys.toString(16)} is not poisoned`);
              expect(m.isAllocated(phys)).toBe(false);
            } else {
              expect(Buffer.from(bytes).equals(want)).toBe(true);
              expect(m.isPreserved(phys) && m.isAllocated(phys)).toBe(true);
            }
          }
          // The surviving blocks cover exactly the preserved pages.
          let covered = 0;
          for (const b of m.blocks()) {
            for (let k = 0; k < 1 << b.order; k++) expect(expected.has(b.phys + BigInt(k) * P)).toBe(true);
            covered += 1 << b.order;
          }
          expect(covered).toBe(expected.size);
          // A second scrub has nothing to do.
          expect(m.scrub()).toBe(0);
        },
      ),
      { numRuns: 40 },
    );
  });

  it("costs in proportion to pages touched since the last scrub", () => {
    const m = new Machine({ memory: "64 MiB" });
    expect(m.scrub()).toBe(0); // power-on RAM is poisoned lazily
    const keep = m.allocPages(0);
    m.markPreserved(keep);
    const tmp = [m.allocPages(3), m.allocPages(0)];
    m.freePages(tmp[1]!);
    expect(m.scrub()).toBe(9);
    expect(m.scrub()).toBe(0);
    const again = m.allocPages(0);
    expect(allBytes(m.read(again, PAGE_SIZE), 0)).toBe(true); // allocation zeroes poison
    expect(m.scrub()).toBe(1);
    expect(isPoison(m.peek(again, PAGE_SIZE))).toBe(true);
    expect(m.stats()).toMatchObject({ allocatedPages: 1, preservedPages: 1 });
  });
});

describe("machine resetAllocator", () => {
  it("keeps exactly the given blocks, allocated and not preserved, contents untouched", () => {
    const m = new Machine({ memory: "8 MiB" });
    const a = m.allocPages(2);
    const b = m.allocPages(0);
    const c = m.allocPages(MAX_ORDER);
    m.write(a, pattern(4 * PAGE_SIZE, 1));
    m.write(c, pattern(PAGE_SIZE << MAX_ORDER, 3));
    m.markPreserved(a, 2);
    m.markPreserved(c, MAX_ORDER);
    m.scrub();
    const keep = [
      { phys: c, order: MAX_ORDER },
      { phys: a, order: 2 },
    ];
    m.resetAllocator(keep);
    expect(m.blocks()).toEqual([...keep].sort((x, y) => (x.phys < y.phys ? -1 : 1)));
    expect(m.stats()).toEqual({
      totalPages: 2048,
      freePages: 2048 - 4 - 512,
      allocatedPages: 4 + 512,
      preservedPages: 0,
    });
    expect(m.isPreserved(a)).toBe(false);
    expect(sameBytes(m.read(a, 4 * PAGE_SIZE), pattern(4 * PAGE_SIZE, 1))).toBe(true);
    expect(sameBytes(m.read(c, PAGE_SIZE << MAX_ORDER), pattern(PAGE_SIZE << MAX_ORDER, 3))).toBe(true);
    expect(m.isAllocated(b)).toBe(false);
    // Kept blocks are freeable with their order; everything coalesces again.
    expectErrno(() => m.freePages(a, 1), "EINVAL");
    m.freePages(a, 2);
    m.freePages(c, MAX_ORDER);
    expect(m.stats().freePages).toBe(2048);
    for (let i = 0; i < 4; i++) m.allocPages(MAX_ORDER);
  });

  it("keeping a poisoned page keeps it reading as poison; an empty list frees everything", () => {
    const m = new Machine({ memory: "4 MiB" });
    const p = m.base + 5n * P;
    m.resetAllocator([{ phys: p, order: 0 }]);
    expect(isPoison(m.read(p, PAGE_SIZE))).toBe(true);
    m.allocPages(0);
    m.resetAllocator([]);
    expect(m.stats()).toMatchObject({ freePages: 1024, allocatedPages: 0 });
  });

  it("rejects overlapping, misaligned and out-of-RAM blocks with EINVAL and changes nothing", () => {
    const m = new Machine({ memory: "4 MiB" });
    const p = m.allocPages(1);
    m.markPreserved(p, 1);
    const before = { stats: m.stats(), blocks: m.blocks() };
    const bad: Array<Array<{ phys: bigint; order: number }>> = [
      [
        { phys: m.base, order: 2 },
        { phys: m.base + 3n * P, order: 0 },
      ],
      [
        { phys: m.base, order: 0 },
        { phys: m.base, order: 0 },
      ],
      [{ phys: m.base + P, order: 1 }],
      [{ phys: m.base + 1n, order: 0 }],
      [{ phys: m.end, order: 0 }],
      [{ phys: m.base - P, order: 0 }],
      [{ phys: m.base, order: 10 }],
      [
        { phys: m.base + 2n * 1024n * 1024n, order: MAX_ORDER },
        { phys: m.end - P, order: 0 },
      ],
    ];
    for (const keep of bad) expectErrno(() => m.resetAllocator(keep), "EINVAL");
    expect({ stats: m.stats(), blocks: m.blocks() }).toEqual(before);
  });
});
