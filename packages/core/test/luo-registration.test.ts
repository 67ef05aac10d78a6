// Handler and FLB registration with quiesce/resume: EBUSY while any incoming or outgoing session exists, EEXIST duplicates, EINVAL for
// missing callbacks, bad compatibles and unknown handlers, ENOSPC at the 64th FLB, ENOENT for an
// unlinked FLB, EBUSY for a handler with FLBs — and the documented consequence that handlers must
// be registered before the first /dev/liveupdate open of a boot with incoming sessions. Also the
// selection rule of PRESERVE: the first handler in registration order whose canPreserve accepts.
import { describe, expect, it } from "vitest";
import {
  LiveUpdateError,
  Machine,
  defineFileHandler,
  defineFlb,
  type FileHandler,
  type FileHandlerSpec,
  type Flb,
  type FlbSpec,
} from "@luo/core";
import { type Registry } from "@luo/core/internal";
import { TestControl, createTestFile, createTestFlb, createTestHandler } from "@luo/core/testing";
import { ValueFile, bootTest, kexec, rejects, throws, utf8Length } from "./helpers/luo.js";

const noop = () => {};
/** A complete handler spec for value files, with a chosen compatible. */
function spec(compatible: string): FileHandlerSpec<ValueFile> {
  return {
    compatible,
    canPreserve: (f) => f instanceof ValueFile,
    preserve: ({ file }) => ({ data: file.value }),
    unpreserve: noop,
    retrieve: ({ data }) => new ValueFile(data),
    finish: noop,
  };
}
function flbSpec(compatible: string): FlbSpec<number> {
  return {
    compatible,
    preserve: () => ({ data: 1n, obj: 1 }),
    unpreserve: noop,
    retrieve: () => 1,
    finish: noop,
  };
}
const asHandler = (x: object) => x as unknown as FileHandler;
const asFlb = (x: object) => x as unknown as Flb;

/** Runs every registration call once and returns the codes (undefined = success), then undoes them. */
async function allRegistrationCalls(reg: Registry, linkedHandler: FileHandler, linkedFlb: Flb) {
  const h = defineFileHandler(spec("probe-v1"));
  const f = defineFlb(flbSpec("probe-flb-v1"));
  const code = async (p: Promise<void>) =>
    p.then(
      () => undefined,
      (e: LiveUpdateError) => e.code,
    );
  const out = {
    registerHandler: await code(reg.registerHandler(h)),
    registerFlb: await code(reg.registerFlb(linkedHandler, f)),
    unregisterFlb: await code(reg.unregisterFlb(linkedHandler, linkedFlb)),
    unregisterHandler: await code(reg.unregisterHandler(h)),
  };
  return out;
}

