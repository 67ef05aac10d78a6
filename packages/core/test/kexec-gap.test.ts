// kexec({ gapNs }): machine time passes between the old kernel's halt and the next boot, and
// hardware sees it (a device keeps working while no kernel runs).
import { describe, expect, it } from "vitest";
import { Machine, isLiveUpdateError, type MachineHardware } from "@luo/core";

class Clock implements MachineHardware {
  readonly kind = "test-clock";
  readonly name = "clock0";
  seen: Array<{ ns: bigint; kernelRunning: boolean }> = [];
  running = (): boolean => false;
  save(): Uint8Array {
    return new Uint8Array(0);
  }
  advance(ns: bigint): void {
    this.seen.push({ ns, kernelRunning: this.running() });
  }
}

describe("kexec gap", () => {
  it("advances machine time while no kernel runs", async () => {
    const clock = new Clock();
    const machine = new Machine({ memory: "16 MiB", hardware: [() => clock] });
    const k1 = await machine.boot();
    clock.running = () => !k1.halted;
    const k2 = (await k1.kexec({ gapNs: 5_000n }))!;
    expect(machine.timeNs).toBe(5_000n);
    expect(clock.seen).toEqual([{ ns: 5_000n, kernelRunning: false }]);
    await k2.kexec({ gapNs: 7 });
    expect(machine.timeNs).toBe(5_007n);
  });

  it("refuses a bad gap, or a gap with saveTo, before anything happens (EINVAL)", async () => {
    const machine = new Machine({ memory: "16 MiB" });
    const k1 = await machine.boot();
    for (const options of [
      { gapNs: -1 },
      { gapNs: 1.5 },
      { gapNs: -1n },
      { gapNs: 1, saveTo: "/nonexistent/x" },
    ]) {
      const e = await k1.kexec(options).catch((err: unknown) => err);
      expect(isLiveUpdateError(e, "EINVAL")).toBe(true);
    }
    expect(k1.halted).toBe(false);
    expect(machine.timeNs).toBe(0n);
  });
});
