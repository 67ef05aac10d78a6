// The reboot freeze path and the boots after it:
// freeze FIFO in session creation order with rollback (files FIFO up to the failed one, earlier
// sessions in reverse) and a kernel that keeps working, full recovery when the handover cannot be
// written, the serialize lock (kexec waits for in-flight operations, later ones are ESHUTDOWN),
// ESHUTDOWN for everything on a replaced kernel, EIO cached at first open when a handler is
// missing, empty sessions, three and four boots with the live-update number, and the event stream.
import { describe, expect, it } from "vitest";
import { join } from "node:path";
import { FILE_BLOCKS, Machine, type Kernel } from "@luo/core";
import { TestFile, createTestFile, testHandlerPlugin } from "@luo/core/testing";
import {
  GateFile,
  bootTest,
  callsSince,
  createGate,
  dec,
  enc,
  kexec,
  kexecOpen,
  preservedPages,
  recordEvents,
  rejects,
  TEST_BLOCK_PAGES,
} from "./helpers/luo.js";

/** Sessions A (tokens 1,2,3), B (4,5,6), C (7,8); file content "file <token>". */
async function threeSessions() {
  const w = await bootTest();
  const spec: Array<[string, number[]]> = [
    ["A", [1, 2, 3]],
    ["B", [4, 5, 6]],
    ["C", [7, 8]],
  ];
  const handles = [];
  for (const [name, tokens] of spec) {
    const h = await w.dev.createSession(name);
    for (const t of tokens) {
      const fd = createTestFile(w.proc, `f${t}`, enc(`file ${t}`));
      await h.preserveFd(fd, t);
      w.proc.close(fd);
    }
    handles.push(h);
  }
  return { w, handles };
}

describe("freeze at reboot", () => {
  it("freezes FIFO in creation order; a failure unfreezes FIFO up to it and earlier sessions in reverse, and the kernel keeps running", async () => {
    const { w, handles } = await threeSessions();
    const { kernel, machine, plugin } = w;
    const c = plugin.control;
    const events = recordEvents(kernel);
    const pages = preservedPages(machine);

    const cases: Array<[bigint, string[]]> = [
      // First file of the last session: B then A unfrozen (reverse), each FIFO.
      [
        7n,
        [
          "freeze:1",
          "freeze:2",
          "freeze:3",
          "freeze:4",
          "freeze:5",
          "freeze:6",
          "freeze:7!",
          "unfreeze:4",
          "unfreeze:5",
          "unfreeze:6",
          "unfreeze:1",
          "unfreeze:2",
          "unfreeze:3",
        ],
      ],
      // Middle of a session: its earlier files FIFO, then the earlier session.
      [
        5n,
        [
          "freeze:1",
          "freeze:2",
          "freeze:3",
          "freeze:4",
          "freeze:5!",
          "unfreeze:4",
          "unfreeze:1",
          "unfreeze:2",
          "unfreeze:3",
        ],
      ],
      // The very first file: nothing to unfreeze.
      [1n, ["freeze:1!"]],
    ];
    for (const [token, expected] of cases) {
      const mark = c.log.length;
      c.fail("freeze", { only: [token], code: "EAGAIN" });
      await rejects(kernel.kexec(), "EAGAIN");
      expect(callsSince(w.plugin.control, mark)).toEqual(expected);
      expect(kernel.halted).toBe(false);
      expect(machine.khoRoot).toBe(0n);
      expect(preservedPages(machine)).toBe(pages);
    }
    // A plain Error from freeze is EIO with the Error as cause; same rollback.
    let mark = c.log.length;
    c.fail("freeze", { only: [2n], plain: true });
    const plain = await rejects(kernel.kexec(), "EIO");
    expect(plain.cause).toBeInstanceOf(Error);
    expect(plain.message).toContain('session "A" token 2');
    expect(callsSince(w.plugin.control, mark)).toEqual(["freeze:1", "freeze:2!", "unfreeze:1"]);
    expect(kernel.halted).toBe(false);
    expect(
      events.filter((e) => e.name === "reboot:failed").map((e) => (e.error as Error & { code: string }).code),
    ).toEqual(["EAGAIN", "EAGAIN", "EAGAIN", "EIO"]);

    // Sessions are fully usable: add a file, ask names, create and close a session.
    const fd = createTestFile(w.proc, "f9", enc("file 9"));
    await handles[2]!.preserveFd(fd, 9);
    expect(await handles[1]!.getName()).toBe("B");
    await (await w.dev.createSession("D")).close();

    c.heal();
    mark = c.log.length;
    const { proc: q, dev } = await kexecOpen(kernel);
    expect(callsSince(c, mark).filter((x) => x.startsWith("freeze"))).toEqual(
      [1, 2, 3, 4, 5, 6, 7, 8, 9].map((t) => `freeze:${t}`),
    );
    for (const [name, tokens] of [
      ["A", [1, 2, 3]],
      ["B", [4, 5, 6]],
      ["C", [7, 8, 9]],
    ] as const) {
      const inc = await dev.retrieveSession(name);
      for (const t of tokens) expect(dec(q.pread(await inc.retrieveFd(t), 20, 0))).toBe(`file ${t}`);
    }
  });

  it("when the handover cannot be written after serialization, everything is unfrozen and the kernel stays usable", async () => {
    const { w } = await threeSessions();
    const { kernel, machine, plugin } = w;
    const pages = preservedPages(machine);
    const mark = plugin.control.log.length;
    const e = await kernel.kexec({ saveTo: join("/nonexistent-luo-dir", "sub", "machine.img") }).then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(Error);
    expect((e as { code: string }).code).toMatch(/^E/);
    expect(callsSince(w.plugin.control, mark)).toEqual([
      ...[1, 2, 3, 4, 5, 6, 7, 8].map((t) => `freeze:${t}`),
      ...[7, 8, 4, 5, 6, 1, 2, 3].map((t) => `unfreeze:${t}`),
    ]);
    expect(kernel.halted).toBe(false);
    expect(machine.khoRoot).toBe(0n);
    expect(preservedPages(machine)).toBe(pages);
    const { proc: q, dev } = await kexecOpen(kernel);
    const inc = await dev.retrieveSession("B");
    expect(dec(q.pread(await inc.retrieveFd(5), 20, 0))).toBe("file 5");
  });

  it("a second kexec while one is in progress is EBUSY", async () => {
    const { kernel } = await bootTest();
    const first = kernel.kexec();
    await rejects(kernel.kexec(), "EBUSY");
    expect(await first).toBeDefined();
  });
});

