// The read-only handover views: `liveupdate.received` (what a kernel got from the previous one)
// and `liveupdate.handingOver()` (what it would hand to the next one now), checked against the
// bytes `luo inspect` reads from a saved image, and the typed forms of `kexec()`.
import { describe, expect, expectTypeOf, it } from "vitest";
import { join } from "node:path";
import { createTestFile } from "@luo/core/testing";
import { Machine, inspectHandover, type HandoverView, type Kernel } from "@luo/core";
import { bootTest, enc, kexecOpen, rejects } from "./helpers/luo.js";
import { tempDir } from "./fixtures/machine-helpers.js";

/** Every level of a view is frozen. */
function expectDeepFrozen(v: HandoverView): void {
  expect(Object.isFrozen(v)).toBe(true);
  expect(Object.isFrozen(v.sessions)).toBe(true);
  expect(Object.isFrozen(v.flbs)).toBe(true);
  for (const s of v.sessions) {
    expect(Object.isFrozen(s)).toBe(true);
    expect(Object.isFrozen(s.files)).toBe(true);
    for (const f of s.files) expect(Object.isFrozen(f)).toBe(true);
  }
  for (const f of v.flbs) expect(Object.isFrozen(f)).toBe(true);
}

describe("handover views", () => {
  it("a cold boot received nothing and hands over what userspace preserved so far", async () => {
    const { kernel, proc: p, dev } = await bootTest({ flbs: 1, memory: "16 MiB" });
    expect(kernel.liveupdate.received).toEqual({ liveupdateNumber: 0n, sessions: [], flbs: [] });
    expectDeepFrozen(kernel.liveupdate.received);
    expect(kernel.liveupdate.handingOver()).toEqual({ liveupdateNumber: 1n, sessions: [], flbs: [] });

    const a = await dev.createSession("a");
    await dev.createSession("empty");
    await a.preserveFd(createTestFile(p, "x", enc("x")), 7n);
    const before = kernel.liveupdate.handingOver();
    expectDeepFrozen(before);
    expect(before.sessions.map((s) => [s.name, s.files.map((f) => [f.compatible, f.token])])).toEqual([
      ["a", [["luo-test-v1", 7n]]],
      ["empty", []],
    ]);
    expect(before.flbs).toEqual([
      { compatible: "liveupdate-test-flb-v0", data: expect.any(BigInt), count: 1n },
    ]);
    // A snapshot: later changes do not show in it, and it cannot be changed.
    await a.close();
    expect(before.sessions[0]!.files).toHaveLength(1);
    expect(kernel.liveupdate.handingOver().sessions.map((s) => s.name)).toEqual(["empty"]);
    expect(kernel.liveupdate.handingOver().flbs).toEqual([]);
    expect(() => {
      (before.sessions as unknown as unknown[]).push(1);
    }).toThrow(TypeError);
  });

  it("what kernel#1 hands over is what kernel#2 received and what luo inspect reads", async () => {
    const dir = await tempDir("views-");
    try {
      const { kernel: k1, proc: p, dev, plugins } = await bootTest({ flbs: 2, memory: "16 MiB" });
      for (const [name, tokens] of [
        ["vm-0", [1n, 2n]],
        ["vm-1", [3n]],
        ["none", []],
      ] as const) {
        const s = await dev.createSession(name);
        for (const t of tokens) await s.preserveFd(createTestFile(p, `${name}/${t}`, enc(`data ${t}`)), t);
      }
      let atReboot: HandoverView | undefined;
      k1.liveupdate.events.on("reboot:done", () => (atReboot = k1.liveupdate.handingOver()));
      const image = join(dir.dir, "m.img");
      expect(await k1.kexec({ saveTo: image })).toBeUndefined();
      expect(atReboot!.sessions.map((s) => s.files.length)).toEqual([2, 1, 0]);
      expect(atReboot!.flbs.map((f) => f.count)).toEqual([3n, 3n]);

      const report = inspectHandover(await Machine.load(image)); // a copy: inspecting rebuilds its allocator
      expect({
        liveupdateNumber: report.liveupdateNumber,
        sessions: report.sessions,
        flbs: report.flbs,
      }).toEqual(atReboot);

      const k2 = await (await Machine.load(image)).boot({ plugins });
      expect(k2.liveupdate.received).toEqual(atReboot);
      expectDeepFrozen(k2.liveupdate.received);
      // Retrieving and finishing does not change what was received.
      const q = k2.spawn("vmm");
      const dev2 = await q.openLiveUpdate();
      const s = await dev2.retrieveSession("vm-0");
      await s.retrieveFd(1n);
      await s.finish();
      await s.close();
      expect(k2.liveupdate.received).toEqual(atReboot);
      expect(k2.liveupdate.received).toBe(k2.liveupdate.received);
      expect(k2.liveupdate.handingOver()).toEqual({ liveupdateNumber: 2n, sessions: [], flbs: [] });
    } finally {
      await dir.cleanup();
    }
  });

  it("types kexec by its form: the next kernel in process, undefined with saveTo", async () => {
    const { kernel: k1 } = await bootTest({ memory: "16 MiB" });
    const k2 = await k1.kexec();
    expectTypeOf(k2).toEqualTypeOf<Kernel>();
    expect(k2.halted).toBe(false);
    const dir = await tempDir("views-");
    try {
      const saved = await k2.kexec({ saveTo: join(dir.dir, "m.img") });
      expectTypeOf(saved).toEqualTypeOf<undefined>();
      expect(saved).toBeUndefined();
    } finally {
      await dir.cleanup();
    }
    await rejects(k2.kexec(), "ESHUTDOWN");
    const { kernel: k3 } = await kexecOpen((await bootTest({ memory: "16 MiB" })).kernel);
    expect(k3.liveupdate.received.liveupdateNumber).toBe(1n);
  });
});
