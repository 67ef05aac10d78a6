// luod end to end, in one Node process: three VMMs across a kexec through luod and luoctl, the
// mapping memfd at token 0, status reasons, and what luod does with bad input.
import { describe, expect, it } from "vitest";
import { Machine, isLiveUpdateError, type Kernel } from "@luo/core";
import { memfd } from "@luo/memfd-handler";
import {
  connectLuod,
  startLuod,
  luoctl,
  LUOD_SOCKET_PATH,
  MAX_REQUEST_BYTES,
  type LuodStatus,
} from "../src/index.js";
import { coldBaseline, host, ramPattern, reclaim, settle, RAM_BYTES } from "./helpers.js";

describe("three clients across a kexec", () => {
  it("hands every session back to its owner; everything is finished and the pages are at baseline", async () => {
    const prepared: number[] = [];
    const h = await host(3, { vmm: (i) => ({ onPrepare: () => void prepared.push(i) }) });
    const ctl = h.kernel.spawn("luoctl");
    const before = await luoctl(ctl, ["status", "--json"]);
    const st = JSON.parse(before.output) as LuodStatus;
    expect(st.outgoing.map((o) => [o.name, o.owner])).toEqual([
      ["vm-0", "vmm-0"],
      ["vm-1", "vmm-1"],
      ["vm-2", "vmm-2"],
    ]);
    const r = await luoctl(ctl, ["update"]);
    expect(r).toEqual({ status: 0, output: "update: preflight → barrier → kexec: the kernel was replaced" });
    expect(prepared.sort()).toEqual([0, 1, 2]);
    const k2 = (await h.next)!;
    expect(h.kernel.halted).toBe(true);

    const luod2 = await startLuod(k2);
    const s0 = await luod2.status();
    expect(s0.kexecsCount).toBe(1);
    expect(s0.ownSession).toBe("waiting");
    expect(s0.incoming.map((i) => [i.name, i.owner, i.state])).toEqual([
      ["vm-0", "vmm-0", "waiting"],
      ["vm-1", "vmm-1", "waiting"],
      ["vm-2", "vmm-2", "waiting"],
    ]);
    expect(s0.incoming[0]!.reasons).toEqual([
      "vmm-0 has not reconnected",
      "token 1 (memfd-v2) was never retrieved",
    ]);
    for (const i of [2, 0, 1]) await reclaim(k2, i);
    const s1 = await luod2.status();
    expect(s1.incoming.map((i) => i.state)).toEqual(["done", "done", "done"]);
    expect(s1.ownSession).toBe("finished");
    expect(k2.liveupdate.stats()).toMatchObject({ incomingSessions: 0, ownedFiles: 0 });
    expect(k2.incoming!.unrestoredPages).toBe(0);
    luod2.exit();
    expect(k2.machine.stats()).toMatchObject(await coldBaseline(h.plugins));
  });

  it("a VMM may preserve more while preparing; a second update after the first works", async () => {
    const h = await host(1, {
      vmm: () => ({
        onPrepare: async () => {
          const v = h.vmms[0]!;
          const state = (await import("@luo/memfd-handler")).memfdCreate(v.proc, "vcpu-state");
          v.proc.pwrite(state, new TextEncoder().encode("vcpu registers"), 0);
          await v.session.preserveFd(state, 2n);
        },
      }),
    });
    const r = await h.luod.update();
    expect(r.ok).toBe(true);
    const k2 = (await h.next)!;
    let resolveNext!: (k: Kernel | undefined) => void;
    const next3 = new Promise<Kernel | undefined>((res) => (resolveNext = res));
    const luod2 = await startLuod(k2, { onKexec: (k) => resolveNext(k) });
    const p = k2.spawn("vmm-0");
    const c = await connectLuod(p, { name: "vmm-0" });
    const s = await c.retrieveSession("vm-0");
    expect(new TextDecoder().decode(p.pread(await s.retrieveFd(2n), 100, 0))).toBe("vcpu registers");
    const ram = await s.retrieveFd(1n);
    await c.finishSession(s);
    // preserve the same RAM again for the next update
    const out = await c.createSession("vm-0");
    await out.preserveFd(ram, 1n);
    expect((await luod2.update()).ok).toBe(true);
    const k3 = (await next3)!;
    const luod3 = await startLuod(k3);
    expect((await luod3.status()).kexecsCount).toBe(2);
    await reclaim(k3, 0);
    expect((await luod3.status()).ownSession).toBe("finished");
  });
});