describe("the serialize lock and ESHUTDOWN", () => {
  it("kexec waits for an in-flight PRESERVE; operations queued behind it and every later call are ESHUTDOWN", async () => {
    const gate = createGate();
    const w = await bootTest({ extra: [gate.plugin] });
    const { kernel: k1, proc, dev } = w;
    const s = await dev.createSession("s");
    await s.preserveFd(createTestFile(proc, "t", enc("test file")), 2);
    const gfd = proc.installFile(new GateFile());
    const inflight = s.preserveFd(gfd, 1);
    await gate.entered; // the preserve holds the serialize lock (reader) inside the handler
    let booted = false;
    const kx = k1.kexec().then((k) => {
      booted = true;
      return k;
    });
    await new Promise((r) => setTimeout(r, 5));
    expect(booted).toBe(false); // the reboot writer waits for the reader
    // These queue behind the waiting writer (writer-fair lock).
    const queued = [
      dev.createSession("late"),
      s.getName(),
      s.preserveFd(createTestFile(proc, "late"), 3),
      k1.liveupdate.retrieveSession("s"),
    ];
    for (const p of queued) p.catch(() => {});
    await new Promise((r) => setTimeout(r, 5));
    expect(booted).toBe(false);
    gate.open();
    await inflight; // the operation that was inside the lock completes normally…
    const k2 = (await kx)!;
    for (const p of queued) await rejects(p, "ESHUTDOWN"); // …the ones that waited never run
    expect(k1.halted).toBe(true);

    // Every later call on the old kernel is ESHUTDOWN, nothing hangs.
    await rejects(dev.createSession("x"), "ESHUTDOWN");
    await rejects(s.preserveFd(gfd, 9), "ESHUTDOWN");
    await rejects(s.getName(), "ESHUTDOWN");
    await rejects(s.close(), "ESHUTDOWN");
    await rejects(proc.openLiveUpdate(), "ESHUTDOWN");
    await rejects(k1.kexec(), "ESHUTDOWN");
    await rejects(k1.liveupdate.createSession("y"), "ESHUTDOWN");
    await rejects(k1.liveupdate.retrieveSession("s"), "ESHUTDOWN");
    await rejects(k1.liveupdate.registry.registerHandler(testHandlerPlugin().handler), "ESHUTDOWN");
    await rejects(() => k1.spawn("z"), "ESHUTDOWN");
    await rejects(() => proc.pread(gfd, 1, 0), "ESHUTDOWN");
    await rejects(() => dev.close(), "ESHUTDOWN");

    // The in-flight preserve made it into the handover; the queued ones did not.
    const q = k2.spawn("q");
    const dev2 = await q.openLiveUpdate();
    await rejects(dev2.retrieveSession("late"), "ENOENT");
    const inc = await dev2.retrieveSession("s");
    expect(q.file(await inc.retrieveFd(1))).toBeInstanceOf(GateFile);
    expect(dec(q.pread(await inc.retrieveFd(2), 20, 0))).toBe("test file");
    await rejects(inc.retrieveFd(3), "ENOENT");
  });
});

