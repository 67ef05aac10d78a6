// The queries a live-update agent needs from the kernel: which compatibles a plugin set serves
// (booted on a scratch machine, the running kernel untouched), why an incoming session cannot
// finish (per file: retrieved or not, canFinish veto), and which file's freeze failed.
import { describe, expect, it } from "vitest";
import { pluginCompatibles } from "@luo/core";
import { createTestFile, testHandlerPlugin, TEST_HANDLER_COMPATIBLE } from "@luo/core/testing";
import { bootTest, enc, kexecOpen, rejects, valuePlugin, VALUE_COMPATIBLE } from "./helpers/luo.js";

describe("pluginCompatibles and Kernel.compatibles", () => {
  it("lists the handlers and FLBs a plugin set registers, without touching the running kernel", async () => {
    const { kernel } = await bootTest({ flbs: 2 });
    const served = await pluginCompatibles([testHandlerPlugin({ flbs: 2 }), valuePlugin]);
    expect(served.fileHandlers).toEqual([TEST_HANDLER_COMPATIBLE, VALUE_COMPATIBLE]);
    expect(served.flbs).toEqual(["liveupdate-test-flb-v0", "liveupdate-test-flb-v1"]);
    expect(kernel.compatibles()).toEqual({
      fileHandlers: [TEST_HANDLER_COMPATIBLE],
      flbs: ["liveupdate-test-flb-v0", "liveupdate-test-flb-v1"],
    });
    expect(await pluginCompatibles([])).toEqual({ fileHandlers: [], flbs: [] });
    expect(kernel.halted).toBe(false);
  });

  it("fails as the next kernel's boot would", async () => {
    const bad = { name: "needs-x", dependencies: ["x"], register() {} };
    await rejects(pluginCompatibles([bad]), "ENOENT");
  });
});

describe("SessionHandle.finishStatus", () => {
  it("names the file whose handler vetoes FINISH and the files never retrieved", async () => {
    const { kernel, proc, dev, plugin } = await bootTest({ memory: "32 MiB" });
    const s = await dev.createSession("vm");
    for (const t of [1n, 2n, 3n]) await s.preserveFd(createTestFile(proc, `f${t}`, enc("x")), t);
    await rejects(s.finishStatus(), "EINVAL"); // outgoing
    const next = await kexecOpen(kernel);
    const s2 = await next.dev.retrieveSession("vm");
    await s2.retrieveFd(1n);
    plugin.control.fail("canFinish", { only: [2n] });
    const st = await s2.finishStatus();
    expect(st.session).toBe("vm");
    expect(st.state).toBe("live");
    expect(st.files.map((f) => [f.token, f.retrieved, f.canFinish])).toEqual([
      [1n, true, true],
      [2n, false, false],
      [3n, false, true],
    ]);
    expect(st.files.every((f) => f.compatible === TEST_HANDLER_COMPATIBLE)).toBe(true);
    await rejects(s2.finish(), "EBUSY"); // the preview agrees with FINISH, and changed nothing
    plugin.control.heal();
    expect((await s2.finishStatus()).files.every((f) => f.canFinish)).toBe(true);
    await s2.finish();
    expect((await s2.finishStatus()).files).toEqual([]);
    await s2.close();
    await rejects(s2.finishStatus(), "EBADF");
  });
});

describe("file:freeze-failed", () => {
  it("reports the session, token and compatible of the file whose freeze failed", async () => {
    const { kernel, proc, dev, plugin } = await bootTest();
    const s = await dev.createSession("vm-a");
    await s.preserveFd(createTestFile(proc, "a"), 7n);
    plugin.control.fail("freeze", { code: "EIO" });
    const seen: unknown[] = [];
    kernel.liveupdate.events.on("file:freeze-failed", (e) =>
      seen.push([e.session, e.token, e.compatible, e.error.code]),
    );
    await rejects(kernel.kexec(), "EIO");
    expect(seen).toEqual([["vm-a", 7n, TEST_HANDLER_COMPATIBLE, "EIO"]]);
    expect(kernel.halted).toBe(false);
  });
});
