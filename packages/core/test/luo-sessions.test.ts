// Sessions and /dev/liveupdate: exclusive
// open, sessions outliving the device fd, name rules (1..63 UTF-8 bytes, no NUL), per-list
// uniqueness, outgoing reuse of an incoming name, retrieve once, unknown names, the session kind
// check of every session ioctl, GET_NAME, and what closing an outgoing session gives back.
// Everything runs on real kernels booted on emulated machines with the test handler.
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { Machine, SESSION_BLOCKS } from "@luo/core";
import { SessionFile } from "@luo/core/internal";
import { TestFile, createTestFile } from "@luo/core/testing";
import {
  ValueFile,
  bootTest,
  dec,
  enc,
  kexec,
  kexecOpen,
  preservedPages,
  rejects,
  utf8Length,
  valuePlugin,
} from "./helpers/luo.js";

describe("/dev/liveupdate", () => {
  it("is exclusive: a second open is EBUSY until the first is closed, from any process", async () => {
    const { kernel, proc, dev } = await bootTest();
    const other = kernel.spawn("other");
    await rejects(other.openLiveUpdate(), "EBUSY");
    await rejects(proc.openLiveUpdate(), "EBUSY");
    dev.close();
    const dev2 = await other.openLiveUpdate();
    await rejects(proc.openLiveUpdate(), "EBUSY");
    dev2.close();
    // Process exit closes the device fd too.
    const third = kernel.spawn("third");
    await third.openLiveUpdate();
    third.exit();
    (await proc.openLiveUpdate()).close();
  });

  it("sessions outlive the device fd, before and after kexec", async () => {
    const { kernel, proc, dev, plugin } = await bootTest();
    const s = await dev.createSession("vm");
    dev.close();
    // The session keeps working without /dev/liveupdate open.
    const fd = createTestFile(proc, "a", enc("kept"));
    await s.preserveFd(fd, 7);
    expect(await s.getName()).toBe("vm");
    proc.close(fd);
    expect(plugin.control.calls("preserve")).toEqual([7n]);

    const k2 = await kexec(kernel);
    const q = k2.spawn("vmm");
    const dev2 = await q.openLiveUpdate();
    const inc = await dev2.retrieveSession("vm");
    dev2.close();
    const fd2 = await inc.retrieveFd(7);
    expect(dec(q.pread(fd2, 100, 0))).toBe("kept");
    expect(await inc.getName()).toBe("vm");
    await inc.finish();
    await inc.close();
    expect(k2.incoming!.unrestoredPages).toBe(0);
  });
});

