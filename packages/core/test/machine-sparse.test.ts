// Sparse RAM: machines far larger than the host, page states that need no host memory (poison,
// zero), host memory released by the scrub, addresses near the top of a large RAM, splitPages,
// readInto, views within a 2 MiB section, and an image of a 1 TiB machine.
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MAX_ORDER, MAX_ORDER_BYTES, Machine, PAGE_SIZE, POISON_BYTE } from "../src/machine/index.js";
import { allBytes, expectErrno, isPoison, pattern, sameBytes, tempDir } from "./fixtures/machine-helpers.js";

const MiB = 2 ** 20;
const TiB = 2 ** 40;
let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => {
  ({ dir, cleanup } = await tempDir("sparse"));
});
afterAll(() => cleanup());

describe("sparse machine RAM", () => {
  it("powers on a 1 TiB machine without host memory for its RAM; addresses near its top work", () => {
    const before = process.memoryUsage().rss;
    const m = new Machine({ memory: "1 TiB", base: 1n << 44n });
    expect(m.totalPages).toBe(TiB / PAGE_SIZE);
    expect(m.stats()).toEqual({
      totalPages: TiB / PAGE_SIZE,
      freePages: TiB / PAGE_SIZE,
      allocatedPages: 0,
      preservedPages: 0,
    });
    expect(isPoison(m.peek(m.end - BigInt(PAGE_SIZE), PAGE_SIZE))).toBe(true);
    // Take 2 MiB blocks until one lies in the top 2 MiB of RAM: exercises the free runs.
    const blocks = Array.from({ length: 64 }, () => m.allocPages(MAX_ORDER));
    expect(blocks[0]).toBe(m.base);
    const last = m.end - BigInt(MAX_ORDER_BYTES);
    m.resetAllocator([{ phys: last, order: MAX_ORDER }]);
    expect(m.isAllocated(last)).toBe(true);
    m.writeU64(m.end - 8n, 0x0123_4567_89ab_cdefn);
    expect(m.readU64(m.end - 8n)).toBe(0x0123_4567_89ab_cdefn);
    expectErrno(() => m.read(m.end - 4n, 8), "EFAULT");
    // The kept block had poisoned pages: untouched bytes read as poison, not zeros.
    expect(isPoison(m.read(last, PAGE_SIZE))).toBe(true);
    expect(process.memoryUsage().rss - before).toBeLessThan(64 * MiB);
  });

  it("allocated pages read as zeros without host memory until written; the scrub gives memory back", () => {
    globalThis.gc?.();
    const before = process.memoryUsage().rss;
    const m = new Machine({ memory: "64 GiB" });
    const blocks: bigint[] = [];
    for (let i = 0; i < 4096; i++) blocks.push(m.allocPages(MAX_ORDER)); // 8 GiB allocated
    expect(allBytes(m.read(blocks[4095]!, MAX_ORDER_BYTES), 0)).toBe(true);
    // One page written in each block: 16 MiB of data, 8 GiB allocated.
    for (const [i, b] of blocks.entries()) m.write(b + BigInt(PAGE_SIZE * (i % 512)), pattern(PAGE_SIZE, i));
    expect(process.memoryUsage().rss - before).toBeLessThan(256 * MiB);
    expect(sameBytes(m.read(blocks[7]! + BigInt(7 * PAGE_SIZE), PAGE_SIZE), pattern(PAGE_SIZE, 7))).toBe(
      true,
    );
    m.markPreserved(blocks[7]!, MAX_ORDER);
    expect(m.scrub()).toBe(4095 * 512);
    expect(m.stats().allocatedPages).toBe(512);
    expect(sameBytes(m.read(blocks[7]! + BigInt(7 * PAGE_SIZE), PAGE_SIZE), pattern(PAGE_SIZE, 7))).toBe(
      true,
    );
    expect(isPoison(m.peek(blocks[8]!, PAGE_SIZE))).toBe(true);
    // Freed and reallocated: zeros again, and stale data is not visible.
    const again = m.allocPages(MAX_ORDER);
    expect(allBytes(m.read(again, MAX_ORDER_BYTES), 0)).toBe(true);
  });

  it("zero() of whole unwritten pages keeps them zero without host memory; of written pages writes in place (views stay live)", () => {
    const m = new Machine({ memory: "8 MiB" });
    const p = m.allocPages(2);
    const v = m.view(p, 4 * PAGE_SIZE);
    v.fill(0xaa);
    m.zero(p, 2 * PAGE_SIZE);
    expect(allBytes(v.subarray(0, 2 * PAGE_SIZE), 0)).toBe(true);
    expect(allBytes(v.subarray(2 * PAGE_SIZE), 0xaa)).toBe(true);
    const q = m.allocPages(0);
    m.zero(q, PAGE_SIZE);
    expect(allBytes(m.read(q, PAGE_SIZE), 0)).toBe(true);
  });

  it("view and copy work within a 2 MiB section; a view across a section boundary is EINVAL", () => {
    const m = new Machine({ memory: "8 MiB" });
    const a = m.allocPages(MAX_ORDER);
    const b = m.allocPages(MAX_ORDER);
    expect(b).toBe(a + BigInt(MAX_ORDER_BYTES));
    expectErrno(() => m.view(b - 8n, 16), "EINVAL");
    // read, write and copy across the boundary are fine.
    m.write(b - 8n, pattern(16, 3));
    expect(sameBytes(m.read(b - 8n, 16), pattern(16, 3))).toBe(true);
    m.copy(a, b - 8n, 16);
    expect(sameBytes(m.read(a, 16), pattern(16, 3))).toBe(true);
    m.writeU64(b - 4n, 0x1122334455667788n);
    expect(m.readU64(b - 4n)).toBe(0x1122334455667788n);
  });

  it("readInto copies into a caller's buffer, with the same checks as read", () => {
    const m = new Machine({ memory: "8 MiB" });
    const p = m.allocPages(1);
    m.write(p, pattern(2 * PAGE_SIZE, 5));
    const out = new Uint8Array(PAGE_SIZE + 10).fill(9);
    m.readInto(p + 100n, out, 10);
    expect(allBytes(out.subarray(0, 10), 9)).toBe(true);
    expect(sameBytes(out.subarray(10), pattern(2 * PAGE_SIZE, 5).subarray(100, 100 + PAGE_SIZE))).toBe(true);
    expectErrno(() => m.readInto(p + BigInt(PAGE_SIZE), new Uint8Array(2 * PAGE_SIZE)), "EFAULT");
    expectErrno(() => m.readInto(p, new Uint8Array(4), 5), "EINVAL");
    expectErrno(() => m.readInto(p, [1, 2] as unknown as Uint8Array), "EINVAL");
  });

  it("splitPages turns a block into order-0 blocks in place, keeping contents and preserved marks", () => {
    const m = new Machine({ memory: "8 MiB" });
    const p = m.allocPages(MAX_ORDER);
    m.write(p, pattern(MAX_ORDER_BYTES, 6));
    m.markPreserved(p + BigInt(3 * PAGE_SIZE), 0);
    expectErrno(() => m.splitPages(p, 3), "EINVAL");
    expectErrno(() => m.splitPages(p + BigInt(PAGE_SIZE), MAX_ORDER), "EINVAL");
    m.splitPages(p, MAX_ORDER);
    expect(m.blocks().filter((b) => b.phys >= p && b.phys < p + BigInt(MAX_ORDER_BYTES)).length).toBe(512);
    expect(m.isPreserved(p + BigInt(3 * PAGE_SIZE))).toBe(true);
    m.freePages(p + BigInt(PAGE_SIZE), 0);
    expectErrno(() => m.freePages(p, MAX_ORDER), "EINVAL");
    expect(m.isAllocated(p + BigInt(PAGE_SIZE))).toBe(false);
    expect(
      sameBytes(
        m.read(p + BigInt(2 * PAGE_SIZE), PAGE_SIZE),
        pattern(MAX_ORDER_BYTES, 6).subarray(2 * PAGE_SIZE, 3 * PAGE_SIZE),
      ),
    ).toBe(true);
    const stats = m.stats();
    expect(stats.allocatedPages).toBe(511);
    expect(stats.freePages + stats.allocatedPages).toBe(stats.totalPages);
  });

  it("saves and loads a 1 TiB machine: preserved pages only, spread over the range", async () => {
    const m = new Machine({ memory: "1 TiB" });
    const kept: bigint[] = [];
    // 16 blocks at the bottom, middle and top of RAM.
    const all: bigint[] = [];
    for (let i = 0; i < 4096; i++) all.push(m.allocPages(MAX_ORDER));
    m.resetAllocator([
      ...[0, 1, 2, 3].map((i) => ({ phys: m.base + BigInt(i * MAX_ORDER_BYTES), order: MAX_ORDER })),
      ...[0, 1, 2, 3].map((i) => ({
        phys: m.base + BigInt(TiB / 2 + i * MAX_ORDER_BYTES),
        order: MAX_ORDER,
      })),
      ...[1, 2, 3, 4].map((i) => ({ phys: m.end - BigInt(i * MAX_ORDER_BYTES), order: MAX_ORDER })),
    ]);
    for (const b of m.blocks()) {
      m.write(b.phys, pattern(MAX_ORDER_BYTES, Number((b.phys >> 21n) % 251n)));
      m.markPreserved(b.phys, MAX_ORDER);
      kept.push(b.phys);
    }
    const zeroBlock = m.allocPages(0); // allocated, never written, not preserved
    expect(m.isAllocated(zeroBlock)).toBe(true);
    const path = join(dir, "tib.img");
    await m.save(path, { preservedOnly: true });
    const l = await Machine.load(path);
    expect(l.memoryBytes).toBe(TiB);
    expect(l.blocks()).toEqual(kept.map((phys) => ({ phys, order: MAX_ORDER })));
    for (const phys of kept) {
      expect(
        sameBytes(l.read(phys, MAX_ORDER_BYTES), pattern(MAX_ORDER_BYTES, Number((phys >> 21n) % 251n))),
      ).toBe(true);
    }
    expect(l.peek(zeroBlock, 1)[0]).toBe(POISON_BYTE);
    expect(l.stats().preservedPages).toBe(12 * 512);
  });
});
