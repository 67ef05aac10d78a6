// luod's failure paths, each with exactly what survives: a client that dies before ready (both
// policies), a client that refuses or never answers, a freeze failure, a pre-flight refusal,
// luod dying before the kexec, and a client that never comes back after the reboot.
import { describe, expect, it } from "vitest";
import { isLiveUpdateError, type Kernel } from "@luo/core";
import { createTestFile, testHandlerPlugin } from "@luo/core/testing";
import { memfd } from "@luo/memfd-handler";
import { connectLuod, luoctl, startLuod } from "../src/index.js";
import { coldBaseline, host, ramPattern, reclaim, settle, RAM_BYTES, type Host } from "./helpers.js";

/** Outgoing sessions and LUO-owned files of the host's (first) kernel. */
const held = (h: Host) => h.kernel.liveupdate.stats();

describe("a client dies before ready", () => {
  it("policy continue: its session is closed and unpreserved, the others go through", async () => {
    const h: Host = await host(3, {
      vmm: (i) => (i === 1 ? { onPrepare: () => h.vmms[1]!.proc.exit() } : {}),
    });
    const r = await h.luod.update();
    expect(r).toMatchObject({ ok: true, lost: ["vmm-1"] });
    expect(h.luod.messages).toContain('client vmm-1 disconnected: closed its sessions "vm-1"');
    const k2 = (await h.next)!;
    const luod2 = await startLuod(k2);
    expect((await luod2.status()).incoming.map((i) => i.name)).toEqual(["vm-0", "vm-2"]);
    const p = k2.spawn("vmm-1");
    const c = await connectLuod(p, { name: "vmm-1" });
    expect(c.hello.sessions).toEqual([]);
    const err = await c.retrieveSession("vm-1").catch((e: unknown) => e);
    expect(isLiveUpdateError(err, "ENOENT")).toBe(true);
    c.close();
    await reclaim(k2, 0);
    await reclaim(k2, 2);
    expect((await luod2.status()).ownSession).toBe("finished");
    luod2.exit();
    p.exit();
    expect(k2.machine.stats()).toMatchObject(await coldBaseline(h.plugins));
  });

  it("policy abort: the update stops, the others resume with their sessions intact", async () => {
    const resumed: string[] = [];
    const h: Host = await host(3, {
      clientLost: "abort",
      vmm: (i) =>
        i === 1
          ? { onPrepare: () => h.vmms[1]!.proc.exit() }
          : { onResume: (reason) => resumed.push(`vmm-${i}: ${reason}`) },
    });
    const r = await h.luod.update();
    expect(r).toMatchObject({
      ok: false,
      stage: "barrier",
      failed: [{ client: "vmm-1", reason: "disconnected" }],
    });
    await settle();
    expect(resumed).toEqual([`vmm-0: ${r.ok ? "" : r.error}`, `vmm-2: ${r.ok ? "" : r.error}`]);
    expect(h.kernel.halted).toBe(false);
    expect(held(h)).toMatchObject({ outgoingSessions: 2, ownedFiles: 2 }); // vm-0, vm-2; not luod's
    expect((await h.luod.update()).ok).toBe(true); // and it can be retried
    const k2 = (await h.next)!;
    const luod2 = await startLuod(k2);
    await reclaim(k2, 0);
    await reclaim(k2, 2);
    expect((await luod2.status()).ownSession).toBe("finished");
  });
});

