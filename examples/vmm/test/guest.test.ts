// The guest workload on plain memory: a run split by a save/restore of the vCPU equals a straight
// run, the replay verifies it, and one lost, stale or corrupted write is caught.
import { describe, expect, it } from "vitest";
import {
  WORD,
  decodeVcpuState,
  encodeVcpuState,
  initialVcpuState,
  runVcpu,
  verifyGuest,
  type GuestRam,
} from "../src/guest.js";

function ram(size: number): GuestRam & { bytes: Uint8Array } {
  const bytes = new Uint8Array(size);
  return {
    bytes,
    read: (o, n) => bytes.slice(o, o + n),
    write: (o, b) => bytes.set(b, o),
  };
}

const region = { start: 4096, size: 64 * 1024 };

describe("guest workload", () => {
  it("a run split by saving and restoring the vCPU equals a straight run and verifies", () => {
    const a = ram(region.start + region.size);
    const b = ram(region.start + region.size);
    const straight = runVcpu(a, region, initialVcpuState("g"), 2000);
    const half = runVcpu(b, region, initialVcpuState("g"), 1000);
    const restored = decodeVcpuState(encodeVcpuState(half));
    const split = runVcpu(b, region, restored, 1000);
    expect(split.tick).toBe(2000);
    expect(Buffer.from(split.hash).equals(Buffer.from(straight.hash))).toBe(true);
    expect(Buffer.from(a.bytes).equals(Buffer.from(b.bytes))).toBe(true);
    const v = verifyGuest(b, region, "g", split);
    expect(v).toMatchObject({ ok: true, ticks: 2000, problems: [] });
    // 2000 writes into 1024 words hit about 1024·(1 − e^−2) ≈ 885 distinct words.
    expect(v.words).toBeGreaterThan(800);
    // Outside the region nothing was written.
    expect(a.bytes.subarray(0, region.start).every((x) => x === 0)).toBe(true);
  });

  it("catches a lost write, a corrupted word and a wrong vCPU state", () => {
    const r = ram(region.start + region.size);
    const s = runVcpu(r, region, initialVcpuState("g"), 500);
    const written = [...Array(region.size / WORD).keys()]
      .map((i) => region.start + i * WORD)
      .find((o) => r.bytes[o + 32] !== 0 || r.bytes[o] !== 0)!;
    const saved = r.read(written, WORD);
    r.write(written, new Uint8Array(WORD)); // lost write
    expect(verifyGuest(r, region, "g", s).ok).toBe(false);
    r.write(written, saved);
    expect(verifyGuest(r, region, "g", s).ok).toBe(true);
    r.bytes[written + 7] ^= 1; // one flipped bit
    expect(verifyGuest(r, region, "g", s).problems[0]).toMatch(/guest RAM word at 0x/);
    r.bytes[written + 7] ^= 1;
    const wrong = { tick: s.tick, hash: s.hash.map((x, i) => (i === 0 ? x ^ 1 : x)) };
    expect(verifyGuest(r, region, "g", wrong).problems[0]).toMatch(/vCPU hash after tick 500/);
  });

  it("refuses a short vCPU state with EINVAL", () => {
    expect(() => decodeVcpuState(new Uint8Array(39))).toThrow(expect.objectContaining({ code: "EINVAL" }));
  });
});
