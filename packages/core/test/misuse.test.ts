// Misuse from plain JavaScript: malformed plugins and options are EINVAL LiveUpdateErrors naming
// what was wrong (never a raw TypeError), and lose nothing; the warning event always carries a
// LiveUpdateError; the messages say what the value is, not what it is not.
import { describe, expect, it } from "vitest";
import {
  Kernel,
  LiveUpdateError,
  Machine,
  definePlugin,
  type BootOptions,
  type KexecOptions,
  type Plugin,
} from "@luo/core";
import { createTestFile } from "@luo/core/testing";
import { bootTest, enc, rejects, throws } from "./helpers/luo.js";

/** Bypasses the types, as a plain JavaScript caller would. */
const js = <T>(v: unknown): T => v as T;

const ok = definePlugin({ name: "ok", register() {} });

describe("malformed boot and kexec input is EINVAL", () => {
  const cases: Array<[string, unknown, string]> = [
    [
      "an empty plugin",
      { plugins: [{}] },
      "boot: plugins[0]: a plugin needs a non-empty name, not undefined",
    ],
    ["plugins as a string", { plugins: "x" }, 'boot: plugins must be an array of plugins, not a string "x"'],
    ["a null plugin", { plugins: [ok, null] }, "boot: plugins[1]: a plugin must be an object, not null"],
    [
      "a plugin without register",
      { plugins: [{ name: "p" }] },
      'boot: plugins[0]: plugin "p" has no register function',
    ],
    [
      "dependencies as a string",
      { plugins: [{ name: "p", dependencies: "ok", register() {} }] },
      'boot: plugins[0]: plugin "p" has malformed dependencies (expected an array of plugin names)',
    ],
    ["options as a string", "plugins", 'boot: options must be an object, not a string "plugins"'],
    ["null options", null, "boot: options must be an object, not null"],
    ["options as an array", [ok], "boot: options must be an object, not an array"],
    ["a misspelt option", { plugin: [ok] }, 'boot: unknown option "plugin" (known: plugins)'],
  ];
  for (const [what, options, message] of cases) {
    it(`boot with ${what}`, async () => {
      const machine = new Machine({ memory: "8 MiB" });
      const e = await rejects(machine.boot(js<BootOptions>(options)), "EINVAL");
      expect(e.message).toBe(`EINVAL: ${message}`);
      await expect(machine.boot({ plugins: [ok] })).resolves.toBeInstanceOf(Kernel); // nothing was held
    });
  }

  it("boot of something that is not a machine", async () => {
    const e = await rejects(Kernel.boot(js<Machine>({})), "EINVAL");
    expect(e.message).toBe("EINVAL: boot: an object is not a Machine");
  });

  it("definePlugin of null or a bad name", () => {
    expect(throws(() => definePlugin(js(null)), "EINVAL").message).toBe(
      "EINVAL: definePlugin: a plugin must be an object, not null",
    );
    expect(throws(() => definePlugin(js({ name: 7, register() {} })), "EINVAL").message).toBe(
      "EINVAL: definePlugin: a plugin needs a non-empty name, not a number 7",
    );
  });

  const kexecCases: Array<[string, unknown, string]> = [
    ["plugins as a string", { plugins: "x" }, 'kexec: plugins must be an array of plugins, not a string "x"'],
    [
      "an empty plugin",
      { plugins: [{}] },
      "kexec: plugins[0]: a plugin needs a non-empty name, not undefined",
    ],
    ["saveTo as a number", { saveTo: 5 }, "kexec: saveTo must be a non-empty path string, not a number 5"],
    ["an empty saveTo", { saveTo: "" }, 'kexec: saveTo must be a non-empty path string, not a string ""'],
    ["options as a number", 1, "kexec: options must be an object, not a number 1"],
    [
      "a misspelt option",
      { saveto: "/tmp/x" },
      'kexec: unknown option "saveto" (known: plugins, saveTo, gapNs)',
    ],
  ];
  for (const [what, options, message] of kexecCases) {
    it(`kexec with ${what} fails before anything is frozen`, async () => {
      const { kernel, proc, dev } = await bootTest();
      const s = await dev.createSession("s");
      await s.preserveFd(createTestFile(proc, "f", enc("kept")), 1n);
      const e = await rejects(kernel.kexec(js<KexecOptions>(options)), "EINVAL");
      expect(e.message).toBe(`EINVAL: ${message}`);
      expect(kernel.halted).toBe(false);
      expect(kernel.machine.khoRoot).toBe(0n);
      const next = await kernel.kexec();
      const dev2 = await next!.spawn("t").openLiveUpdate();
      await expect((await dev2.retrieveSession("s")).retrieveFd(1n)).resolves.toBeTypeOf("number");
    });
  }
});

