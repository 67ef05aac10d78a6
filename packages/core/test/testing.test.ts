// @luo/core/testing: the test plugin's per-kernel state, arming and clearing single faults, and
// the test FLBs' log of the value each callback saw.
import { describe, expect, it } from "vitest";
import { Machine } from "@luo/core";
import { TEST_FLB_MAGIC, TestControl, createTestFile, testHandlerPlugin } from "@luo/core/testing";
import { enc, kexec, rejects, throws } from "./helpers/luo.js";

const M0 = TEST_FLB_MAGIC;
const M1 = TEST_FLB_MAGIC + 1n;

describe("test plugin state", () => {
  it("every kernel gets fresh switches and log, also kexec() that reuses the plugin object", async () => {
    const plugin = testHandlerPlugin({ flbs: 1 });
    throws(() => plugin.control, "ENOENT"); // no kernel yet
    const k1 = await new Machine({ memory: "16 MiB" }).boot({ plugins: [plugin] });
    const c1 = plugin.control;
    const p = k1.spawn("vmm");
    const s = await (await p.openLiveUpdate()).createSession("vm");
    await s.preserveFd(createTestFile(p, "a", enc("a")), 1n);
    c1.fail("retrieve");
    expect(c1.calls("preserve")).toEqual([1n]);

    const k2 = await kexec(k1); // no plugins option: the same plugin object registers again
    const c2 = plugin.control;
    expect(c2).not.toBe(c1);
    expect(plugin.controlOf(k2)).toBe(c2);
    expect(plugin.controlOf(k1)).toBe(c1);
    expect(c2.faults.size, "k1's armed fault does not follow into k2").toBe(0);
    expect(c2.log).toEqual([]);
    const q = k2.spawn("vmm");
    const inc = await (await q.openLiveUpdate()).retrieveSession("vm");
    await inc.retrieveFd(1n); // k1's retrieve fault is not armed here
    expect(c2.calls("retrieve")).toEqual([1n]);
    expect(c1.calls("retrieve"), "k2's calls are not in k1's log").toEqual([]);

    const k3 = await kexec(k2);
    expect(plugin.control.log).toEqual([]);
    throws(() => plugin.controlOf({ container: k3.container.createChildContainer() }), "ENOENT");
  });

  it("a shared control spans kernels when given explicitly", async () => {
    const control = new TestControl();
    const plugin = testHandlerPlugin({ control });
    const k1 = await new Machine({ memory: "16 MiB" }).boot({ plugins: [plugin] });
    const k2 = await kexec(k1);
    expect(plugin.control).toBe(control);
    expect(plugin.controlOf(k1)).toBe(control);
    expect(plugin.controlOf(k2)).toBe(control);
  });
});

describe("fault switches", () => {
  it("clear(op) disarms one fault and leaves the others armed; heal() disarms all", async () => {
    const plugin = testHandlerPlugin();
    const k = await new Machine({ memory: "16 MiB" }).boot({ plugins: [plugin] });
    const p = k.spawn("vmm");
    const s = await (await p.openLiveUpdate()).createSession("vm");
    const c = plugin.control;
    c.fail("preserve", { code: "ENOSPC" }).fail("freeze", { code: "EAGAIN" });
    await rejects(s.preserveFd(createTestFile(p, "a"), 1n), "ENOSPC");
    c.clear("preserve");
    expect([...c.faults.keys()]).toEqual(["freeze"]);
    await s.preserveFd(createTestFile(p, "a"), 1n);
    await rejects(k.kexec(), "EAGAIN"); // the freeze fault is still armed
    c.fail("unfreeze").heal();
    expect(c.faults.size).toBe(0);
    expect(await k.kexec()).toBeDefined();
  });
});

describe("test FLB log values", () => {
  it("preserve logs the data it produced, unpreserve the data it was given", async () => {
    const plugin = testHandlerPlugin({ flbs: 2 });
    const k = await new Machine({ memory: "16 MiB" }).boot({ plugins: [plugin] });
    const p = k.spawn("vmm");
    const s = await (await p.openLiveUpdate()).createSession("vm");
    await s.preserveFd(createTestFile(p, "a"), 1n);
    await s.close();
    const c = plugin.control;
    expect(c.values("flbPreserve")).toEqual([M0, M1]);
    expect(c.values("flbUnpreserve")).toEqual([M1, M0]);
    expect(c.log.filter((x) => x.op.startsWith("flb")).map((x) => [x.op, x.key, x.value])).toEqual([
      ["flbPreserve", 0n, M0],
      ["flbPreserve", 1n, M1],
      ["flbUnpreserve", 1n, M1],
      ["flbUnpreserve", 0n, M0],
    ]);
  });

  it("retrieve logs the incoming data before checking it; finish logs the object's value", async () => {
    const plugin = testHandlerPlugin({ flbs: 2 });
    const k1 = await new Machine({ memory: "16 MiB" }).boot({ plugins: [plugin] });
    const p = k1.spawn("vmm");
    const s = await (await p.openLiveUpdate()).createSession("vm");
    await s.preserveFd(createTestFile(p, "a"), 1n);
    const k2 = await kexec(k1);
    const c = plugin.control;
    const q = k2.spawn("vmm");
    const inc = await (await q.openLiveUpdate()).retrieveSession("vm");
    await inc.finish();
    expect(plugin.controlOf(k1).values("flbPreserve")).toEqual([M0, M1]);
    // Retrieved lazily by the last dependent file's finish, in reverse link order.
    expect(c.values("flbRetrieve"), "retrieve got the data preserve produced").toEqual([M1, M0]);
    expect(c.values("flbFinish")).toEqual([M1, M0]);
  });

  it("retrieve rejects a value that is not its magic, after logging what it saw", async () => {
    const plugin = testHandlerPlugin({ flbs: 1 });
    const k1 = await new Machine({ memory: "16 MiB" }).boot({ plugins: [plugin] });
    const p = k1.spawn("vmm");
    const s = await (await p.openLiveUpdate()).createSession("vm");
    await s.preserveFd(createTestFile(p, "a"), 1n);
    const k2 = await kexec(k1);
    // The FLB's retrieve called directly with a value the first kernel never handed over.
    const flb = plugin.testFlbs[0]!;
    const e = await rejects(
      Promise.resolve().then(() => flb.retrieve({ incoming: k2.incoming!, data: 42n })),
      "EINVAL",
    );
    expect(e.message).toContain("liveupdate-test-flb-v0");
    expect(plugin.control.log.at(-1)).toEqual({ op: "flbRetrieve", key: 0n, failed: false, value: 42n });
    expect(plugin.control.values("flbRetrieve")).toEqual([42n]);
  });
});
