// File preservation and retrieval: the PRESERVE check order
// (kind → token EEXIST → block growth → EBADF → ENOENT → EBUSY → FLB → handler) proven by cases
// where several failure conditions hold at once, exact unwinding of every failure, the
// double-preservation registry (dup'd fds, two sessions, getId identities, retrieved-not-
// finished files), u64 token validation, RETRIEVE_FD idempotence and sticky failures, files the
// user closed right after preserve, and the handler dependency API.
import { describe, expect, it } from "vitest";
import {
  FILE_BLOCKS,
  KernelFile,
  LiveUpdateError,
  Machine,
  defineFileHandler,
  definePlugin,
  type Kernel,
  type Process,
  type SessionHandle,
} from "@luo/core";
import { TestFile, createTestFile } from "@luo/core/testing";
import {
  ValueFile,
  bootTest,
  callsSince,
  dec,
  enc,
  kexecOpen,
  preservedPages,
  rejects,
  valuePlugin,
  type TestWorld,
} from "./helpers/luo.js";

/** Everything a failed PRESERVE must leave exactly as it was. */
function snapshot(w: TestWorld, ...fds: number[]) {
  return {
    pages: w.machine.stats(),
    kho: w.kernel.kho.preservedPages,
    luo: w.kernel.liveupdate.stats(),
    refs: fds.map((fd) => w.proc.file(fd).refCount),
    calls: w.plugin.control.log.length,
  };
}