describe("the barrier", () => {
  it("a client that answers fail stops the update; everyone resumes and nothing is lost", async () => {
    const resumed: number[] = [];
    const h = await host(2, {
      vmm: (i) => ({
        onPrepare: () => {
          if (i === 1) throw new Error("guest would not pause");
        },
        onResume: () => resumed.push(i),
      }),
    });
    const ctl = h.kernel.spawn("luoctl");
    const r = await luoctl(ctl, ["update"]);
    expect(r.status).toBe(1);
    expect(r.output).toBe(
      "update 1 refused at barrier: EAGAIN: barrier failed: vmm-1 (guest would not pause)\n" +
        "  client vmm-1: guest would not pause",
    );
    await settle();
    expect(resumed.sort()).toEqual([0, 1]);
    expect(held(h)).toMatchObject({ outgoingSessions: 2, ownedFiles: 2 });
    expect(h.vmms[0]!.proc.pread(h.vmms[0]!.ram, RAM_BYTES, 0)).toEqual(ramPattern(0));
  });

  it("a client that never answers times out", async () => {
    const h = await host(2, {
      vmm: (i) => (i === 0 ? { onPrepare: () => new Promise<void>(() => {}) } : {}),
    });
    const r = await h.luod.update({ barrierTimeoutMs: 50 });
    expect(r).toMatchObject({
      ok: false,
      stage: "barrier",
      failed: [{ client: "vmm-0", reason: "no answer within 50 ms" }],
    });
    expect(held(h)).toMatchObject({ outgoingSessions: 2, ownedFiles: 2 });
  });
});

describe("freeze failure", () => {
  it("is reported with session, token and error; clients resume; a retry after the fix works", async () => {
    const h = await host(2);
    const v = h.vmms[0]!;
    await v.session.preserveFd(createTestFile(v.proc, "device-state"), 2n);
    h.test.controlOf(h.kernel).fail("freeze", { only: [2n] });
    const ctl = h.kernel.spawn("luoctl");
    const r = await luoctl(ctl, ["update", "--json"]);
    expect(r.status).toBe(1);
    const out = JSON.parse(r.output) as Record<string, unknown>;
    expect(out).toMatchObject({
      ok: false,
      stage: "kexec",
      code: "EIO",
      freeze: { session: "vm-0", token: "2", compatible: "luo-test-v1" },
      steps: ["preflight", "barrier", "kexec"],
    });
    expect(out.error).toContain('(session "vm-0", token 2, luo-test-v1)');
    expect(h.kernel.halted).toBe(false);
    expect(held(h)).toMatchObject({ outgoingSessions: 2, ownedFiles: 3 });
    h.test.controlOf(h.kernel).heal();
    expect((await luoctl(ctl, ["update"])).status).toBe(0);
    const k2 = (await h.next)!;
    const luod2 = await startLuod(k2);
    await reclaim(k2, 1);
    // vm-0 comes back with its device state too
    const p = k2.spawn("vmm-0");
    const c = await connectLuod(p, { name: "vmm-0" });
    const s = await c.retrieveSession("vm-0");
    expect(p.pread(await s.retrieveFd(1n), RAM_BYTES, 0)).toEqual(ramPattern(0));
    await s.retrieveFd(2n);
    await c.finishSession(s);
    expect((await luod2.status()).ownSession).toBe("finished");
  });
});

describe("pre-flight", () => {
  it("refuses when the next kernel lacks a file handler, naming it and its users; nobody was asked to prepare", async () => {
    let prepares = 0;
    const h = await host(2, { nextPlugins: [memfd()], vmm: () => ({ onPrepare: () => void prepares++ }) });
    const v = h.vmms[1]!;
    await v.session.preserveFd(createTestFile(v.proc, "x"), 5n);
    const ctl = h.kernel.spawn("luoctl");
    const r = await luoctl(ctl, ["update"]);
    expect(r.status).toBe(1);
    expect(r.output).toBe(
      'update 1 refused at preflight: ENOENT: the next kernel does not serve: file "luo-test-v1" (vm-1/5)\n' +
        '  missing file compatible "luo-test-v1" (used by vm-1/5)',
    );
    expect(prepares).toBe(0);
    expect(held(h)).toMatchObject({ outgoingSessions: 2, ownedFiles: 3 });
  });

  it("refuses when the next kernel lacks an FLB", async () => {
    const h = await host(1, { flbs: 1, nextPlugins: [memfd(), testHandlerPlugin()] });
    const v = h.vmms[0]!;
    await v.session.preserveFd(createTestFile(v.proc, "x"), 2n);
    const r = await h.luod.update();
    expect(r).toMatchObject({
      ok: false,
      stage: "preflight",
      missing: [{ kind: "flb", compatible: "liveupdate-test-flb-v0", users: ["1 file(s)"] }],
    });
  });
});