describe("session names", () => {
  const ascii63 = "n".repeat(63);
  const two63 = "é".repeat(31) + "x"; // 2-byte UTF-8
  const four63 = "😀".repeat(15) + "abc"; // 4-byte UTF-8 (surrogate pairs in JS)
  const three63 = "€".repeat(21); // 3-byte UTF-8

  it("rejects 64 bytes, an embedded NUL and the empty name with EINVAL, creating nothing", async () => {
    const { machine, kernel, dev } = await bootTest();
    const before = preservedPages(machine);
    const bad = [
      "n".repeat(64),
      "é".repeat(32),
      "😀".repeat(16),
      "€".repeat(21) + "x",
      "a\0b",
      "\0",
      "",
      "x".repeat(1000),
    ];
    for (const name of bad) {
      if (name.length > 0 && name !== "\0" && !name.includes("\0"))
        expect(utf8Length(name)).toBeGreaterThan(63);
      await rejects(dev.createSession(name), "EINVAL");
    }
    await rejects(dev.createSession(42 as unknown as string), "EINVAL");
    expect(kernel.liveupdate.stats().outgoingSessions).toBe(0);
    expect(preservedPages(machine)).toBe(before);
  });

  it("63-byte names (ASCII and multi-byte UTF-8) round-trip through GET_NAME, before and after kexec", async () => {
    const names = [ascii63, two63, three63, four63, "a", "ü"];
    for (const n of names.slice(0, 4)) expect(utf8Length(n)).toBe(63);
    const { kernel, dev } = await bootTest();
    for (const n of names) {
      const s = await dev.createSession(n);
      expect(await s.getName()).toBe(n);
      expect(s.name).toBe(n);
    }
    const { dev: dev2 } = await kexecOpen(kernel);
    for (const n of names) {
      const s = await dev2.retrieveSession(n);
      expect(await s.getName()).toBe(n);
      await s.close();
    }
  });

  it("a name whose UTF-16 has a lone surrogate is EINVAL (it has no UTF-8 form)", async () => {
    const { kernel, dev } = await bootTest();
    // Two different JS strings that TextEncoder would both turn into "a" + U+FFFD: accepting them
    // would hand over two sessions with the same bytes and fail the next kernel's open.
    await rejects(dev.createSession("a\uD800"), "EINVAL");
    await rejects(dev.createSession("a\uDC01"), "EINVAL");
    expect(kernel.liveupdate.stats().outgoingSessions).toBe(0);
  });

  it("outgoing names are unique (EEXIST), a failed create leaves no block behind, and a closed name is free again", async () => {
    const { machine, dev } = await bootTest();
    const base = preservedPages(machine);
    const handles = [];
    // Fill the first session block exactly, then collide: no second block may appear.
    for (let i = 0; i < SESSION_BLOCKS.perBlock; i++) handles.push(await dev.createSession(`s${i}`));
    const full = preservedPages(machine);
    expect(full - base).toBe(SESSION_BLOCKS.pages);
    expect((await rejects(dev.createSession("s0"), "EEXIST")).message).toContain('"s0"');
    await rejects(dev.createSession(`s${SESSION_BLOCKS.perBlock - 1}`), "EEXIST");
    expect(preservedPages(machine)).toBe(full);
    await handles[0]!.close();
    const again = await dev.createSession("s0");
    expect(await again.getName()).toBe("s0");
  });

  it("random names and tokens round-trip across kexec (property)", async () => {
    const name = fc
      .string({ unit: "binary", minLength: 1, maxLength: 63 })
      .filter((s) => !s.includes("\0") && utf8Length(s) <= 63);
    const token = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
    const sessions = fc.uniqueArray(
      fc.record({ name, tokens: fc.uniqueArray(token, { minLength: 0, maxLength: 4 }) }),
      { minLength: 1, maxLength: 6, selector: (s) => s.name },
    );
    await fc.assert(
      fc.asyncProperty(sessions, async (spec) => {
        const { kernel, proc, dev } = await bootTest({ memory: "8 MiB" });
        for (const [i, s] of spec.entries()) {
          const h = await dev.createSession(s.name);
          for (const [j, t] of s.tokens.entries()) {
            const fd = createTestFile(proc, `f${i}.${j}`, enc(`${i}:${t}`));
            await h.preserveFd(fd, t);
            proc.close(fd);
          }
        }
        const { proc: q, dev: dev2, kernel: k2 } = await kexecOpen(kernel);
        expect([...k2.liveupdate.incomingSessions.values()].map((s) => s.name)).toEqual(
          spec.map((s) => s.name),
        );
        for (const [i, s] of spec.entries()) {
          const h = await dev2.retrieveSession(s.name);
          expect(await h.getName()).toBe(s.name);
          for (const t of [...s.tokens].reverse()) {
            const fd = await h.retrieveFd(t);
            expect(dec(q.pread(fd, 100, 0))).toBe(`${i}:${t}`);
          }
          await h.finish();
          await h.close();
        }
        expect(k2.incoming!.unrestoredPages).toBe(0);
      }),
      { numRuns: 25 },
    );
  });

  it('keeps a leading U+FEFF: "\\uFEFF\\u0001" and "\\u0001" stay two sessions across kexec', async () => {
    // The property above found this: a UTF-8 decoder that strips a BOM turned the first name
    // into the second, and the next kernel's first open failed with EIO (EEXIST inside).
    const names = ["\uFEFF\u0001", "\u0001", "\uFEFFvm"];
    const { kernel, dev } = await bootTest({ memory: "8 MiB" });
    for (const n of names) await dev.createSession(n);
    const { dev: dev2, kernel: k2 } = await kexecOpen(kernel);
    expect([...k2.liveupdate.incomingSessions.values()].map((s) => s.name)).toEqual(names);
    for (const n of names) expect(await (await dev2.retrieveSession(n)).getName()).toBe(n);
  });
});