describe("PRESERVE_FD check order", () => {
  it("EEXIST (token) wins over EBADF, ENOENT and EBUSY; EBADF over ENOENT; ENOENT; then EBUSY", async () => {
    const w = await bootTest();
    const { proc, dev } = w;
    const s = await dev.createSession("s");
    const other = await dev.createSession("other");
    const a = createTestFile(proc, "a", enc("a"));
    await s.preserveFd(a, 1);
    const closed = createTestFile(proc, "closed");
    proc.close(closed);
    const before = snapshot(w, a);

    // Token 1 is in use in s: EEXIST whatever else is wrong with the fd.
    const exist = await rejects(s.preserveFd(999, 1), "EEXIST"); // and the fd is not open
    expect(exist.message).toContain('session "s" token 1');
    await rejects(s.preserveFd(closed, 1), "EEXIST"); // and the fd was closed
    await rejects(s.preserveFd(dev.fd, 1), "EEXIST"); // and no handler takes /dev/liveupdate
    await rejects(s.preserveFd(other.fd, 1), "EEXIST"); // nor a session fd
    await rejects(s.preserveFd(a, 1), "EEXIST"); // and the file is already preserved
    // Fresh token: the fd is checked before any handler is asked.
    await rejects(s.preserveFd(999, 2), "EBADF");
    await rejects(s.preserveFd(closed, 2), "EBADF");
    await rejects(s.preserveFd(-1, 2), "EBADF");
    // A valid fd nobody can preserve: ENOENT (no handler), before the identity check.
    await rejects(s.preserveFd(dev.fd, 2), "ENOENT");
    await rejects(s.preserveFd(other.fd, 2), "ENOENT");
    await rejects(s.preserveFd(s.fd, 2), "ENOENT");
    // A preservable fd already owned by live update: EBUSY, in this or any other session.
    await rejects(s.preserveFd(a, 2), "EBUSY");
    const busy = await rejects(other.preserveFd(a, 1), "EBUSY");
    expect(busy.message).toContain('session "other" token 1'); // who asked…
    expect(busy.message).toContain('session "s" token 1'); // …and who owns it
    // Token validation comes before all of them (argument copy-in).
    await rejects(s.preserveFd(999, -1), "EINVAL");

    expect(snapshot(w, a)).toEqual(before);
    expect(w.plugin.control.calls("preserve")).toEqual([1n]);
  });

  it("a failure when the file chain had to grow shrinks it back (no empty block)", async () => {
    const machine = new Machine({ memory: "8 MiB" });
    const k = await machine.boot({ plugins: [valuePlugin] });
    const p = k.spawn("p");
    const dev = await p.openLiveUpdate();
    const s = await dev.createSession("s");
    for (let i = 0; i < FILE_BLOCKS.perBlock; i++) {
      const fd = p.installFile(new ValueFile(BigInt(i), i === 0 ? "shared-id" : undefined));
      await s.preserveFd(fd, i);
      p.close(fd);
    }
    const full = preservedPages(machine);
    // The 128th file needs a second block: every failure after the growth gives it back.
    await rejects(s.preserveFd(999, 1000), "EBADF");
    expect(preservedPages(machine)).toBe(full);
    await rejects(s.preserveFd(dev.fd, 1000), "ENOENT");
    expect(preservedPages(machine)).toBe(full);
    await rejects(s.preserveFd(p.installFile(new ValueFile(1n, "shared-id")), 1000), "EBUSY");
    expect(preservedPages(machine)).toBe(full);
    await rejects(s.preserveFd(p.installFile(new ValueFile(1n)), 0), "EEXIST");
    expect(preservedPages(machine)).toBe(full);
    await s.preserveFd(p.installFile(new ValueFile(1n)), 1000);
    expect(preservedPages(machine) - full).toBe(FILE_BLOCKS.pages);
  });

  it("handler and FLB failures unwind in reverse: FLBs rolled back, identity released, reference dropped", async () => {
    const w = await bootTest({ flbs: 2 });
    const { proc, dev, plugin } = w;
    const c = plugin.control;
    const s = await dev.createSession("s");
    const a = createTestFile(proc, "a", enc("a"));
    const before = snapshot(w, a);

    // Handler preserve fails after both FLBs were preserved (first user): they are unpreserved
    // in reverse order.
    c.fail("preserve", { code: "ENOMEM" });
    await rejects(s.preserveFd(a, 1), "ENOMEM");
    expect(callsSince(c, before.calls)).toEqual([
      "flbPreserve:0",
      "flbPreserve:1",
      "preserve:1!",
      "flbUnpreserve:1",
      "flbUnpreserve:0",
    ]);
    c.heal();
    expect({ ...snapshot(w, a), calls: 0 }).toEqual({ ...before, calls: 0 });

    // The second FLB's preserve fails: the first is rolled back, the handler is never called.
    let mark = c.log.length;
    c.fail("flbPreserve", { only: [1n], code: "EAGAIN" });
    await rejects(s.preserveFd(a, 1), "EAGAIN");
    expect(callsSince(c, mark)).toEqual(["flbPreserve:0", "flbPreserve:1!", "flbUnpreserve:0"]);
    c.heal();
    expect({ ...snapshot(w, a), calls: 0 }).toEqual({ ...before, calls: 0 });

    // A plain Error from the handler is EIO with the original as cause; same rollback.
    c.fail("preserve", { plain: true });
    const e = await rejects(s.preserveFd(a, 1), "EIO");
    expect(e.cause).toBeInstanceOf(Error);
    expect(e.cause).not.toBeInstanceOf(LiveUpdateError);
    c.heal();
    expect({ ...snapshot(w, a), calls: 0 }).toEqual({ ...before, calls: 0 });

    // Healed: the same call succeeds.
    mark = c.log.length;
    await s.preserveFd(a, 1);
    expect(c.log.slice(mark).map((x) => x.op)).toEqual(["flbPreserve", "flbPreserve", "preserve"]);
    expect(proc.file(a).refCount).toBe(2);
  });
});