describe("boot", () => {
  it("a handler missing at the first open makes it EIO, cached for the whole boot", async () => {
    const w = await bootTest();
    await w.dev.createSession("empty");
    const s = await w.dev.createSession("vm");
    await s.preserveFd(createTestFile(w.proc, "f", enc("lost")), 1);
    // The next kernel boots without the test plugin.
    const k2 = await kexec(w.kernel, []);
    const q = k2.spawn("q");
    const e = await rejects(q.openLiveUpdate(), "EIO");
    expect(e.message).toContain("luo-test-v1");
    expect((e.cause as { code: string }).code).toBe("ENOENT");
    await rejects(q.openLiveUpdate(), "EIO");
    await rejects(k2.spawn("other").openLiveUpdate(), "EIO");
    // Too late to register the handler: the half-loaded sessions are listed (EBUSY), and even a
    // handler registered now could not undo the cached failure.
    await rejects(k2.liveupdate.registry.registerHandler(testHandlerPlugin().handler), "EBUSY");
    await rejects(q.openLiveUpdate(), "EIO");
    // The documented recovery is another reboot: incoming sessions are not carried over.
    const { dev: dev3 } = await kexecOpen(k2, [testHandlerPlugin()]);
    await rejects(dev3.retrieveSession("vm"), "ENOENT");
    await rejects(dev3.retrieveSession("empty"), "ENOENT");
  });

  it("empty sessions survive kexec", async () => {
    const w = await bootTest();
    for (const n of ["e1", "e2", "e3"]) await w.dev.createSession(n);
    w.dev.close();
    const { kernel: k2, dev } = await kexecOpen(w.kernel);
    expect([...k2.liveupdate.incomingSessions.values()].map((s) => s.name)).toEqual(["e1", "e2", "e3"]);
    expect(k2.incoming!.unrestoredPages).toBe(0); // nothing but the session block, freed at open
    for (const n of ["e2", "e3", "e1"]) {
      const s = await dev.retrieveSession(n);
      expect(await s.getName()).toBe(n);
      await rejects(s.retrieveFd(0), "ENOENT");
      await s.finish();
      await s.close();
    }
    expect(k2.liveupdate.stats().incomingSessions).toBe(0);
  });

  it("three boots: a session finished in boot 2 and one never retrieved are both ENOENT in boot 3; liveupdate-number counts 1, 2, 3", async () => {
    const w = await bootTest();
    expect(w.kernel.liveupdate.liveupdateNumber).toBe(0n);
    for (const [name, t] of [
      ["fin", 1],
      ["never", 2],
      ["keep", 3],
    ] as const) {
      const s = await w.dev.createSession(name);
      await s.preserveFd(createTestFile(w.proc, name, enc(`${name} data`)), t);
    }

    const b2 = await kexecOpen(w.kernel);
    expect(b2.kernel.liveupdate.liveupdateNumber).toBe(1n);
    const fin = await b2.dev.retrieveSession("fin");
    expect(dec(b2.proc.pread(await fin.retrieveFd(1), 20, 0))).toBe("fin data");
    await fin.finish();
    await fin.close();
    // "keep" is carried on: FINISH, then preserve the retrieved file in a new outgoing session.
    const keep = await b2.dev.retrieveSession("keep");
    const kfd = await keep.retrieveFd(3);
    await keep.finish();
    await keep.close();
    const out = await b2.dev.createSession("keep");
    await out.preserveFd(kfd, 3);
    // "never" still holds its pages: its file's block and its file block (records).
    expect(b2.kernel.incoming!.unrestoredPages).toBe(TEST_BLOCK_PAGES + FILE_BLOCKS.pages);

    const b3 = await kexecOpen(b2.kernel);
    expect(b3.kernel.liveupdate.liveupdateNumber).toBe(2n);
    await rejects(b3.dev.retrieveSession("fin"), "ENOENT");
    await rejects(b3.dev.retrieveSession("never"), "ENOENT");
    const keep3 = await b3.dev.retrieveSession("keep");
    expect(dec(b3.proc.pread(await keep3.retrieveFd(3), 20, 0))).toBe("keep data");
    await keep3.finish();
    await keep3.close();
    expect(b3.kernel.incoming!.unrestoredPages).toBe(0); // "never" did not come along
    expect(b3.machine.stats().allocatedPages).toBe(b3.kernel.kho.preservedPages);

    const b4 = await kexecOpen(b3.kernel);
    expect(b4.kernel.liveupdate.liveupdateNumber).toBe(3n);
    expect(b4.kernel.liveupdate.stats().incomingSessions).toBe(0);
  });
});

