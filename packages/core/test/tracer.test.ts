// The Chrome trace-event tracer follows a live update across two kernels.
import { describe, expect, it } from "vitest";
import { LiveUpdateTracer, Machine } from "@luo/core";
import { createTestFile, testHandlerPlugin } from "@luo/core/testing";

describe("LiveUpdateTracer", () => {
  it("records a reboot slice and instant events for both kernels", async () => {
    const plugins = [testHandlerPlugin({ flbs: 1 })];
    const k1 = await new Machine({ memory: "16 MiB" }).boot({ plugins });
    const tracer = new LiveUpdateTracer().attach(k1.liveupdate.events, k1.name);
    const p = k1.spawn("vmm");
    const s = await (await p.openLiveUpdate()).createSession("vm");
    await s.preserveFd(createTestFile(p, "f"), 5n);
    const k2 = (await k1.kexec())!;
    tracer.attach(k2.liveupdate.events, k2.name);
    const q = k2.spawn("vmm");
    const s2 = await (await q.openLiveUpdate()).retrieveSession("vm");
    await s2.retrieveFd(5n);
    await s2.finish();
    tracer.stop();
    const trace = JSON.parse(JSON.stringify(tracer));
    const names = trace.traceEvents.map(
      (e: { name: string; ph: string; pid: number }) => `${e.pid}:${e.ph}:${e.name}`,
    );
    expect(names).toEqual([
      "1:M:process_name",
      "1:i:session:created",
      "1:i:flb:preserved",
      "1:i:file:preserved",
      "1:B:reboot",
      "1:i:file:frozen",
      "1:E:reboot",
      "2:M:process_name",
      "2:i:boot:handover",
      "2:i:session:retrieved",
      "2:i:file:retrieved",
      "2:i:flb:retrieved",
      "2:i:flb:finished",
      "2:i:file:finished",
      "2:i:session:finished",
    ]);
    const timed = trace.traceEvents.filter((e: { ph: string }) => e.ph !== "M");
    for (let i = 1; i < timed.length; i++) expect(timed[i].ts).toBeGreaterThanOrEqual(timed[i - 1].ts);
    expect(timed.find((e: { name: string }) => e.name === "file:preserved").args).toMatchObject({
      token: "5",
    });
  });
});