describe("double preservation", () => {
  it("the same file object through dup'd fds is EBUSY in the same session and in another", async () => {
    const { kernel, proc, dev } = await bootTest();
    const s = await dev.createSession("s");
    const t = await dev.createSession("t");
    const a = createTestFile(proc, "a", enc("a"));
    const dup1 = proc.dup(a);
    const dup2 = proc.dup(a);
    expect(proc.file(dup1)).toBe(proc.file(a));
    await s.preserveFd(a, 1);
    await rejects(s.preserveFd(dup1, 2), "EBUSY");
    await rejects(t.preserveFd(dup2, 1), "EBUSY");
    await rejects(t.preserveFd(a, 7), "EBUSY");
    expect(kernel.liveupdate.stats().ownedFiles).toBe(1);
    expect(proc.file(a).refCount).toBe(4); // three fds + LUO
    // Once the owning session is gone the file may be preserved again (through any of its fds).
    await s.close();
    await t.preserveFd(dup2, 1);
    expect(kernel.liveupdate.stats().ownedFiles).toBe(1);
  });

  it("the identity is the handler's getId when it has one, else the file object", async () => {
    const machine = new Machine({ memory: "8 MiB" });
    const k = await machine.boot({ plugins: [valuePlugin] });
    const p = k.spawn("p");
    const dev = await p.openLiveUpdate();
    const s = await dev.createSession("s");
    const t = await dev.createSession("t");
    // Two different file objects with one identity (think: two memfds of one inode).
    await s.preserveFd(p.installFile(new ValueFile(1n, "inode-7")), 1);
    await rejects(t.preserveFd(p.installFile(new ValueFile(2n, "inode-7")), 1), "EBUSY");
    await t.preserveFd(p.installFile(new ValueFile(3n, "inode-8")), 1);
    // Without an identity each file object is its own.
    await s.preserveFd(p.installFile(new ValueFile(4n)), 2);
    await s.preserveFd(p.installFile(new ValueFile(4n)), 3);
    expect(k.liveupdate.stats().ownedFiles).toBe(4);
  });

  it("a retrieved file stays owned until FINISH: preserving it again is EBUSY before, fine after", async () => {
    const { kernel, proc, dev } = await bootTest();
    const s = await dev.createSession("vm");
    await s.preserveFd(createTestFile(proc, "a", enc("data")), 1);
    const { kernel: k2, proc: q, dev: dev2 } = await kexecOpen(kernel);
    const inc = await dev2.retrieveSession("vm");
    const out = await dev2.createSession("vm");
    const fd = await inc.retrieveFd(1);
    expect(k2.liveupdate.stats().ownedFiles).toBe(1);
    await rejects(out.preserveFd(fd, 1), "EBUSY");
    await inc.finish();
    expect(k2.liveupdate.stats().ownedFiles).toBe(0);
    await out.preserveFd(fd, 1);
    expect(dec(q.pread(fd, 10, 0))).toBe("data");
  });
});

describe("tokens", () => {
  it("must be u64: negative, fractional, unsafe or too large is EINVAL; 0 and 2^64-1 work across kexec", async () => {
    const w = await bootTest();
    const { kernel, proc, dev } = w;
    const s = await dev.createSession("s");
    const fd = createTestFile(proc, "f", enc("x"));
    const before = snapshot(w, fd);
    for (const bad of [
      -1,
      -1n,
      1.5,
      Number.NaN,
      Infinity,
      2 ** 53,
      Number.MAX_SAFE_INTEGER + 2,
      2n ** 64n,
      -(2n ** 63n),
    ]) {
      await rejects(s.preserveFd(fd, bad), "EINVAL");
    }
    await rejects(s.preserveFd(fd, "1" as unknown as number), "EINVAL");
    expect(snapshot(w, fd)).toEqual(before);

    const max = 2n ** 64n - 1n;
    const tokens: Array<[number | bigint, string]> = [
      [0, "zero"],
      [max, "max"],
      [Number.MAX_SAFE_INTEGER, "safe"],
      [2n ** 63n, "sign bit"],
    ];
    for (const [t, label] of tokens) await s.preserveFd(createTestFile(proc, label, enc(label)), t);
    // Number and bigint spell the same token.
    await rejects(s.preserveFd(createTestFile(proc, "dupe"), 0n), "EEXIST");
    // Tokens are per session: the same values in another session are fine.
    const t2 = await dev.createSession("t");
    await t2.preserveFd(createTestFile(proc, "other-zero", enc("other zero")), 0n);

    const { proc: q, dev: dev2 } = await kexecOpen(kernel);
    const inc = await dev2.retrieveSession("s");
    for (const bad of [-1, 1.5, 2n ** 64n]) await rejects(inc.retrieveFd(bad), "EINVAL");
    expect(dec(q.pread(await inc.retrieveFd(0n), 10, 0))).toBe("zero");
    expect(dec(q.pread(await inc.retrieveFd(max), 10, 0))).toBe("max");
    expect(dec(q.pread(await inc.retrieveFd(BigInt(Number.MAX_SAFE_INTEGER)), 10, 0))).toBe("safe");
    expect(dec(q.pread(await inc.retrieveFd(2n ** 63n), 10, 0))).toBe("sign bit");
    const inc2 = await dev2.retrieveSession("t");
    expect(dec(q.pread(await inc2.retrieveFd(0), 20, 0))).toBe("other zero");
  });
});