describe("outgoing and incoming lists", () => {
  it("an outgoing session may reuse an incoming name; both coexist and the new one is handed over next", async () => {
    const { kernel, proc, dev } = await bootTest();
    const s = await dev.createSession("vm");
    const fd = createTestFile(proc, "old", enc("boot 1"));
    await s.preserveFd(fd, 1);

    const { kernel: k2, proc: q, dev: dev2 } = await kexecOpen(kernel);
    // Not yet retrieved: the name is still free in the outgoing list.
    const out = await dev2.createSession("vm");
    await rejects(dev2.createSession("vm"), "EEXIST");
    const inc = await dev2.retrieveSession("vm");
    expect(await inc.getName()).toBe("vm");
    expect(await out.getName()).toBe("vm");
    expect(k2.liveupdate.stats()).toMatchObject({ outgoingSessions: 1, incomingSessions: 1 });
    // Carry the data forward: retrieve, FINISH, preserve again in the new session.
    const got = await inc.retrieveFd(1);
    q.pwrite(got, enc("boot 2"), 0);
    await inc.finish();
    await out.preserveFd(got, 1);
    await inc.close();

    const { proc: r, dev: dev3 } = await kexecOpen(k2);
    const s3 = await dev3.retrieveSession("vm");
    expect(dec(r.pread(await s3.retrieveFd(1), 100, 0))).toBe("boot 2");
  });

  it("a session is retrieved once (EINVAL), unknown names are ENOENT, a closed one is gone (ENOENT)", async () => {
    const { kernel, dev } = await bootTest();
    await rejects(dev.retrieveSession("vm"), "ENOENT"); // cold boot: nothing incoming
    await dev.createSession("vm");
    await rejects(dev.retrieveSession("vm"), "ENOENT"); // outgoing sessions are not incoming
    const { kernel: k2, dev: dev2 } = await kexecOpen(kernel);
    await rejects(dev2.retrieveSession("nope"), "ENOENT");
    await rejects(dev2.retrieveSession("v"), "ENOENT");
    await rejects(dev2.retrieveSession("vm\0"), "ENOENT");
    const s = await dev2.retrieveSession("vm");
    await rejects(dev2.retrieveSession("vm"), "EINVAL");
    await rejects(dev2.retrieveSession("vm"), "EINVAL");
    expect(k2.liveupdate.stats().incomingSessions).toBe(1);
    await s.close();
    expect(k2.liveupdate.stats().incomingSessions).toBe(0);
    await rejects(dev2.retrieveSession("vm"), "ENOENT");
  });

  it("session ioctls check the session kind first: PRESERVE_FD outgoing only, RETRIEVE_FD and FINISH incoming only", async () => {
    const { kernel, proc, dev, plugin } = await bootTest();
    const out = await dev.createSession("out");
    const fd = createTestFile(proc, "f", enc("x"));
    await out.preserveFd(fd, 1);
    await rejects(out.retrieveFd(1), "EINVAL");
    await rejects(out.retrieveFd(99), "EINVAL"); // kind before token lookup (not ENOENT)
    await rejects(out.finish(), "EINVAL");
    expect(await out.getName()).toBe("out");

    const { proc: q, dev: dev2 } = await kexecOpen(kernel);
    const inc = await dev2.retrieveSession("out");
    const fresh = createTestFile(q, "g", enc("y"));
    await rejects(inc.preserveFd(fresh, 2), "EINVAL");
    await rejects(inc.preserveFd(12345, 2), "EINVAL"); // kind before the fd check (not EBADF)
    await rejects(inc.preserveFd(fresh, 1), "EINVAL"); // kind before the token check (not EEXIST)
    expect(await inc.getName()).toBe("out");
    await inc.finish();
    // A finished incoming session is still incoming: it never becomes outgoing.
    await rejects(inc.preserveFd(fresh, 2), "EINVAL");
    // The handler saw the one PRESERVE in the first kernel and none in this one.
    expect(plugin.controlOf(kernel).calls("preserve")).toEqual([1n]);
    expect(plugin.control.calls("preserve")).toEqual([]);
    await inc.close();
  });
});