describe("file handler registration", () => {
  it("EINVAL for a missing required callback or a compatible that is not 1..47 bytes", async () => {
    const { kernel } = await bootTest();
    const reg = kernel.liveupdate.registry;
    for (const op of ["canPreserve", "preserve", "unpreserve", "retrieve", "finish"] as const) {
      const partial: Partial<FileHandlerSpec<ValueFile>> = { ...spec(`missing-${op}`) };
      delete partial[op];
      throws(() => defineFileHandler(partial as FileHandlerSpec<ValueFile>), "EINVAL");
      await rejects(reg.registerHandler(asHandler(partial)), "EINVAL");
      await rejects(reg.registerHandler(asHandler({ ...partial, [op]: "not a function" })), "EINVAL");
    }
    // Optional callbacks may be absent.
    await reg.registerHandler(defineFileHandler(spec("minimal-v1")));
    const c47 = "c".repeat(47);
    const bad = ["c".repeat(48), "é".repeat(24), "", "a\0b", "x".repeat(100)];
    for (const c of bad) {
      throws(() => defineFileHandler(spec(c)), "EINVAL");
      await rejects(reg.registerHandler(asHandler(spec(c))), "EINVAL");
    }
    expect(utf8Length("é".repeat(24))).toBe(48);
    await reg.registerHandler(defineFileHandler(spec(c47)));
    expect(reg.find(c47)).toBeDefined();
    await reg.registerHandler(defineFileHandler(spec("é".repeat(23) + "x")));
  });

  it("EEXIST for a second handler with the same compatible; ENOENT to unregister an unknown one", async () => {
    const { kernel } = await bootTest();
    const reg = kernel.liveupdate.registry;
    const dup = await rejects(reg.registerHandler(createTestHandler(new TestControl())), "EEXIST");
    expect(dup.message).toContain('"luo-test-v1"');
    const h = defineFileHandler(spec("once-v1"));
    await reg.registerHandler(h);
    await rejects(reg.registerHandler(h), "EEXIST");
    await rejects(reg.registerHandler(defineFileHandler(spec("once-v1"))), "EEXIST");
    await reg.unregisterHandler(h);
    await rejects(reg.unregisterHandler(h), "ENOENT");
    await reg.registerHandler(h);
  });

  it("the first handler in registration order whose canPreserve accepts is chosen (and handed over)", async () => {
    const machine = new Machine({ memory: "8 MiB" });
    const first = defineFileHandler(spec("first-v1"));
    const second = defineFileHandler(spec("second-v1"));
    const k = await machine.boot();
    await k.liveupdate.registry.registerHandler(first);
    await k.liveupdate.registry.registerHandler(second);
    const p = k.spawn("p");
    const dev = await p.openLiveUpdate();
    const s = await dev.createSession("s");
    await s.preserveFd(p.installFile(new ValueFile(5n)), 1);
    expect(
      k.liveupdate.outgoingSessions
        .get("s")!
        .files.list()
        .map((f) => f.compatible),
    ).toEqual(["first-v1"]);
    // In the next kernel the record names "first-v1": that handler must exist there.
    const k2 = await k.kexec({ plugins: [] });
    await k2!.liveupdate.registry.registerHandler(second);
    await k2!.liveupdate.registry.registerHandler(first);
    const q = k2!.spawn("q");
    const inc = await (await q.openLiveUpdate()).retrieveSession("s");
    expect(
      k2!.liveupdate.incomingSessions
        .get("s")!
        .files.list()
        .map((f) => f.compatible),
    ).toEqual(["first-v1"]);
    expect((q.file(await inc.retrieveFd(1)) as ValueFile).value).toBe(5n);
  });
});

