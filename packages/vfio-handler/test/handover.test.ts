// Two-kernel live updates of a vfio device: a session with the DMA-buffer memfd, the iommufd and
// the device; in the next kernel the device is reachable only through RETRIEVE_FD, FINISH waits
// for retrieve and bind, a memcpy works through the new binding; in `reset` mode a transfer in
// flight at the kexec is dropped without harm, in `continuous` mode it completes during the gap
// into the same physical pages (only preserved ones).
import { describe, expect, it } from "vitest";
import { memfdFile, memfdPages } from "@luo/memfd-handler";
import {
  hwptAlloc,
  hwptRestore,
  ioasAlloc,
  ioasMapFile,
  iommufdOpen,
  iommuUnitLoader,
  iommuUnits,
} from "@luo/iommufd-handler";
import {
  DmaEngineDriver,
  PCI_CORE,
  VFIO_CORE,
  pciSegmentLoader,
  vfioCdevPath,
  vfioDevice,
  type VfioLiveUpdateMode,
} from "@luo/vfio-handler";
import { Machine, type Process } from "@luo/core";
import {
  HIGH_IOVA,
  HWPT_TOKEN,
  bootVfio,
  code,
  deviceVm,
  openViaGroup,
  pattern,
  pciMachine,
  preserveVm,
  vfioPlugins,
} from "./helpers/boot.js";
import { sameBytes, tempDir } from "./helpers/tmp.js";

const MiB = 1 << 20;

function faults(machine: Machine): number {
  return iommuUnits(machine).reduce((n, u) => n + u.stats().faultCount, 0);
}

/** The next kernel's side: everything up to a working, finished device (see the test names). */
async function nextKernelFlow(proc: Process, size: number, mode: VfioLiveUpdateMode) {
  const lu = await proc.openLiveUpdate();
  const s = await lu.retrieveSession("vm");
  expect(await code(proc.open(vfioCdevPath(0)))).toBe("EBUSY");
  expect(await code(openViaGroup(proc, 0, "0000:02:00.0"))).toBe("EBUSY");
  expect(await code(s.finish())).toBe("EBUSY"); // nothing retrieved
  const ram = await s.retrieveFd(1n);
  const iommufd = await s.retrieveFd(2n);
  const fd = await s.retrieveFd(3n);
  const dev = vfioDevice(proc, fd);
  expect(await code(dev.info())).toBe("EINVAL"); // a fresh cdev: bind first
  expect(await code(s.finish())).toBe("EBUSY"); // retrieved, not bound
  const devId = await dev.bindIommufd(iommufd);
  const info = await dev.info();
  expect(info.liveUpdate).toEqual({ mode, retrieved: true });
  // The VMM moves the device to a fresh IOAS with the retrieved memfd and reclaims the HWPT token.
  hwptRestore(proc, iommufd, HWPT_TOKEN);
  const ioas = ioasAlloc(proc, iommufd);
  ioasMapFile(proc, iommufd, ram, 0, { ioasId: ioas, length: size, iova: HIGH_IOVA });
  await dev.attach(hwptAlloc(proc, iommufd, devId, ioas));
  await s.finish();
  return { s, ram, iommufd, fd, dev, drv: new DmaEngineDriver(dev) };
}

describe.each(["reset", "continuous"] as const)("two kernels, %s mode", (mode) => {
  it("device session survives; FINISH waits for retrieve and bind; a memcpy works after", async () => {
    const size = 4 * MiB;
    const machine = pciMachine();
    const b = await bootVfio(machine, { mode });
    const vm = await deviceVm(b.proc, { size });
    const src = pattern(64 * 1024, 7);
    b.proc.pwrite(vm.ram, src, 0);
    await preserveVm(b.proc, vm);
    const pagesBefore = memfdPages(memfdFile(b.proc, vm.ram));
    // A long transfer: 1000 descriptors of 64 KiB into the second MiB, 10 µs in before the kexec.
    vm.drv.memcpyStart(HIGH_IOVA, HIGH_IOVA + BigInt(MiB), src.length, 1000);
    machine.advanceTime(10_000);
    expect(vm.drv.busy()).toBe(true);
    const k2 = await b.kernel.kexec({ plugins: vfioPlugins({ mode }), gapNs: 100_000_000 });
    const proc = k2.spawn("vmm");
    const fn = k2.container.resolve(VFIO_CORE).devices[0]!.fn;
    expect(k2.container.resolve(PCI_CORE).inheritedBusNumbers).toBe(true);
    const next = await nextKernelFlow(proc, size, mode);
    const dst = proc.pread(next.ram, src.length, MiB);
    if (mode === "reset") {
      // Dropped at freeze (reset, bus mastering off): 10 000 bytes landed, the rest never did.
      expect(fn.counters.resets).toBeGreaterThan(0);
      expect(sameBytes(dst.subarray(0, 10_000), src.subarray(0, 10_000))).toBe(true);
      expect(dst.subarray(10_000).every((x) => x === 0)).toBe(true);
      expect(next.drv.completed()).toBe(0);
    } else {
      // Completed during the gap, through the preserved domain, into the same physical pages.
      expect(sameBytes(dst, src)).toBe(true);
      expect(next.drv.completed()).toBe(1000);
      expect(memfdPages(memfdFile(proc, next.ram))).toEqual(pagesBefore);
    }
    expect(faults(machine)).toBe(0);
    // One memcpy through the new binding.
    next.drv.enable();
    next.drv.memcpyStart(HIGH_IOVA, HIGH_IOVA + BigInt(2 * MiB), src.length);
    machine.advanceTime(1_000_000);
    expect(next.drv.busy()).toBe(false);
    expect(next.drv.failed()).toBe(false);
    expect(sameBytes(proc.pread(next.ram, src.length, 2 * MiB), src)).toBe(true);
    expect(faults(machine)).toBe(0);
    // Finished: the device opens normally again.
    proc.close(next.fd);
    proc.close(await proc.open(vfioCdevPath(0)));
    expect(k2.container.resolve(PCI_CORE).incoming?.nrDevices).toBe(0);
  });
});