describe("protocol errors", () => {
  it("a malformed or oversized message gets an error reply and luod keeps serving the others", async () => {
    const h = await host(1);
    const p = h.kernel.spawn("fuzzer");
    const fd = p.socket();
    p.connect(fd, LUOD_SOCKET_PATH);
    const replies: Record<string, unknown>[] = [];
    const queue: Record<string, unknown>[] = [];
    let partial = "";
    const read = async (): Promise<Record<string, unknown>> => {
      while (queue.length === 0) {
        partial += new TextDecoder().decode(await p.recv(fd, 65536));
        const lines = partial.split("\n");
        partial = lines.pop()!;
        for (const l of lines) queue.push(JSON.parse(l) as Record<string, unknown>);
      }
      replies.push(queue[0]!);
      return queue.shift()!;
    };
    const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
    p.send(fd, enc("this is not json\n"));
    expect(await read()).toMatchObject({ id: null, ok: false, code: "EPROTO" });
    p.send(fd, enc(`[1,2]\n{"op":"status"}\n`));
    expect(await read()).toMatchObject({
      id: null,
      ok: false,
      error: "EPROTO: the request is not a JSON object",
    });
    expect(await read()).toMatchObject({
      id: null,
      ok: false,
      error: "EPROTO: the request has no integer id",
    });
    p.send(fd, enc(`{"id":1,"op":"status"}\n`));
    expect(await read()).toMatchObject({
      id: 1,
      ok: false,
      code: "EPROTO",
      error: "EPROTO: status before hello",
    });
    p.send(fd, enc(`{"id":2,"op":"hello","version":99,"name":"f","role":"vmm"}\n`));
    expect(await read()).toMatchObject({ id: 2, ok: false, code: "EPROTO" });
    p.send(fd, new Uint8Array(MAX_REQUEST_BYTES + 1).fill(0x61));
    p.send(fd, enc("aaaa\n"));
    expect(await read()).toMatchObject({ id: null, ok: false, code: "EMSGSIZE" });
    p.send(fd, enc(`{"id":3,"op":"hello","version":1,"name":"vmm-0","role":"vmm"}\n`));
    expect(await read()).toMatchObject({ id: 3, ok: false, code: "EBUSY" }); // the name is taken
    p.send(fd, enc(`{"id":4,"op":"hello","version":1,"name":"fuzzer","role":"vmm"}\n`));
    expect(await read()).toMatchObject({ id: 4, ok: true });
    p.send(fd, enc(`{"id":5,"op":"create-session","name":"luod"}\n`));
    expect(await read()).toMatchObject({ id: 5, ok: false, code: "EPERM" });
    p.send(fd, enc(`{"id":6,"op":"create-session","name":"vm-0"}\n`));
    expect(await read()).toMatchObject({ id: 6, ok: false, code: "EEXIST" }); // vmm-0's
    p.send(fd, enc(`{"id":7,"op":"create-session"}\n{"id":8,"op":"teleport"}\n{"id":9,"op":"update"}\n`));
    expect(await read()).toMatchObject({ id: 7, ok: false, code: "EINVAL" });
    expect(await read()).toMatchObject({ id: 8, ok: false, code: "EPROTO" });
    expect(await read()).toMatchObject({ id: 9, ok: false, code: "EPERM" });
    expect(replies.length).toBe(13);
    // the other client was never disturbed
    const st = await h.vmms[0]!.client.status();
    expect(st.outgoing.map((o) => o.name)).toEqual(["vm-0"]);
    expect(st.clients.map((c) => c.name)).toEqual(["vmm-0", "fuzzer"]);
  });

  it("luoctl usage", async () => {
    const h = await host(0);
    const p = h.kernel.spawn("luoctl");
    expect((await luoctl(p, ["--help"])).status).toBe(0);
    expect((await luoctl(p, ["reboot"])).status).toBe(2);
    expect((await luoctl(p, ["update", "--barrier-timeout", "x"])).status).toBe(2);
    expect((await luoctl(p, ["status"])).output).toContain("own session: none");
  });
});

