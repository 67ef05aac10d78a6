import { describe, expect, it } from "vitest";
import { createTestFile } from "@luo/core/testing";
import { bootTest, dec, enc, kexecOpen } from "./helpers/luo.js";

describe("live update end to end", () => {
  it("preserves files across kexec and finishes them", async () => {
    const { kernel: k1, proc: p, dev, plugin } = await bootTest({ flbs: 2, memory: "64 MiB" });
    const s = await dev.createSession("vm-0");
    const fd = createTestFile(p, "a", enc("hello"));
    await s.preserveFd(fd, 1n);
    p.pwrite(fd, enc(" world"), 5); // written after preserve: captured at reboot
    p.close(fd);
    const empty = await dev.createSession("empty");
    expect(await empty.getName()).toBe("empty");

    // kexecOpen asserts the old kernel halted and opens /dev/liveupdate in the new one.
    const { kernel: k2, proc: q, dev: dev2 } = await kexecOpen(k1);
    expect(k2.liveupdate.liveupdateNumber).toBe(1n);
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