describe("a transfer in flight inside a saved machine image", () => {
  it("continuous mode: the engine's registers and its job travel in the image and finish in the loaded machine", async () => {
    const machine = pciMachine();
    const b = await bootVfio(machine, { mode: "continuous" });
    const vm = await deviceVm(b.proc);
    const src = pattern(64 * 1024, 11);
    b.proc.pwrite(vm.ram, src, 0);
    await preserveVm(b.proc, vm);
    vm.drv.memcpyStart(HIGH_IOVA, HIGH_IOVA + BigInt(MiB), src.length, 10);
    machine.advanceTime(5_000);
    const path = `${await tempDir()}/inflight.img`;
    await b.kernel.kexec({ saveTo: path });
    const loaded = await Machine.load(path, { hardware: [iommuUnitLoader, pciSegmentLoader] });
    loaded.advanceTime(10_000_000); // the gap, in the loaded machine
    const k2 = await loaded.boot({ plugins: vfioPlugins({ mode: "continuous" }) });
    const proc = k2.spawn("vmm");
    const next = await nextKernelFlow(proc, 4 * MiB, "continuous");
    expect(next.drv.completed()).toBe(10);
    expect(sameBytes(proc.pread(next.ram, src.length, MiB), src)).toBe(true);
    expect(faults(loaded)).toBe(0);
  });
});

describe("iommufd phase 1 in the next kernel", () => {
  it("the device retrieves but cannot bind to a new iommufd (EPERM); FINISH never succeeds", async () => {
    const machine = pciMachine();
    const b = await bootVfio(machine);
    const vm = await deviceVm(b.proc);
    await preserveVm(b.proc, vm);
    const k2 = await b.kernel.kexec({ plugins: vfioPlugins({}, "phase1") });
    const proc = k2.spawn("vmm");
    const s = await (await proc.openLiveUpdate()).retrieveSession("vm");
    expect(await code(s.retrieveFd(2n))).toBe("EOPNOTSUPP");
    const dev = vfioDevice(proc, await s.retrieveFd(3n));
    const fresh = await iommufdOpen(proc);
    expect(await code(dev.bindIommufd(fresh))).toBe("EPERM");
    expect(await code(dev.info())).toBe("EINVAL"); // still unbound: nothing changed
    expect(await code(s.finish())).toBe("EBUSY");
  });
});

describe("the kernel selftest's two-kernel flow with a 1 GiB DMA buffer", () => {
  it("a 1 GiB memfd mapped at a high IOVA hands over with the device; DMA at its far end works", async () => {
    const size = 1024 * MiB;
    const machine = pciMachine(undefined, "1088 MiB");
    const b = await bootVfio(machine);
    const vm = await deviceVm(b.proc, { size });
    const src = pattern(64 * 1024, 3);
    const far = size - 4 * MiB;
    b.proc.pwrite(vm.ram, src, far);
    await preserveVm(b.proc, vm);
    vm.drv.memcpyStart(HIGH_IOVA + BigInt(far), HIGH_IOVA + BigInt(far + MiB), src.length, 100_000);
    machine.advanceTime(1000);
    const k2 = await b.kernel.kexec({ gapNs: 1_000_000 });
    const proc = k2.spawn("vmm");
    const next = await nextKernelFlow(proc, size, "reset");
    expect(proc.pread(next.ram, 4096, far + MiB + 4096).every((x) => x === 0)).toBe(true); // dropped
    next.drv.enable();
    next.drv.memcpyStart(HIGH_IOVA + BigInt(far), HIGH_IOVA + BigInt(far + 2 * MiB), src.length);
    machine.advanceTime(1_000_000);
    expect(sameBytes(proc.pread(next.ram, src.length, far + 2 * MiB), src)).toBe(true);
    expect(faults(machine)).toBe(0);
  });
});