describe("events", () => {
  it("kernel.liveupdate.events reports the lifecycle in order with increasing wall-clock times", async () => {
    const w = await bootTest({ flbs: 1 });
    const t0 = Date.now();
    const ev1 = recordEvents(w.kernel);
    const s = await w.dev.createSession("vm");
    const fd = createTestFile(w.proc, "f", enc("x"));
    await s.preserveFd(fd, 1);
    await w.dev.createSession("empty");
    const k2: Kernel = await kexec(w.kernel);
    expect(ev1.map((e) => e.name)).toEqual([
      "session:created",
      "flb:preserved",
      "file:preserved",
      "session:created",
      "reboot:started",
      "file:frozen",
      "reboot:done",
    ]);
    expect(ev1[0]).toMatchObject({ session: "vm" });
    expect(ev1[2]).toMatchObject({ session: "vm", token: 1n, compatible: "luo-test-v1" });
    expect(ev1[4]).toMatchObject({ sessions: 2 });
    expect(ev1[6]).toMatchObject({ sessions: 2, files: 1, flbs: 1 });

    const ev2 = recordEvents(k2);
    const q = k2.spawn("q");
    const dev = await q.openLiveUpdate();
    const inc = await dev.retrieveSession("vm");
    await inc.retrieveFd(1);
    await k2.liveupdate.flbs.getIncoming(w.plugin.testFlbs[0]!);
    await inc.finish();
    await inc.close();
    await (await dev.retrieveSession("empty")).close();
    expect(ev2.map((e) => e.name)).toEqual([
      "boot:handover",
      "session:retrieved",
      "file:retrieved",
      "flb:retrieved",
      "flb:finished",
      "file:finished",
      "session:finished",
      "session:closed",
      "session:retrieved",
      "session:closed",
    ]);
    expect(ev2[0]).toMatchObject({ liveupdateNumber: 1n, sessions: 2 });
    expect(ev2[7]).toMatchObject({ session: "vm", kind: "incoming" });

    const all = [...ev1, ...ev2];
    for (const e of all) {
      expect(typeof e.time).toBe("number");
      expect(Number.isFinite(e.time)).toBe(true);
    }
    for (let i = 1; i < all.length; i++) expect(all[i]!.time).toBeGreaterThanOrEqual(all[i - 1]!.time);
    expect(all[all.length - 1]!.time).toBeGreaterThan(all[0]!.time);
    expect(all[0]!.time).toBeGreaterThanOrEqual(t0 - 1);
    expect(all[all.length - 1]!.time).toBeLessThanOrEqual(Date.now() + 1);
  });

  it("a failed freeze reports file:freeze-failed, then reboot:failed after the unfreeze events, with the error", async () => {
    const w = await bootTest();
    const s = await w.dev.createSession("vm");
    for (const t of [1, 2]) await s.preserveFd(createTestFile(w.proc, `f${t}`), t);
    const ev = recordEvents(w.kernel);
    w.plugin.control.fail("freeze", { only: [2n], code: "ENOMEM" });
    const e = await rejects(w.kernel.kexec(), "ENOMEM");
    expect(ev.map((x) => `${x.name}${x.token === undefined ? "" : `:${String(x.token)}`}`)).toEqual([
      "reboot:started",
      "file:frozen:1",
      "file:freeze-failed:2",
      "file:unfrozen:1",
      "reboot:failed",
    ]);
    expect(ev[2]!.error).toBe(e);
    expect(ev[2]).toMatchObject({ session: "vm", compatible: "luo-test-v1" });
    expect(ev[4]!.error).toBe(e);
  });
});

describe("machine memory across kexec", () => {
  it("only preserved pages survive: unpreserved test-file blocks are scrubbed, the next kernel starts with its own pages only", async () => {
    const machine = new Machine({ memory: "16 MiB" });
    const plugin = testHandlerPlugin();
    const k1 = await machine.boot({ plugins: [plugin] });
    const p = k1.spawn("p");
    const dev = await p.openLiveUpdate();
    const s = await dev.createSession("s");
    const kept = createTestFile(p, "kept", enc("kept"));
    await s.preserveFd(kept, 1);
    const dropped = await dev.createSession("dropped");
    await dropped.preserveFd(createTestFile(p, "dropped", enc("dropped")), 1);
    await dropped.close();
    const file = p.file(kept) as TestFile;
    const k2 = await kexec(k1);
    expect(file.refCount).toBe(2); // the old kernel's object is untouched, and irrelevant now
    const q = k2.spawn("q");
    const inc = await (await q.openLiveUpdate()).retrieveSession("s");
    const fd = await inc.retrieveFd(1);
    expect(q.file(fd)).not.toBe(file);
    expect(dec(q.pread(fd, 10, 0))).toBe("kept");
    await inc.finish();
    expect(k2.incoming!.unrestoredPages).toBe(0);
  });
});