describe("FLB registration", () => {
  it("EINVAL for a missing op, a bad compatible, or a handler that is not registered", async () => {
    const { kernel, plugin } = await bootTest();
    const reg = kernel.liveupdate.registry;
    for (const op of ["preserve", "unpreserve", "retrieve", "finish"] as const) {
      const partial: Partial<FlbSpec<number>> = { ...flbSpec(`flb-missing-${op}`) };
      delete partial[op];
      throws(() => defineFlb(partial as FlbSpec<number>), "EINVAL");
      await rejects(reg.registerFlb(plugin.handler, asFlb(partial)), "EINVAL");
    }
    for (const c of ["f".repeat(48), "", "a\0"]) {
      throws(() => defineFlb(flbSpec(c)), "EINVAL");
      await rejects(
        reg.registerFlb(plugin.handler, asFlb({ ...flbSpec(c), compatibleBytes: new Uint8Array(1) })),
        "EINVAL",
      );
    }
    await reg.registerFlb(plugin.handler, defineFlb(flbSpec("f".repeat(47))));
    const unregistered = defineFileHandler(spec("never-registered-v1"));
    await rejects(reg.registerFlb(unregistered, defineFlb(flbSpec("flb-x"))), "EINVAL");
    // A handler object that merely shares a registered compatible is not registered either.
    await rejects(
      reg.registerFlb(createTestHandler(new TestControl()), defineFlb(flbSpec("flb-y"))),
      "EINVAL",
    );
  });

  it("EEXIST for the same FLB twice on one handler or another FLB with the same compatible; one FLB may serve two handlers", async () => {
    const { kernel, plugin } = await bootTest();
    const reg = kernel.liveupdate.registry;
    const flb = defineFlb(flbSpec("shared-flb-v1"));
    await reg.registerFlb(plugin.handler, flb);
    await rejects(reg.registerFlb(plugin.handler, flb), "EEXIST");
    await rejects(reg.registerFlb(plugin.handler, defineFlb(flbSpec("shared-flb-v1"))), "EEXIST");
    const other = defineFileHandler(spec("other-v1"));
    await reg.registerHandler(other);
    await reg.registerFlb(other, flb);
    expect(kernel.liveupdate.flbs.state(flb)!.users).toBe(2);
    expect(kernel.liveupdate.flbs.registered()).toHaveLength(1);
    // Unlinking from one handler keeps it registered for the other.
    await reg.unregisterFlb(other, flb);
    expect(kernel.liveupdate.flbs.state(flb)!.users).toBe(1);
    await rejects(reg.unregisterFlb(other, flb), "ENOENT");
  });

  it("63 FLBs fit; the 64th is ENOSPC; unregistering one makes room again", async () => {
    const control = new TestControl();
    const { kernel, plugin } = await bootTest({ control, flbs: 3 });
    const reg = kernel.liveupdate.registry;
    const other = defineFileHandler(spec("other-v1"));
    await reg.registerHandler(other);
    const extra: Flb[] = [];
    for (let i = 3; i < 63; i++) {
      const f = createTestFlb(control, i);
      extra.push(f);
      await reg.registerFlb(i % 2 ? plugin.handler : other, f);
    }
    expect(kernel.liveupdate.flbs.registered()).toHaveLength(63);
    const f63 = createTestFlb(control, 63);
    await rejects(reg.registerFlb(plugin.handler, f63), "ENOSPC");
    await rejects(reg.registerFlb(other, defineFlb(flbSpec("one-too-many"))), "ENOSPC");
    // An FLB already registered can still be linked to another handler: it is not a new one.
    await reg.registerFlb(other, plugin.testFlbs[0]!);
    await reg.unregisterFlb(plugin.handler, extra[0]!); // i = 3 was linked to the test handler
    await reg.registerFlb(plugin.handler, f63);
    expect(kernel.liveupdate.flbs.registered()).toHaveLength(63);
  });

  it("ENOENT to unregister an FLB that is not linked; EBUSY to unregister a handler that still has FLBs", async () => {
    const { kernel, plugin } = await bootTest({ flbs: 2 });
    const reg = kernel.liveupdate.registry;
    await rejects(reg.unregisterFlb(plugin.handler, defineFlb(flbSpec("never-linked"))), "ENOENT");
    const other = defineFileHandler(spec("other-v1"));
    await reg.registerHandler(other);
    await rejects(reg.unregisterFlb(other, plugin.testFlbs[0]!), "ENOENT"); // linked, but elsewhere
    await rejects(reg.unregisterHandler(plugin.handler), "EBUSY");
    await reg.unregisterFlb(plugin.handler, plugin.testFlbs[1]!);
    await rejects(reg.unregisterHandler(plugin.handler), "EBUSY");
    await reg.unregisterFlb(plugin.handler, plugin.testFlbs[0]!);
    await rejects(reg.unregisterFlb(plugin.handler, plugin.testFlbs[0]!), "ENOENT");
    await reg.unregisterHandler(plugin.handler);
    expect(reg.find(plugin.handler.compatible)).toBeUndefined();
    expect(kernel.liveupdate.flbs.registered()).toHaveLength(0);
  });
});

