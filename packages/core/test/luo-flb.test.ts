// File-Lifecycle-Bound global state: preserve once on the first
// dependent file in any session (FLBs in registration order), unpreserve once when the last one
// goes (reverse order), the serialized count, lazy and cached incoming retrieve that sees the
// handed-over magic (0xFEEDF00DCAFEBEE0 + i, like the kernel's liveupdate-test-flb-v<i>), and
// finish exactly once when the last dependent file finishes — across sessions.
import { describe, expect, it } from "vitest";
import { TEST_FLB_MAGIC, createTestFile, testHandlerPlugin } from "@luo/core/testing";
import { bootTest, kexecOpen, rejects, type TestWorld } from "./helpers/luo.js";

const FLBS = 3;
const flbOps = (w: TestWorld, from = 0) =>
  w.plugin.control.log
    .slice(from)
    .filter((x) => x.op.startsWith("flb"))
    .map((x) => `${x.op}:${x.key}`);

describe("FLB, outgoing", () => {
  it("preserve once for the first file in any session, unpreserve once (reverse order) when the last file goes", async () => {
    const w = await bootTest({ flbs: FLBS });
    const { kernel, proc, dev, plugin } = w;
    const flbs = plugin.testFlbs;
    for (const f of flbs) expect(await kernel.liveupdate.flbs.getOutgoing(f)).toBeUndefined();
    const a = await dev.createSession("a");
    const b = await dev.createSession("b");
    await a.preserveFd(createTestFile(proc, "a1"), 1);
    expect(flbOps(w)).toEqual(["flbPreserve:0", "flbPreserve:1", "flbPreserve:2"]);
    for (const [i, f] of flbs.entries()) {
      expect(await kernel.liveupdate.flbs.getOutgoing(f)).toEqual({ magic: TEST_FLB_MAGIC + BigInt(i) });
    }
    await a.preserveFd(createTestFile(proc, "a2"), 2);
    await b.preserveFd(createTestFile(proc, "b1"), 1);
    expect(flbOps(w)).toHaveLength(3);
    expect(kernel.liveupdate.flbs.state(flbs[0]!)!.outCount).toBe(3);

    // Closing one session drops its two references; the FLBs stay.
    await a.close();
    expect(flbOps(w)).toHaveLength(3);
    expect(kernel.liveupdate.flbs.state(flbs[0]!)!.outCount).toBe(1);
    expect(await kernel.liveupdate.flbs.getOutgoing(flbs[2]!)).toEqual({ magic: TEST_FLB_MAGIC + 2n });
    // The last file goes: unpreserve exactly once each, in reverse registration order.
    await b.close();
    expect(flbOps(w, 0).slice(3)).toEqual(["flbUnpreserve:2", "flbUnpreserve:1", "flbUnpreserve:0"]);
    for (const f of flbs) expect(await kernel.liveupdate.flbs.getOutgoing(f)).toBeUndefined();
    // And a new first file preserves them again.
    const c = await dev.createSession("c");
    await c.preserveFd(createTestFile(proc, "c1"), 1);
    expect(flbOps(w).slice(6)).toEqual(["flbPreserve:0", "flbPreserve:1", "flbPreserve:2"]);
  });

  it("getOutgoing/getIncoming of an FLB that is not registered is ENOENT; on a cold boot getIncoming is ENODATA", async () => {
    const w = await bootTest({ flbs: 1 });
    const stranger = testHandlerPlugin({ flbs: 1 }).testFlbs[0]!; // same compatible, another object
    await rejects(w.kernel.liveupdate.flbs.getOutgoing(stranger), "ENOENT");
    await rejects(w.kernel.liveupdate.flbs.getIncoming(stranger), "ENOENT");
    await rejects(w.kernel.liveupdate.flbs.getIncoming(w.plugin.testFlbs[0]!), "ENODATA");
  });
});