describe("luod dies before the kexec", () => {
  it("every session is closed and every resource is the VMMs' again; a new luod serves them", async () => {
    const h = await host(3);
    const bootPreserved = (await coldBaseline(h.plugins)).preservedPages;
    expect(held(h)).toMatchObject({ outgoingSessions: 3, ownedFiles: 3 });
    h.luod.exit();
    await Promise.all(h.vmms.map((v) => v.client.ended));
    await settle();
    expect(held(h)).toMatchObject({ outgoingSessions: 0, ownedFiles: 0 });
    expect(h.machine.stats().preservedPages).toBe(bootPreserved);
    for (const [i, v] of h.vmms.entries()) expect(v.proc.pread(v.ram, RAM_BYTES, 0)).toEqual(ramPattern(i));
    const luod2 = await startLuod(h.kernel); // /dev/liveupdate is free, the stale socket is replaced
    const c = await connectLuod(h.vmms[0]!.proc, { name: "vmm-0" });
    const s = await c.createSession("vm-0");
    await s.preserveFd(h.vmms[0]!.ram, 1n);
    expect((await luod2.status()).outgoing.map((o) => o.name)).toEqual(["vm-0"]);
  });
});

describe("a client that never comes back after the reboot", () => {
  it("after the timeout luod closes its session: an implicit FINISH, and luod finishes its own", async () => {
    const h = await host(2);
    expect((await h.luod.update()).ok).toBe(true);
    const k2 = (await h.next)!;
    const luod2 = await startLuod(k2, { reclaimTimeoutMs: 100 });
    await reclaim(k2, 0);
    expect((await luod2.status()).ownSession).toBe("waiting");
    await settle(200);
    const st = await luod2.status();
    expect(st.incoming.map((i) => [i.name, i.state])).toEqual([
      ["vm-0", "done"],
      ["vm-1", "reclaimed"],
    ]);
    expect(st.ownSession).toBe("finished");
    expect(luod2.messages).toContain(
      'session "vm-1" of vmm-1 reclaimed after the timeout (never reconnected)',
    );
    luod2.exit();
    expect(k2.machine.stats()).toMatchObject(await coldBaseline(h.plugins));
  });

  it("a handler veto leaves it stuck, and status says which file vetoes and which was never retrieved", async () => {
    const h = await host(2);
    const v = h.vmms[1]!;
    await v.session.preserveFd(createTestFile(v.proc, "device"), 2n);
    expect((await h.luod.update()).ok).toBe(true);
    const k2: Kernel = (await h.next)!;
    h.test.control.fail("canFinish", { only: [2n] });
    const luod2 = await startLuod(k2, { reclaimTimeoutMs: 100 });
    // vmm-1 comes back, retrieves its RAM but not the device, and does not finish
    const p = k2.spawn("vmm-1");
    const c = await connectLuod(p, { name: "vmm-1" });
    const s = await c.retrieveSession("vm-1");
    await s.retrieveFd(1n);
    const ctl = k2.spawn("luoctl");
    const text = (await luoctl(ctl, ["status"])).output;
    expect(text).toContain('incoming "vm-1" of vmm-1: handed');
    expect(text).toContain("  - vmm-1 has not said done");
    expect(text).toContain("  - token 2 (luo-test-v1) was never retrieved");
    expect(text).toContain('  - token 2: handler "luo-test-v1" vetoes FINISH');
    const vm1Lines = text.slice(text.indexOf('incoming "vm-1"')).split("\n").slice(1);
    expect(vm1Lines).not.toContain("  - token 1 (memfd-v2) was never retrieved");
    p.exit(); // the VMM dies with the session
    await reclaim(k2, 0);
    await settle(200);
    const st = await luod2.status();
    const vm1 = st.incoming.find((i) => i.name === "vm-1")!;
    expect(vm1.state).toBe("stuck");
    expect(vm1.reasons).toContain('token 2: handler "luo-test-v1" vetoes FINISH');
    expect(vm1.reasons.some((r) => r.includes("EBUSY"))).toBe(true);
    expect(st.ownSession).toBe("finished");
  });
});
