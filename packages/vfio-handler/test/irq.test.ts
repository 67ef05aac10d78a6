// MSI-X through vfio: SET_IRQS wires vectors to eventfds (the core eventfd), the engine's
// completion signals vector 0, errors vector 1; the eventfd references are vfio's own; IRQs left
// enabled fail the kexec with EINVAL (nothing changed), disabling them lets it through; interrupts
// raised while no kernel runs are lost.
import { describe, expect, it } from "vitest";
import { eventfd, eventfdFile } from "@luo/core";
import { VFIO_CORE } from "@luo/vfio-handler";
import { HIGH_IOVA, bootVfio, code, deviceVm, pattern, preserveVm, vfioPlugins } from "./helpers/boot.js";
import { sameBytes } from "./helpers/tmp.js";

describe("MSI-X with eventfds", () => {
  it("a completed memcpy signals vector 0's eventfd; a fault signals vector 1", async () => {
    const b = await bootVfio();
    const vm = await deviceVm(b.proc);
    const done = eventfd(b.proc, 0);
    const error = eventfd(b.proc, 0);
    await vm.dev.setMsix([done, error]);
    const dev = b.kernel.container.resolve(VFIO_CORE).devices[0]!;
    expect(dev.irqsEnabled).toBe(true);
    expect(dev.fn.msixEnabled).toBe(true);
    const src = pattern(8192, 5);
    b.proc.pwrite(vm.ram, src, 0);
    vm.drv.memcpyStart(HIGH_IOVA, HIGH_IOVA + 65536n, src.length, 1, true);
    b.machine.advanceTime(100_000);
    expect(eventfdFile(b.proc, done).count).toBe(1n);
    expect(sameBytes(b.proc.pread(vm.ram, src.length, 65536), src)).toBe(true);
    vm.drv.memcpyStart(HIGH_IOVA, 0x1000n, 4096, 1, true); // outside the IOAS
    b.machine.advanceTime(100_000);
    expect(vm.drv.failed()).toBe(true);
    expect(vm.drv.faultIova()).toBe(0x1000n);
    expect(eventfdFile(b.proc, error).count).toBe(1n);
    // vfio holds its own references: closing the user's fd does not stop the signals.
    const doneFile = eventfdFile(b.proc, done);
    b.proc.close(done);
    expect(doneFile.isReleased).toBe(false);
    vm.drv.memcpyStart(HIGH_IOVA, HIGH_IOVA + 65536n, 4096, 1, true);
    b.machine.advanceTime(100_000);
    expect(doneFile.count).toBe(2n);
    await vm.dev.disableMsix();
    expect(doneFile.isReleased).toBe(true); // vfio's reference was the last one
    expect(dev.irqsEnabled).toBe(false);
    expect(dev.fn.msixEnabled).toBe(false);
  });

  it("a vector can be unset with -1 and set again", async () => {
    const b = await bootVfio();
    const vm = await deviceVm(b.proc);
    const e = eventfd(b.proc, 0);
    await vm.dev.setMsix([e, e]);
    await vm.dev.setMsix([-1], 1);
    const dev = b.kernel.container.resolve(VFIO_CORE).devices[0]!;
    expect([...dev.msix.keys()]).toEqual([0]);
    await vm.dev.setMsix([e], 1);
    expect([...dev.msix.keys()].sort()).toEqual([0, 1]);
  });

  it("IRQs still enabled fail the kexec with EINVAL and change nothing; disabled, the kexec goes through", async () => {
    const b = await bootVfio();
    const vm = await deviceVm(b.proc);
    const e = eventfd(b.proc, 0);
    await vm.dev.setMsix([e]);
    await preserveVm(b.proc, vm);
    const dev = b.kernel.container.resolve(VFIO_CORE).devices[0]!;
    const command = dev.fn.command;
    expect(await code(b.kernel.kexec({ plugins: vfioPlugins() }))).toBe("EINVAL");
    expect(b.kernel.halted).toBe(false);
    expect(dev.frozen).toBe(false);
    expect(dev.fn.command).toBe(command);
    expect((await vm.dev.info()).liveUpdate?.mode).toBe("reset"); // still usable
    await vm.dev.disableMsix();
    const k2 = await b.kernel.kexec({ plugins: vfioPlugins() });
    expect(k2.halted).toBe(false);
  });

  it("in continuous mode a completion during the kexec gap reaches no kernel and is lost", async () => {
    const b = await bootVfio(undefined, { mode: "continuous" });
    const vm = await deviceVm(b.proc);
    await preserveVm(b.proc, vm);
    const dev = b.kernel.container.resolve(VFIO_CORE).devices[0]!;
    // MSI-X stays enabled in hardware only if userspace left it on; the freeze requires it off,
    // so the engine's "interrupt when done" finds MSI-X disabled and the message is dropped.
    vm.drv.memcpyStart(HIGH_IOVA, HIGH_IOVA + 65536n, 4096, 10, true);
    const lost = dev.fn.counters.interruptsLost;
    await b.kernel.kexec({ plugins: vfioPlugins({ mode: "continuous" }), gapNs: 1_000_000 });
    expect(dev.fn.counters.interruptsLost).toBe(lost + 1);
    expect(dev.fn.counters.interruptsDelivered).toBe(0);
  });
});
