import { describe, expect, it } from "vitest";
import { Machine, type Kernel } from "@luo/core";
import { createTestFile, testHandlerPlugin } from "@luo/core/testing";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

describe("live update end to end", () => {
  it("preserves files across kexec and finishes them", async () => {
    const plugin = testHandlerPlugin({ flbs: 2 });
    const machine = new Machine({ memory: "64 MiB" });
    const k1 = await machine.boot({ plugins: [plugin] });
    const p = k1.spawn("vmm");
    const dev = await p.openLiveUpdate();
    const s = await dev.createSession("vm-0");
    const fd = createTestFile(p, "a", enc("hello"));
    await s.preserveFd(fd, 1n);
    p.pwrite(fd, enc(" world"), 5); // written after preserve: captured at reboot
    p.close(fd);
    const empty = await dev.createSession("empty");
    expect(await empty.getName()).toBe("empty");

    const k2 = (await k1.kexec()) as Kernel;
    expect(k1.halted).toBe(true);
    expect(k2.liveupdate.liveupdateNumber).toBe(1n);
    const q = k2.spawn("vmm");
    const dev2 = await q.openLiveUpdate();
    const s2 = await dev2.retrieveSession("vm-0");
    const fd2 = await s2.retrieveFd(1n);
    expect(dec(q.pread(fd2, 100, 0))).toBe("hello world");
    const flbObj = await k2.liveupdate.flbs.getIncoming(plugin.testFlbs[0]!);
    expect(flbObj.magic).toBe(0xfeedf00dcafebee0n);
    await s2.finish();
    expect(plugin.control.calls("flbFinish")).toEqual([1n, 0n]);
    await s2.close();
    await (await dev2.retrieveSession("empty")).close();
    expect(k2.incoming!.unrestoredPages).toBe(0);
  });
});