describe("incoming sessions without files", () => {
  it("get no file set at deserialization (it is created on first use) and still finish and close", async () => {
    const { kernel, proc, dev } = await bootTest();
    await dev.createSession("empty");
    const full = await dev.createSession("full");
    await full.preserveFd(createTestFile(proc, "f", enc("x")), 1);

    const { kernel: k2, dev: dev2 } = await kexecOpen(kernel);
    const fileSetOf = (name: string): unknown =>
      (k2.liveupdate.incomingSessions.get(name) as unknown as { fileSet: unknown }).fileSet;
    expect(fileSetOf("empty")).toBeUndefined();
    expect(fileSetOf("full")).toBeDefined();
    expect(k2.liveupdate.incomingSessions.get("empty")!.fileCount).toBe(0);
    const inc = await dev2.retrieveSession("empty");
    await rejects(inc.retrieveFd(1), "ENOENT");
    await inc.finish();
    await inc.close();
    const other = await dev2.retrieveSession("full");
    await other.finish();
    await other.close();
    expect(k2.incoming!.unrestoredPages).toBe(0);
  });
});

describe("closing an outgoing session", () => {
  it("unpreserves LIFO, leaves the user's files intact, frees the name, the preserved pages and the identities", async () => {
    const { machine, kernel, proc, dev, plugin } = await bootTest();
    const baseline = preservedPages(machine);
    const s = await dev.createSession("vm");
    const fds = [1, 2, 3].map((i) => createTestFile(proc, `f${i}`, enc(`content ${i}`)));
    for (const [i, fd] of fds.entries()) await s.preserveFd(fd, 10 + i);
    const files = fds.map((fd) => proc.file(fd) as TestFile);
    for (const f of files) expect(f.refCount).toBe(2); // the fd + LUO's reference
    expect(preservedPages(machine)).toBeGreaterThan(baseline);
    expect(kernel.liveupdate.stats().ownedFiles).toBe(3);

    await s.close();
    expect(plugin.control.calls("unpreserve")).toEqual([12n, 11n, 10n]);
    for (const [i, f] of files.entries()) {
      expect(f.refCount).toBe(1);
      expect(f.isReleased).toBe(false);
      expect(dec(proc.pread(fds[i]!, 100, 0))).toBe(`content ${i + 1}`);
    }
    expect(preservedPages(machine)).toBe(baseline);
    expect(kernel.kho.preservedPages).toBe(baseline);
    expect(kernel.liveupdate.stats()).toEqual({ outgoingSessions: 0, incomingSessions: 0, ownedFiles: 0 });
    await rejects(s.getName(), "EBADF"); // the fd is closed

    // The name and the files are free again: re-create and re-preserve.
    const s2 = await dev.createSession("vm");
    for (const [i, fd] of fds.entries()) await s2.preserveFd(fd, 10 + i);
    proc.close(fds[0]!);
    const { proc: q, dev: dev2 } = await kexecOpen(kernel);
    const inc = await dev2.retrieveSession("vm");
    expect(dec(q.pread(await inc.retrieveFd(10), 100, 0))).toBe("content 1");
  });

  it("a file the user closed is released when the session closes (LUO held the last reference)", async () => {
    const { proc, dev } = await bootTest();
    const s = await dev.createSession("vm");
    const fd = createTestFile(proc, "f", enc("x"));
    const f = proc.file(fd);
    await s.preserveFd(fd, 1);
    proc.close(fd);
    expect(f.refCount).toBe(1);
    expect(f.isReleased).toBe(false);
    await s.close();
    expect(f.isReleased).toBe(true);
  });

  it("closing through proc.close() or process exit releases sessions the same way", async () => {
    const machine = new Machine({ memory: "8 MiB" });
    const k = await machine.boot({ plugins: [valuePlugin] });
    const p = k.spawn("a");
    const dev = await p.openLiveUpdate();
    const base = preservedPages(machine);
    const s = await dev.createSession("x");
    const fd = p.installFile(new ValueFile(5n));
    await s.preserveFd(fd, 5);
    // Release runs asynchronously (it takes the serialize lock); the session file reports it.
    const sf = p.file(s.fd) as SessionFile;
    p.close(s.fd);
    await sf.releaseDone;
    expect(k.liveupdate.stats().outgoingSessions).toBe(0);
    expect(preservedPages(machine)).toBe(base);
    const s2 = await dev.createSession("x");
    await s2.preserveFd(fd, 5);
    const sf2 = p.file(s2.fd) as SessionFile;
    p.exit();
    await sf2.releaseDone;
    expect(k.liveupdate.stats()).toEqual({ outgoingSessions: 0, incomingSessions: 0, ownedFiles: 0 });
    expect(preservedPages(machine)).toBe(base);
  });
});