describe("before the first client", () => {
  it("luod is the only opener of /dev/liveupdate", async () => {
    const h = await host(0);
    const err = await h.kernel
      .spawn("other")
      .openLiveUpdate()
      .catch((e: unknown) => e);
    expect(isLiveUpdateError(err, "EBUSY")).toBe(true);
    const again = await startLuod(h.kernel).catch((e: unknown) => e);
    expect(isLiveUpdateError(again, "EBUSY")).toBe(true);
  });

  it("malformed options are EINVAL naming the option", async () => {
    const k = await new Machine({ memory: "16 MiB" }).boot({ plugins: [memfd()] });
    const js = <T>(v: unknown): T => v as T;
    const cases: Array<[Promise<unknown>, string]> = [
      [startLuod(js({})), "EINVAL: startLuod: the first argument is not a Kernel"],
      [
        startLuod(k, js({ reclaimTimeoutMs: "soon" })),
        "EINVAL: startLuod: option reclaimTimeoutMs must be a positive integer of milliseconds",
      ],
      [
        startLuod(k, js({ clientLost: "ignore" })),
        'EINVAL: startLuod: option clientLost must be one of "continue", "abort"',
      ],
      [
        startLuod(k, js({ socket: "/x" })),
        'EINVAL: startLuod: unknown option "socket" (known: socketPath, nextPlugins, saveTo, gapNs, barrierTimeoutMs, reclaimTimeoutMs, clientLost, onKexec, log)',
      ],
      [connectLuod(k.spawn("v"), js({ name: 5 })), "EINVAL: connectLuod: option name must be a string"],
      [connectLuod(k.spawn("v"), js(null)), "EINVAL: connectLuod: options must be an object"],
    ];
    for (const [p, message] of cases) {
      const e = await p.catch((x: unknown) => x);
      expect(isLiveUpdateError(e, "EINVAL")).toBe(true);
      expect((e as Error).message).toBe(message);
    }
    await startLuod(k); // nothing was left open by the failures
  });

  it("a client finds no luod (ENOENT), then a dead one (ECONNREFUSED)", async () => {
    const k = await new Machine({ memory: "16 MiB" }).boot({ plugins: [memfd()] });
    const p = k.spawn("vmm");
    const none = await connectLuod(p, { name: "vmm" }).catch((e: unknown) => e);
    expect(isLiveUpdateError(none, "ENOENT")).toBe(true);
    const luod = await startLuod(k);
    luod.exit();
    const dead = await connectLuod(p, { name: "vmm" }).catch((e: unknown) => e);
    expect(isLiveUpdateError(dead, "ECONNREFUSED")).toBe(true);
  });

  it("one update at a time; an answer to no prepare is EINVAL", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const h = await host(1, { vmm: () => ({ onPrepare: () => gate }) });
    const first = h.luod.update();
    await settle(20);
    expect(await h.luod.update()).toMatchObject({ ok: false, stage: "busy", code: "EBUSY" });
    const late = await h.vmms[0]!.client.request({ op: "ready", update: 99 }).catch((e: unknown) => e);
    expect(isLiveUpdateError(late, "EINVAL")).toBe(true);
    const create = await h.vmms[0]!.client.createSession("vm-9").catch((e: unknown) => e);
    expect(isLiveUpdateError(create, "EBUSY")).toBe(true); // no new sessions during an update
    release();
    expect((await first).ok).toBe(true);
    const k2 = (await h.next)!;
    await startLuod(k2);
    await reclaim(k2, 0);
    expect(RAM_BYTES).toBe(ramPattern(0).length);
  });
});

describe("machine time between the kernels", () => {
  it("gapNs lets that much machine time pass between the halt and the next boot", async () => {
    const h = await host(1, { gapNs: 5_000_000 });
    const before = h.machine.timeNs;
    const r = await h.luod.update();
    expect(r.ok).toBe(true);
    const k2 = (await h.next)!;
    expect(k2.machine.timeNs - before).toBe(5_000_000n);
  });

  it("without gapNs no machine time passes", async () => {
    const h = await host(1);
    const before = h.machine.timeNs;
    expect((await h.luod.update()).ok).toBe(true);
    expect((await h.next)!.machine.timeNs).toBe(before);
  });
});

describe("gapNs option", () => {
  it.each([-1, 1.5, "10", -1n])(
    "startLuod rejects gapNs %s with EINVAL and starts nothing",
    async (gapNs) => {
      const k = await new Machine({ memory: "16 MiB" }).boot({ plugins: [memfd()] });
      const err = await startLuod(k, { gapNs } as never).catch((e: unknown) => e);
      expect(isLiveUpdateError(err, "EINVAL")).toBe(true);
      expect((err as Error).message).toContain("gapNs");
      await expect(startLuod(k, { gapNs: 0n })).resolves.toBeDefined();
    },
  );
});