describe("RETRIEVE_FD", () => {
  it("works in any order; twice gives the same file object on a new fd; unknown tokens are ENOENT", async () => {
    const { kernel, proc, dev, plugin } = await bootTest();
    const s = await dev.createSession("vm");
    for (const t of [1, 2, 3]) await s.preserveFd(createTestFile(proc, `f${t}`, enc(`file ${t}`)), t);
    const { proc: q, dev: dev2 } = await kexecOpen(kernel);
    const inc = await dev2.retrieveSession("vm");
    await rejects(inc.retrieveFd(4), "ENOENT");
    const fd3 = await inc.retrieveFd(3);
    const fd1 = await inc.retrieveFd(1);
    const again = await inc.retrieveFd(3);
    expect(again).not.toBe(fd3);
    const file = q.file(fd3);
    expect(q.file(again)).toBe(file);
    expect(file.refCount).toBe(3); // two fds + LUO's own reference until FINISH
    expect(plugin.control.calls("retrieve")).toEqual([3n, 1n]); // the handler ran once per file
    q.close(again);
    q.close(fd3);
    expect(file.refCount).toBe(1);
    expect(q.file(await inc.retrieveFd(3))).toBe(file);
    expect(dec(q.pread(fd1, 10, 0))).toBe("file 1");
    await inc.finish();
    expect(file.refCount).toBe(1); // LUO's reference dropped, the new fd remains
    for (const t of [1, 2, 3]) await rejects(inc.retrieveFd(t), "ENOENT"); // finished: gone
  });

  it("a failed retrieve is sticky: after heal() the same error comes back and the handler is not asked again", async () => {
    const { kernel, proc, dev, plugin } = await bootTest();
    const s = await dev.createSession("vm");
    for (const t of [1, 2, 3]) await s.preserveFd(createTestFile(proc, `f${t}`, enc(`file ${t}`)), t);
    const { kernel: k2, proc: q, dev: dev2 } = await kexecOpen(kernel);
    const c = plugin.control; // the new kernel's switches and log
    const inc = await dev2.retrieveSession("vm");
    c.fail("retrieve", { only: [2n], code: "ENOMEM" });
    const first = await rejects(inc.retrieveFd(2), "ENOMEM");
    c.fail("retrieve", { only: [3n], plain: true });
    const plain = await rejects(inc.retrieveFd(3), "EIO");
    expect(plain.cause).toBeInstanceOf(Error);
    c.heal();
    const second = await rejects(inc.retrieveFd(2), "ENOMEM");
    expect(second).toBe(first);
    expect(await rejects(inc.retrieveFd(3), "EIO")).toBe(plain);
    expect(callsSince(c, 0).filter((x) => x.startsWith("retrieve:"))).toEqual(["retrieve:2!", "retrieve:3!"]);
    // Other files are unaffected, and FINISH still cleans up every file (failed ones too).
    expect(dec(q.pread(await inc.retrieveFd(1), 10, 0))).toBe("file 1");
    await inc.finish();
    expect(c.calls("finish")).toEqual([3n, 2n, 1n]);
    expect(k2.incoming!.unrestoredPages).toBe(0);
  });

  it("files the user closed right after preserve survive kexec; content is captured at reboot", async () => {
    const { kernel, proc, dev } = await bootTest();
    const s = await dev.createSession("vm");
    const files: TestFile[] = [];
    for (const t of [1, 2, 3]) {
      const fd = createTestFile(proc, `f${t}`, enc(`early ${t}`));
      files.push(proc.file(fd) as TestFile);
      await s.preserveFd(fd, t);
      proc.close(fd);
    }
    for (const f of files) {
      expect(f.refCount).toBe(1); // only LUO's
      expect(f.isReleased).toBe(false);
    }
    // Modified through the object after the fd is gone (e.g. by a device): captured at freeze.
    files[1]!.writeAt(0, enc("LATE"));
    const { proc: q, dev: dev2 } = await kexecOpen(kernel);
    const inc = await dev2.retrieveSession("vm");
    expect(dec(q.pread(await inc.retrieveFd(1), 20, 0))).toBe("early 1");
    expect(dec(q.pread(await inc.retrieveFd(2), 20, 0))).toBe("LATEy 2");
    expect(dec(q.pread(await inc.retrieveFd(3), 20, 0))).toBe("early 3");
  });
});