describe("compatibles with a lone UTF-16 surrogate", () => {
  // TextEncoder turns a lone surrogate into U+FFFD: such a compatible would be handed over as
  // bytes that name no registered handler or FLB in the next kernel, so it is refused up front.
  const lone = ["a\uD800", "\uDC01b", "x\uDBFFy"];

  it("are EINVAL for defineFileHandler and registerHandler, naming the compatible", async () => {
    const { kernel } = await bootTest();
    const reg = kernel.liveupdate.registry;
    for (const c of lone) {
      const e = throws(() => defineFileHandler(spec(c)), "EINVAL");
      expect(e.message).toContain("handler compatible");
      expect(e.message).toContain("lone surrogate");
      await rejects(
        reg.registerHandler(asHandler({ ...spec(c), compatibleBytes: new Uint8Array(1) })),
        "EINVAL",
      );
    }
    expect(reg.find("a\uD800")).toBeUndefined();
    // A well-formed surrogate pair is fine.
    await reg.registerHandler(defineFileHandler(spec("pair-\u{1F600}")));
  });

  it("are EINVAL for defineFlb and registerFlb", async () => {
    const { kernel, plugin } = await bootTest();
    const reg = kernel.liveupdate.registry;
    for (const c of lone) {
      const e = throws(() => defineFlb(flbSpec(c)), "EINVAL");
      expect(e.message).toContain("FLB compatible");
      expect(e.message).toContain("lone surrogate");
      await rejects(
        reg.registerFlb(plugin.handler, asFlb({ ...flbSpec(c), compatibleBytes: new Uint8Array(1) })),
        "EINVAL",
      );
    }
    await reg.registerFlb(plugin.handler, defineFlb(flbSpec("pair-\u{1F600}")));
  });
});

describe("quiesce: registration is EBUSY while any session exists", () => {
  it("outgoing sessions block every registration call until they are closed", async () => {
    const { kernel, dev, plugin } = await bootTest({ flbs: 1 });
    const reg = kernel.liveupdate.registry;
    const s = await dev.createSession("s");
    const busy = {
      registerHandler: "EBUSY",
      registerFlb: "EBUSY",
      unregisterFlb: "EBUSY",
      unregisterHandler: "EBUSY",
    };
    expect(await allRegistrationCalls(reg, plugin.handler, plugin.testFlbs[0]!)).toEqual(busy);
    await s.close();
    expect(await allRegistrationCalls(reg, plugin.handler, plugin.testFlbs[0]!)).toEqual({
      registerHandler: undefined,
      registerFlb: undefined,
      unregisterFlb: undefined,
      unregisterHandler: undefined,
    });
  });

  it("incoming sessions block it from the first open until the last one is closed; before the open it is allowed", async () => {
    const w = await bootTest({ flbs: 1 });
    const s = await w.dev.createSession("a");
    await s.preserveFd(createTestFile(w.proc, "f"), 1);
    await w.dev.createSession("b");
    const k2 = await w.kernel.kexec();
    const reg = k2!.liveupdate.registry;
    // Before the first open nothing is deserialized yet: registration works.
    const early = defineFileHandler(spec("early-v1"));
    await reg.registerHandler(early);
    const q = k2!.spawn("q");
    const dev = await q.openLiveUpdate();
    expect(k2!.liveupdate.stats().incomingSessions).toBe(2);
    const probe = () => allRegistrationCalls(reg, w.plugin.handler, w.plugin.testFlbs[0]!);
    const busy = {
      registerHandler: "EBUSY",
      registerFlb: "EBUSY",
      unregisterFlb: "EBUSY",
      unregisterHandler: "EBUSY",
    };
    expect(await probe()).toEqual(busy); // retrieved or not, incoming sessions count
    await rejects(reg.unregisterHandler(early), "EBUSY");
    const a = await dev.retrieveSession("a");
    await a.finish();
    expect(await probe()).toEqual(busy); // finished but not closed: still listed
    await a.close();
    expect(await probe()).toEqual(busy); // "b" was never retrieved: it stays until the next kexec
    await (await dev.retrieveSession("b")).close();
    expect(k2!.liveupdate.stats().incomingSessions).toBe(0);
    await reg.unregisterHandler(early);
  });

  it("handlers registered before the first open of the next kernel make its incoming files usable", async () => {
    const w = await bootTest();
    const s = await w.dev.createSession("s");
    await s.preserveFd(createTestFile(w.proc, "f", new TextEncoder().encode("late handler")), 1);
    // The next kernel boots without any plugin; the handler is registered afterwards, before the open.
    const k2 = await kexec(w.kernel, []);
    await k2.liveupdate.registry.registerHandler(createTestHandler(w.plugin.control));
    const q = k2.spawn("q");
    const inc = await (await q.openLiveUpdate()).retrieveSession("s");
    expect(new TextDecoder().decode(q.pread(await inc.retrieveFd(1), 100, 0))).toBe("late handler");
  });
});
