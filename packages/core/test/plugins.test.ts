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
