import { describe, expect, it } from "vitest";
import { Machine, PAGE_SIZE, POISON_BYTE } from "../src/machine/index.js";
import { allBytes, expectErrno, isPoison, pattern, sameBytes } from "./fixtures/machine-helpers.js";

const hex = (p: bigint): string => `0x${p.toString(16)}`;

describe("machine physical memory access", () => {
  it("reads, writes and views allocated memory", () => {
    const m = new Machine({ memory: "4 MiB" });
    const p = m.allocPages(2); // 16 KiB
    const data = pattern(10_000, 1);
    m.write(p + 100n, data);
    expect(sameBytes(m.read(p + 100n, data.length), data)).toBe(true);
    // read returns a copy
    const copy = m.read(p, 16);
    copy.fill(9);
    expect(m.read(p, 16)).not.toEqual(copy);
    // view is live in both directions
    const v = m.view(p, 4 * PAGE_SIZE);
    expect(v.length).toBe(4 * PAGE_SIZE);
    expect(sameBytes(v.subarray(100, 100 + data.length), data)).toBe(true);
    v[0] = 0x42;
    expect(m.read(p, 1)[0]).toBe(0x42);
    m.write(p + 1n, Uint8Array.of(0x43));
    expect(v[1]).toBe(0x43);
    expect(m.read(p, 0).length).toBe(0);
  });

  it("reads and writes little-endian u32 and u64, including unaligned and page-crossing", () => {
    const m = new Machine({ memory: "4 MiB" });
    const p = m.allocPages(1);
    m.writeU32(p, 0x11223344);
    expect(Array.from(m.read(p, 4))).toEqual([0x44, 0x33, 0x22, 0x11]);
    expect(m.readU32(p)).toBe(0x11223344);
    m.writeU64(p + 8n, 0x0102030405060708n);
    expect(Array.from(m.read(p + 8n, 8))).toEqual([8, 7, 6, 5, 4, 3, 2, 1]);
    expect(m.readU64(p + 8n)).toBe(0x0102030405060708n);
    m.writeU64(p + 4093n, 0xffff_ffff_ffff_fffen); // crosses into the second page
    expect(m.readU64(p + 4093n)).toBe(0xffff_ffff_ffff_fffen);
    m.writeU32(p + 4094n, 0xffff_ffff);
    expect(m.readU32(p + 4094n)).toBe(0xffff_ffff);
    expectErrno(() => m.writeU32(p, -1), "EINVAL");
    expectErrno(() => m.writeU32(p, 2 ** 32), "EINVAL");
    expectErrno(() => m.writeU32(p, 1.5), "EINVAL");
    expectErrno(() => m.writeU64(p, -1n), "EINVAL");
    expectErrno(() => m.writeU64(p, 1n << 64n), "EINVAL");
    expectErrno(() => m.readU64(p + 2n * 4096n - 4n), "EFAULT"); // runs past the block
  });

  it("zeroes and copies, with memmove semantics for overlap", () => {
    const m = new Machine({ memory: "4 MiB" });
    const a = m.allocPages(0);
    const b = m.allocPages(0);
    const data = pattern(PAGE_SIZE, 2);
    m.write(a, data);
    m.copy(b, a, PAGE_SIZE);
    expect(sameBytes(m.read(b, PAGE_SIZE), data)).toBe(true);
    m.copy(a + 10n, a, 100); // overlapping forward
    expect(sameBytes(m.read(a + 10n, 100), data.subarray(0, 100))).toBe(true);
    m.zero(a, 50);
    expect(allBytes(m.read(a, 50), 0)).toBe(true);
    expect(m.read(a, 51)[50]).not.toBe(0);
    expectErrno(() => m.copy(b, a, PAGE_SIZE + 1), "EFAULT");
  });

  it("rejects out-of-range and unallocated access with EFAULT naming the address", () => {
    const m = new Machine({ memory: "4 MiB" });
    const p = m.allocPages(0);
    const free = p + BigInt(PAGE_SIZE);
    expect(m.isAllocated(p)).toBe(true);
    expect(m.isAllocated(free)).toBe(false);
    const attempts: Array<[string, () => unknown, bigint]> = [
      ["read free", () => m.read(free, 1), free],
      ["read straddling", () => m.read(p + 4000n, 200), free],
      ["write free", () => m.write(free + 5n, Uint8Array.of(1)), free],
      ["view free", () => m.view(free, 8), free],
      ["readU32 free", () => m.readU32(free), free],
      ["writeU32 free", () => m.writeU32(free, 1), free],
      ["readU64 free", () => m.readU64(free + 8n), free],
      ["writeU64 free", () => m.writeU64(free, 1n), free],
      ["zero free", () => m.zero(free, 1), free],
      ["copy from free", () => m.copy(p, free, 4), free],
      ["copy to free", () => m.copy(free, p, 4), free],
      ["below RAM", () => m.read(m.base - 1n, 1), m.base - 1n],
      ["at end", () => m.read(m.end, 1), m.end],
      ["past end", () => m.peek(m.end - 4n, 8), m.end - 4n],
      ["address 0", () => m.readU64(0n), 0n],
      ["huge", () => m.read(1n << 63n, 1), 1n << 63n],
      ["isPreserved outside", () => m.isPreserved(m.end), m.end],
    ];
    for (const [name, fn, addr] of attempts) {
      const e = expectErrno(fn, "EFAULT");
      expect(e.message, name).toContain(hex(addr));
    }
    expectErrno(() => m.read(p, -1), "EINVAL");
    expectErrno(() => m.read(p, 1.5), "EINVAL");
    expectErrno(() => m.read(Number(p) as unknown as bigint, 1), "EINVAL");
  });

  it("peek bypasses the allocation check: fresh RAM reads as poison, freed pages keep stale data", () => {
    const m = new Machine({ memory: "4 MiB" });
    expect(isPoison(m.peek(m.base, m.memoryBytes))).toBe(true);
    const p = m.allocPages(0);
    expect(allBytes(m.peek(p, PAGE_SIZE), 0)).toBe(true);
    m.write(p, Uint8Array.of(1, 2, 3));
    m.freePages(p);
    expect(Array.from(m.peek(p, 4))).toEqual([1, 2, 3, 0]);
    // a range spanning a live and a never-used page
    const mixed = m.peek(p + BigInt(PAGE_SIZE) - 2n, 4);
    expect(Array.from(mixed)).toEqual([0, 0, POISON_BYTE, POISON_BYTE]);
  });

  it("marks and clears preserved pages, which must be allocated", () => {
    const m = new Machine({ memory: "4 MiB" });
    const p = m.allocPages(3);
    m.markPreserved(p + 2n * 4096n, 1);
    expect(m.stats().preservedPages).toBe(2);
    m.markPreserved(p + 2n * 4096n, 1); // idempotent
    expect(m.stats().preservedPages).toBe(2);
    expect(m.isPreserved(p + 2n * 4096n + 17n)).toBe(true);
    expect(m.isPreserved(p)).toBe(false);
    expect(m.isPreservedRange(p + 2n * 4096n + 17n, 2)).toBe(true);
    expect(m.isPreservedRange(p + 2n * 4096n, 3)).toBe(false);
    expect(m.isPreservedRange(p, 0)).toBe(true);
    expectErrno(() => m.isPreservedRange(m.end - 4096n, 2), "EFAULT");
    expectErrno(() => m.isPreservedRange(m.end, 0), "EFAULT");
    expectErrno(() => m.isPreservedRange(p, -1), "EINVAL");
    m.markPreserved(p, 3);
    expect(m.stats().preservedPages).toBe(8);
    expectErrno(() => m.markPreserved(p + 1n, 0), "EINVAL");
    expectErrno(() => m.markPreserved(p, 10), "EINVAL");
    expectErrno(() => m.markPreserved(p + 8n * 4096n, 0), "EFAULT"); // not allocated
    expectErrno(() => m.markPreserved(p, 4), "EFAULT"); // runs past the allocation
    expectErrno(() => m.markPreserved(m.end, 0), "EFAULT");
    m.clearPreserved(p, 2);
    expect(m.stats().preservedPages).toBe(4);
    m.clearPreserved(p, 2); // idempotent
    expect(m.stats().preservedPages).toBe(4);
    expectErrno(() => m.clearPreserved(m.end - 4096n, 1), "EFAULT");
    expectErrno(() => m.clearPreserved(p + 3n, 0), "EINVAL");
  });

  it("stores any u64 as the KHO root", () => {
    const m = new Machine({ memory: "2 MiB" });
    m.khoRoot = 0x1234_5000n;
    expect(m.khoRoot).toBe(0x1234_5000n);
    m.khoRoot = 0n;
    expect(m.khoRoot).toBe(0n);
    expectErrno(() => (m.khoRoot = -1n), "EINVAL");
    expectErrno(() => (m.khoRoot = 1n << 64n), "EINVAL");
  });
});