describe("FLB, across kexec", () => {
  /** Sessions a (2 files) and b (1 file), a third session closed before reboot; kexec. */
  async function handedOver() {
    const w = await bootTest({ flbs: FLBS });
    const { proc, dev } = w;
    const a = await dev.createSession("a");
    const b = await dev.createSession("b");
    const gone = await dev.createSession("gone");
    await a.preserveFd(createTestFile(proc, "a1"), 1);
    await gone.preserveFd(createTestFile(proc, "g1"), 1);
    await a.preserveFd(createTestFile(proc, "a2"), 2);
    await b.preserveFd(createTestFile(proc, "b1"), 1);
    await gone.close();
    const mark = w.plugin.control.log.length;
    const next = await kexecOpen(w.kernel);
    expect(flbOps(w, mark)).toEqual([]); // FLBs have no freeze step
    return { ...next, w };
  }

  it("the serialized count is the number of dependent files at reboot; retrieve sees the magic, once", async () => {
    const { kernel: k2, w } = await handedOver();
    const flbs = w.plugin.testFlbs;
    for (const [i, f] of flbs.entries()) {
      const st = k2.liveupdate.flbs.state(f)!;
      expect(st.inRecord).toMatchObject({
        compatible: `liveupdate-test-flb-v${i}`,
        data: TEST_FLB_MAGIC + BigInt(i),
      });
      expect(st.inCount).toBe(3n);
    }
    const mark = w.plugin.control.log.length;
    const obj0 = await k2.liveupdate.flbs.getIncoming(flbs[0]!);
    expect(obj0).toEqual({ magic: 0xfeedf00dcafebee0n });
    expect(await k2.liveupdate.flbs.getIncoming(flbs[0]!)).toBe(obj0); // cached
    const obj2 = await k2.liveupdate.flbs.getIncoming(flbs[2]!);
    expect(obj2.magic).toBe(0xfeedf00dcafebee2n);
    expect(flbOps(w, mark)).toEqual(["flbRetrieve:0", "flbRetrieve:2"]);
  });

  it("finish runs exactly once, when the last dependent file of the last session finishes (auto-retrieving if needed)", async () => {
    const { kernel: k2, dev, w } = await handedOver();
    const flbs = w.plugin.testFlbs;
    await k2.liveupdate.flbs.getIncoming(flbs[1]!);
    const mark = w.plugin.control.log.length;

    const a = await dev.retrieveSession("a");
    await a.retrieveFd(2);
    await a.finish();
    expect(flbOps(w, mark)).toEqual([]); // b still holds a reference
    for (const f of flbs) expect(k2.liveupdate.flbs.state(f)!.inCount).toBe(1n);
    await a.close();

    const b = await dev.retrieveSession("b");
    await b.finish();
    // Reverse registration order; FLBs 0 and 2 were never asked for, so they are retrieved first.
    expect(flbOps(w, mark)).toEqual([
      "flbRetrieve:2",
      "flbFinish:2",
      "flbFinish:1",
      "flbRetrieve:0",
      "flbFinish:0",
    ]);
    for (const f of flbs) await rejects(k2.liveupdate.flbs.getIncoming(f), "ENODATA");
    await b.finish();
    await b.close();
    expect(flbOps(w, mark)).toHaveLength(5);
    expect(k2.incoming!.unrestoredPages).toBe(0);
  });

  it("an FLB the previous kernel did not hand over is ENOENT in the next one", async () => {
    const w = await bootTest({ flbs: 2 });
    const s = await w.dev.createSession("s");
    await s.preserveFd(createTestFile(w.proc, "f"), 1);
    const upgraded = testHandlerPlugin({ control: w.plugin.control, flbs: 3 });
    const { kernel: k2 } = await kexecOpen(w.kernel, [upgraded]);
    expect((await k2.liveupdate.flbs.getIncoming(upgraded.testFlbs[1]!)).magic).toBe(TEST_FLB_MAGIC + 1n);
    await rejects(k2.liveupdate.flbs.getIncoming(upgraded.testFlbs[2]!), "ENOENT");
  });
});