// ---- the dependency API --------------------------------------------------------------------

/** A file that depends on another file (think: an iommufd on a memfd). */
class DepFile extends KernelFile {
  readonly description = "depfile";
  constructor(
    readonly dep: KernelFile | undefined,
    readonly label: string,
  ) {
    super();
  }
}

/** Records data as the dependency's token; retrieves its dependency through the session. */
const depHandler = defineFileHandler<DepFile>({
  compatible: "luo-dep-v1",
  canPreserve: (f) => f instanceof DepFile,
  preserve: ({ file, session }) => ({ data: file.dep ? session.tokenOf(file.dep) : 2n ** 64n - 1n }),
  unpreserve() {},
  async retrieve({ data, session }) {
    const dep = data === 2n ** 64n - 1n ? undefined : await session.incomingFile(data);
    return new DepFile(dep, "retrieved");
  },
  finish() {},
});
const depPlugin = definePlugin({ name: "luo-dep", register: (ctx) => ctx.registerFileHandler(depHandler) });

describe("handler dependency API", () => {
  async function setup(): Promise<{
    k: Kernel;
    p: Process;
    s: SessionHandle;
    t: SessionHandle;
    base: number;
  }> {
    const machine = new Machine({ memory: "8 MiB" });
    const k = await machine.boot({ plugins: [valuePlugin, depPlugin] });
    const p = k.spawn("p");
    const dev = await p.openLiveUpdate();
    return {
      k,
      p,
      s: await dev.createSession("s"),
      t: await dev.createSession("t"),
      base: preservedPages(machine),
    };
  }

  it("tokenOf: ENOENT unless the dependency was preserved earlier in the same session", async () => {
    const { k, p, s, t } = await setup();
    const base = p.installFile(new ValueFile(42n));
    const dep = p.installFile(new DepFile(p.file(base), "dep"));
    await rejects(s.preserveFd(dep, 2), "ENOENT"); // dependency not preserved yet
    await t.preserveFd(base, 1);
    await rejects(s.preserveFd(dep, 2), "ENOENT"); // preserved, but in another session
    expect(k.liveupdate.stats().ownedFiles).toBe(1);
    await t.close();
    await s.preserveFd(base, 9);
    await s.preserveFd(dep, 2);
    expect(k.liveupdate.stats().ownedFiles).toBe(2);
  });

  it("incomingFile: a dependent retrieved first pulls in its dependency, which RETRIEVE_FD then returns", async () => {
    const { k, p, s } = await setup();
    const base = p.installFile(new ValueFile(42n));
    await s.preserveFd(base, 9);
    await s.preserveFd(p.installFile(new DepFile(p.file(base), "dep")), 2);
    const { proc: q, dev: dev2 } = await kexecOpen(k);
    const inc = await dev2.retrieveSession("s");
    const depFd = await inc.retrieveFd(2);
    const got = q.file(depFd) as DepFile;
    expect(got.dep).toBeInstanceOf(ValueFile);
    expect((got.dep as ValueFile).value).toBe(42n);
    const baseFd = await inc.retrieveFd(9);
    expect(q.file(baseFd)).toBe(got.dep);
    await inc.finish();
  });
});
