// Plugins: dependency order, coded errors for missing/cyclic/duplicate plugins, reverse teardown,
// and DI through the kernel's child container with explicit tokens.
import { describe, expect, it } from "vitest";
import { inject, injectable, type InjectionToken } from "tsyringe";
import {
  KHO,
  LIVE_UPDATE,
  LiveUpdateError,
  MACHINE,
  Machine,
  definePlugin,
  type Kho,
  type LiveUpdate,
  type Plugin,
} from "@luo/core";
import { rejects } from "./helpers/luo.js";

function recorder(log: string[], name: string, dependencies: string[] = []): Plugin {
  return definePlugin({
    name,
    dependencies,
    register(ctx) {
      log.push(`register ${name}`);
      ctx.onTeardown(() => {
        log.push(`teardown ${name}`);
      });
    },
  });
}

async function bootError(plugins: Plugin[]): Promise<LiveUpdateError> {
  const e = await new Machine({ memory: "8 MiB" }).boot({ plugins }).catch((x: unknown) => x);
  expect(e).toBeInstanceOf(LiveUpdateError);
  return e as LiveUpdateError;
}

describe("plugins", () => {
  it("register in dependency order and tear down in reverse at kexec", async () => {
    const log: string[] = [];
    const plugins = [recorder(log, "c", ["b"]), recorder(log, "a"), recorder(log, "b", ["a"])];
    const k = await new Machine({ memory: "8 MiB" }).boot({ plugins });
    expect(log).toEqual(["register a", "register b", "register c"]);
    log.length = 0;
    const k2 = await k.kexec();
    expect(log).toEqual(["teardown c", "teardown b", "teardown a", "register a", "register b", "register c"]);
    log.length = 0;
    await k2!.shutdown();
    expect(log).toEqual(["teardown c", "teardown b", "teardown a"]);
  });

  it("reject missing, cyclic and duplicate plugins with codes", async () => {
    expect((await bootError([recorder([], "x", ["nope"])])).code).toBe("ENOENT");
    const cyc = await bootError([recorder([], "x", ["y"]), recorder([], "y", ["x"])]);
    expect(cyc.code).toBe("ELOOP");
    expect(cyc.message).toContain("x → y → x");
    expect((await bootError([recorder([], "x"), recorder([], "x")])).code).toBe("EEXIST");
    expect(() => definePlugin({ name: "", register() {} })).toThrow(LiveUpdateError);
  });

  it("a failing register aborts the boot, tears down what registered, and frees the machine", async () => {
    const log: string[] = [];
    const machine = new Machine({ memory: "8 MiB" });
    const bad = definePlugin({
      name: "bad",
      dependencies: ["a"],
      register() {
        throw new TypeError("boom");
      },
    });
    const e = await machine.boot({ plugins: [recorder(log, "a"), bad] }).catch((x: unknown) => x);
    expect((e as LiveUpdateError).code).toBe("EIO");
    expect(log).toEqual(["register a", "teardown a"]);
    await expect(machine.boot()).resolves.toBeDefined();
  });

  it("a second kernel on a running machine is EBUSY", async () => {
    const machine = new Machine({ memory: "8 MiB" });
    await machine.boot();
    await rejects(machine.boot(), "EBUSY");
  });

  it("resolves plugin services from the kernel's child container with explicit tokens", async () => {
    const COUNTER: InjectionToken<Counter> = Symbol.for("test.Counter");
    @injectable()
    class Counter {
      constructor(
        @inject(MACHINE) readonly machine: Machine,
        @inject(KHO) readonly kho: Kho,
        @inject(LIVE_UPDATE) readonly luo: LiveUpdate,
      ) {}
    }
    const plugin = definePlugin({
      name: "svc",
      register(ctx) {
        ctx.container.register(COUNTER, { useClass: Counter });
      },
    });
    const machine = new Machine({ memory: "8 MiB" });
    const k = await machine.boot({ plugins: [plugin] });
    const c = k.container.resolve<Counter>(COUNTER);
    expect(c.machine).toBe(machine);
    expect(c.kho).toBe(k.kho);
    expect(c.luo).toBe(k.liveupdate);
    const k2 = (await k.kexec())!;
    expect(k2.container.resolve<Counter>(COUNTER).kho).toBe(k2.kho); // a fresh container per boot
    expect(k2.container.resolve<Counter>(COUNTER).kho).not.toBe(k.kho);
  });
});

describe("plugins and FLBs at boot", () => {
  it("ctx.flb gives a plugin the previous kernel's FLB object at boot (ENODATA on a cold boot)", async () => {
    const { defineFileHandler, defineFlb, KernelFile } = await import("@luo/core");
    class Thing extends KernelFile {
      readonly description = "thing";
    }
    const flb = defineFlb<string>({
      compatible: "plugin-boot-flb-v1",
      preserve: ({ kho }) => {
        const b = kho.allocPreserve(8);
        b.view.set(new TextEncoder().encode("adopted!"));
        return { data: b.phys, obj: "outgoing" };
      },
      unpreserve: ({ kho, data }) => kho.unpreserveFree(data),
      retrieve: ({ incoming, data }) => new TextDecoder().decode(incoming.restore(data).view.subarray(0, 8)),
      finish: () => undefined,
    });
    const handler = defineFileHandler<Thing>({
      compatible: "plugin-boot-thing-v1",
      canPreserve: (f) => f instanceof Thing,
      preserve: () => ({ data: 0n }),
      unpreserve: () => undefined,
      retrieve: () => new Thing(),
      finish: () => undefined,
    });
    const seen: Array<string | undefined> = [];
    const plugin = definePlugin({
      name: "adopter",
      async register(ctx) {
        await ctx.registerFileHandler(handler);
        await ctx.registerFlb(handler, flb);
        seen.push(await ctx.flb.getIncoming(flb).catch((e: LiveUpdateError) => e.code));
      },
    });
    const m = new Machine({ memory: "16 MiB" });
    const k1 = await m.boot({ plugins: [plugin] });
    expect(seen).toEqual(["ENODATA"]);
    const proc = k1.spawn("p");
    const s = await (await proc.openLiveUpdate()).createSession("s");
    await s.preserveFd(proc.installFile(new Thing()), 1);
    await k1.kexec();
    expect(seen).toEqual(["ENODATA", "adopted!"]);
  });
});