describe("the warning payload is always a LiveUpdateError", () => {
  it("wraps a plain Error thrown by a listener, with cause", async () => {
    const { kernel, dev } = await bootTest();
    const warnings: unknown[] = [];
    kernel.liveupdate.events.on("warning", (w) => warnings.push(w.error));
    const boom = new Error("listener boom");
    kernel.liveupdate.events.on("session:created", () => {
      throw boom;
    });
    await dev.createSession("a");
    expect(warnings).toHaveLength(1);
    const w = warnings[0] as LiveUpdateError;
    expect(w).toBeInstanceOf(LiveUpdateError);
    expect(w.code).toBe("EIO");
    expect(w.message).toBe('EIO: "session:created" event listener failed: listener boom');
    expect(w.cause).toBe(boom);
  });

  it("wraps a string thrown by a plugin's teardown", async () => {
    const plugin: Plugin = definePlugin({
      name: "messy",
      register(ctx) {
        ctx.onTeardown(() => {
          throw "not even an Error";
        });
      },
    });
    const kernel = await new Machine({ memory: "8 MiB" }).boot({ plugins: [plugin] });
    const warnings: unknown[] = [];
    kernel.liveupdate.events.on("warning", (w) => warnings.push(w.error));
    await kernel.shutdown();
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toBeInstanceOf(LiveUpdateError);
    expect((warnings[0] as LiveUpdateError).message).toBe(
      'EIO: plugin "messy" teardown failed: not even an Error',
    );
  });

  it("warn() passes a LiveUpdateError on and wraps anything else", async () => {
    const { kernel } = await bootTest();
    const warnings: LiveUpdateError[] = [];
    kernel.liveupdate.events.on("warning", (w) => warnings.push(w.error));
    const own = new LiveUpdateError("EBUSY", "mine");
    kernel.liveupdate.events.warn(own);
    kernel.liveupdate.events.warn(42, "the answer");
    expect(warnings[0]).toBe(own);
    expect(warnings[1]).toBeInstanceOf(LiveUpdateError);
    expect(warnings[1]!.message).toBe("EIO: the answer failed: 42");
  });
});

describe("messages say what the value is", () => {
  it("tokens", async () => {
    const { proc, dev } = await bootTest();
    const s = await dev.createSession("s");
    const fd = createTestFile(proc, "f", enc("x"));
    const msg = async (token: unknown): Promise<string> =>
      (await rejects(s.preserveFd(fd, js<bigint>(token)), "EINVAL")).message;
    expect(await msg("7")).toBe('EINVAL: token is a string "7", not a bigint or a number');
    expect(await msg(2 ** 53)).toBe(
      "EINVAL: token 9007199254740992 is not a safe integer (above 2^53 - 1); pass it as a bigint",
    );
    expect(await msg(1.5)).toBe("EINVAL: token 1.5 is not an integer");
    expect(await msg(-1)).toBe("EINVAL: token -1 is negative, not a u64");
    expect(await msg(1n << 64n)).toBe("EINVAL: token 18446744073709551616 is not a u64 (0 to 2^64 - 1)");
    expect(await msg(null)).toBe("EINVAL: token is null, not a bigint or a number");
    await expect(s.preserveFd(fd, 2 ** 53 - 1)).resolves.toBeUndefined();
  });

  it("syscall offsets and lengths", async () => {
    const { proc } = await bootTest();
    const fd = createTestFile(proc, "f", enc("x"));
    expect(throws(() => proc.pread(fd, -1, 0), "EINVAL").message).toBe(
      "EINVAL: pread: length -1 is negative",
    );
    expect(throws(() => proc.pread(fd, 1, 0.5), "EINVAL").message).toBe(
      "EINVAL: pread: offset 0.5 is not an integer",
    );
    expect(throws(() => proc.read(fd, js<number>("4")), "EINVAL").message).toBe(
      'EINVAL: read: length is a string "4", not a number',
    );
    expect(throws(() => proc.pwrite(fd, enc("y"), 2 ** 53), "EINVAL").message).toBe(
      "EINVAL: pwrite: offset 9007199254740992 is beyond the largest file offset 2^52",
    );
  });

  it("machine addresses and values", () => {
    const m = new Machine({ memory: "8 MiB" });
    const phys = m.allocPages(0);
    expect(throws(() => m.read(js<bigint>("0x1000"), 4), "EINVAL").message).toBe(
      'EINVAL: read: the address is a string "0x1000", not a bigint',
    );
    expect(throws(() => m.writeU64(phys, js<bigint>(5)), "EINVAL").message).toBe(
      `EINVAL: writeU64 at 0x${phys.toString(16)}: the value is a number 5, not a bigint`,
    );
    expect(throws(() => m.read(phys, js<number>("4")), "EINVAL").message).toBe(
      `EINVAL: read at 0x${phys.toString(16)}: bad length a string "4"`,
    );
    expect(throws(() => m.allocPages(js<number>("1")), "EINVAL").message).toBe(
      'EINVAL: allocPages: order a string "1" is not an integer in 0..9',
    );
  });

  it("a duplicate outgoing session", async () => {
    const { dev } = await bootTest();
    await dev.createSession("dup");
    expect((await rejects(dev.createSession("dup"), "EEXIST")).message).toBe(
      'EEXIST: an outgoing session named "dup" already exists',
    );
  });
});

describe("FLB access with something that is not an FLB", () => {
  it("getIncoming and getOutgoing of undefined, null or a number are EINVAL; an unknown object ENOENT", async () => {
    const kernel = await new Machine({ memory: "8 MiB" }).boot();
    const flbs = kernel.liveupdate.flbs;
    for (const [value, shown] of [
      [undefined, "undefined"],
      [null, "null"],
      [7, "a number 7"],
    ] as const) {
      const incoming = await rejects(flbs.getIncoming(js(value)), "EINVAL");
      expect(incoming.message).toBe(`EINVAL: expected an FLB object, not ${shown}`);
      const outgoing = await rejects(flbs.getOutgoing(js(value)), "EINVAL");
      expect(outgoing.message).toBe(incoming.message);
    }
    await rejects(flbs.getIncoming(js({ compatible: "nobody-v1" })), "ENOENT");
    await kernel.shutdown();
  });
});
