// The vfio-pci handler's rules: preservation order (memfd → iommufd → device), every error code
// with nothing else changed, unpreserve LIFO back to the baseline, freeze refusals, no unfreeze,
// the next kernel's ENODEV, bus numbers, corrupt PCI FLBs as typed panics, and `luo inspect`.
import { describe, expect, it } from "vitest";
import { KernelPanicError, Machine, inspectHandover, type Kernel, type Process } from "@luo/core";
import { memfdFile } from "@luo/memfd-handler";
import { hwptAlloc, hwptRestore, ioasAlloc, ioasMapFile, iommuUnitLoader } from "@luo/iommufd-handler";
import {
  PCI_CORE,
  PCI_DEV_SER,
  PCI_PM_CTRL,
  PCI_SER,
  VFIO_CORE,
  VFIO_PCI_LUO_FH_COMPATIBLE,
  DMA_REG,
  inspectPciFlb,
  inspectVfioRecord,
  dmaEngine,
  pciBridge,
  pciSegmentLoader,
  rootPort,
  vfioCdevPath,
  vfioDevice,
} from "@luo/vfio-handler";
import {
  HIGH_IOVA,
  HWPT_TOKEN,
  bootVfio,
  code,
  deviceVm,
  liveUpdate,
  pciMachine,
  preserveVm,
  vfioPlugins,
  type Booted,
  type DeviceVm,
} from "./helpers/boot.js";
import { tempDir } from "./helpers/tmp.js";

/** What must not change when a preserve fails. */
function snapshot(b: Booted, vm?: DeviceVm) {
  const pci = b.kernel.container.resolve(PCI_CORE);
  return {
    stats: b.machine.stats(),
    pci: pci.outgoing ? { n: pci.outgoing.nrDevices, blocks: pci.outgoing.blocks } : undefined,
    sessions: b.kernel.liveupdate
      .handingOver()
      .sessions.map((s) => ({ name: s.name, files: s.files.length })),
    flbs: b.kernel.liveupdate.handingOver().flbs,
    devices: b.kernel.container.resolve(VFIO_CORE).devices.map((d) => ({
      frozen: d.frozen,
      command: d.fn.command,
      irqs: d.irqsEnabled,
    })),
    owned: vm && b.kernel.container.resolve(VFIO_CORE).devices.map((d) => d.owner !== undefined),
  };
}

async function session(proc: Process, name = "vm") {
  return (await liveUpdate(proc)).createSession(name);
}

describe("preservation order", () => {
  it("device before its iommufd is ENOENT, iommufd before its memfd is ENOENT; memfd → iommufd → device works", async () => {
    const b = await bootVfio();
    const vm = await deviceVm(b.proc);
    const s = await session(b.proc);
    const before = snapshot(b, vm);
    expect(await code(s.preserveFd(vm.fd, 3n))).toBe("ENOENT");
    expect(snapshot(b, vm)).toEqual(before);
    expect(await code(s.preserveFd(vm.iommufd, 2n))).toBe("ENOENT");
    await s.preserveFd(vm.ram, 1n);
    await s.preserveFd(vm.iommufd, 2n);
    await s.preserveFd(vm.fd, 3n);
    const out = b.kernel.container.resolve(PCI_CORE).outgoing!;
    expect(out.nrDevices).toBe(3); // 02:00.0, bridge 01:00.0, root port 00:01.0
    expect([out.refcount(0, 0x0200), out.refcount(0, 0x0100), out.refcount(0, 0x0008)]).toEqual([1, 1, 1]);
    // While preserved the device cannot be detached (iommufd's rule).
    expect(await code(vm.dev.detach())).toBe("EBUSY");
  });

  it("closing the session unpreserves LIFO: devices, bridges, FLBs and pages back at the baseline", async () => {
    const b = await bootVfio();
    const vm = await deviceVm(b.proc);
    const vm3 = await deviceVm(b.proc, { n: 3 });
    const baseline = snapshot(b, vm);
    const lu = await liveUpdate(b.proc);
    const s = await lu.createSession("vm");
    for (const [v, t] of [
      [vm, 1n],
      [vm3, 4n],
    ] as const) {
      await s.preserveFd(v.ram, t);
      await s.preserveFd(v.iommufd, t + 1n);
      await s.preserveFd(v.fd, t + 2n);
    }
    expect(b.kernel.container.resolve(PCI_CORE).outgoing!.nrDevices).toBe(5);
    expect(b.kernel.liveupdate.handingOver().flbs.map((f) => [f.compatible, f.count])).toEqual(
      expect.arrayContaining([
        ["pci", 2n],
        ["iommu-liveupdate", 4n],
      ]),
    );
    const order: string[] = [];
    b.kernel.liveupdate.events.on("file:unpreserved", (e) => order.push(`${e.token}`));
    b.proc.close(s.fd);
    await new Promise((r) => setTimeout(r, 0));
    expect(order).toEqual(["6", "5", "4", "3", "2", "1"]);
    expect(snapshot(b, vm)).toEqual(baseline);
    await vm.dev.detach(); // no longer preserved
    await vm.dev.attach(vm.hwpt);
  });
});

describe("every preserve error leaves everything as it was", () => {
  async function attempt(
    b: Booted,
    vm: DeviceVm,
    expected: string,
    token = 3n,
    s?: Awaited<ReturnType<typeof session>>,
  ) {
    const sess = s ?? (await session(b.proc, `s${token}`));
    if (!s) {
      await sess.preserveFd(vm.ram, 1n);
      await sess.preserveFd(vm.iommufd, 2n);
    }
    const before = snapshot(b, vm);
    expect(await code(sess.preserveFd(vm.fd, token))).toBe(expected);
    expect(snapshot(b, vm)).toEqual(before);
    return sess;
  }

  it("a virtual function is EINVAL", async () => {
    const b = await bootVfio();
    await attempt(b, await deviceVm(b.proc, { n: 1 }), "EINVAL");
  });

  it("a device that needs an ACS quirk is EINVAL", async () => {
    const b = await bootVfio();
    await attempt(b, await deviceVm(b.proc, { n: 2 }), "EINVAL");
  });

  it("a HWPT that is not marked is EINVAL; a device not attached is ENOENT", async () => {
    const b = await bootVfio();
    await attempt(b, await deviceVm(b.proc, { mark: false }), "EINVAL");
    await attempt(b, await deviceVm(b.proc, { n: 3, attach: false, mark: false }), "ENOENT", 4n);
  });

  it("an already preserved device is EBUSY, in the same session and in another", async () => {
    const b = await bootVfio();
    const vm = await deviceVm(b.proc);
    const s = await preserveVm(b.proc, vm);
    const dup = b.proc.dup(vm.fd);
    await attempt(b, { ...vm, fd: dup }, "EBUSY", 9n, s);
    const other = await session(b.proc, "other");
    const before = snapshot(b, vm);
    expect(await code(other.preserveFd(dup, 1n))).toBe("EBUSY");
    expect(snapshot(b, vm)).toEqual(before);
  });

  it("devices behind one bridge share its entry: refcounts count the preserved devices below", async () => {
    const shared = pciMachine({
      devices: [
        rootPort({
          device: 1,
          children: [
            pciBridge({ device: 0, children: [dmaEngine({ device: 0 }), dmaEngine({ device: 1 })] }),
          ],
        }),
      ],
    });
    const b = await bootVfio(shared);
    const a = await deviceVm(b.proc, { n: 0 });
    const c = await deviceVm(b.proc, { n: 1 });
    const lu = await liveUpdate(b.proc);
    const s1 = await lu.createSession("a");
    const s2 = await lu.createSession("c");
    await s1.preserveFd(a.ram, 1n);
    await s1.preserveFd(a.iommufd, 2n);
    await s1.preserveFd(a.fd, 3n);
    await s2.preserveFd(c.ram, 1n);
    await s2.preserveFd(c.iommufd, 2n);
    await s2.preserveFd(c.fd, 3n);
    const out = b.kernel.container.resolve(PCI_CORE).outgoing!;
    expect([
      out.refcount(0, 0x0200),
      out.refcount(0, 0x0208),
      out.refcount(0, 0x0100),
      out.refcount(0, 0x0008),
    ]).toEqual([1, 1, 2, 2]);
    b.proc.close(s1.fd);
    await new Promise((r) => setTimeout(r, 0));
    expect([
      out.refcount(0, 0x0200),
      out.refcount(0, 0x0208),
      out.refcount(0, 0x0100),
      out.refcount(0, 0x0008),
    ]).toEqual([0, 1, 1, 1]);
    expect(out.nrDevices).toBe(3);
  });

  it("the PCI FLB reuses freed slots before it grows", async () => {
    const b = await bootVfio();
    const vm = await deviceVm(b.proc);
    const vm3 = await deviceVm(b.proc, { n: 3 });
    const lu = await liveUpdate(b.proc);
    const preserveIn = async (name: string, v: DeviceVm) => {
      const s = await lu.createSession(name);
      await s.preserveFd(v.ram, 1n);
      await s.preserveFd(v.iommufd, 2n);
      await s.preserveFd(v.fd, 3n);
      return s;
    };
    const s1 = await preserveIn("first", vm);
    await preserveIn("second", vm3);
    const out = b.kernel.container.resolve(PCI_CORE).outgoing!;
    const layout = () => inspectPciFlb(b.machine, out.phys).devices.map((d) => `${d.address}:${d.refcount}`);
    expect(layout()).toEqual([
      "0000:02:00.0:1",
      "0000:01:00.0:1",
      "0000:00:01.0:1",
      "0000:04:00.0:1",
      "0000:00:03.0:1",
    ]);
    b.proc.close(s1.fd); // slots 0..2 become free (refcount 0), the chain keeps its one block
    await new Promise((r) => setTimeout(r, 0));
    expect(layout()).toEqual(["0000:04:00.0:1", "0000:00:03.0:1"]);
    expect(inspectPciFlb(b.machine, out.phys).nrDevices).toBe(2);
    await preserveIn("third", vm); // reuses slots 0..2
    expect(layout()).toEqual([
      "0000:02:00.0:1",
      "0000:01:00.0:1",
      "0000:00:01.0:1",
      "0000:04:00.0:1",
      "0000:00:03.0:1",
    ]);
    expect(out.blocks).toBe(1);
  });
});

describe("freeze", () => {
  it("a device not in D0 fails the kexec with EINVAL and is left as it was", async () => {
    const b = await bootVfio();
    const vm = await deviceVm(b.proc);
    await preserveVm(b.proc, vm);
    const pm = b.kernel.container.resolve(VFIO_CORE).devices[0]!.fn.caps.pm;
    vm.dev.configWrite(pm + PCI_PM_CTRL, 2, 3);
    const before = snapshot(b, vm);
    expect(await code(b.kernel.kexec())).toBe("EINVAL");
    expect(b.kernel.halted).toBe(false);
    expect(snapshot(b, vm)).toEqual(before);
    vm.dev.configWrite(pm + PCI_PM_CTRL, 2, 0);
    expect((await vm.dev.info()).liveUpdate?.mode).toBe("reset");
    const k2 = await b.kernel.kexec();
    expect(k2.halted).toBe(false);
  });

  it("there is no unfreeze: after a failed reboot the frozen device answers EIO until it is closed and set up again", async () => {
    const b = await bootVfio();
    const vm = await deviceVm(b.proc);
    const vm3 = await deviceVm(b.proc, { n: 3 });
    const lu = await liveUpdate(b.proc);
    const s = await lu.createSession("vm");
    for (const [v, t] of [
      [vm, 1n],
      [vm3, 4n],
    ] as const) {
      await s.preserveFd(v.ram, t);
      await s.preserveFd(v.iommufd, t + 1n);
      await s.preserveFd(v.fd, t + 2n);
    }
    const map = vm.dev.mmap(0);
    const pm = b.kernel.container.resolve(VFIO_CORE).devices[3]!.fn.caps.pm;
    vm3.dev.configWrite(pm + PCI_PM_CTRL, 2, 3); // the second device cannot freeze
    expect(await code(b.kernel.kexec())).toBe("EINVAL");
    // The first device froze (reset, bus mastering off) and stays frozen.
    const fn0 = b.kernel.container.resolve(VFIO_CORE).devices[0]!.fn;
    expect(fn0.busMaster).toBe(false);
    expect(await code(vm.dev.info())).toBe("EIO");
    expect(await code(() => vm.dev.barRead(0, DMA_REG.id))).toBe("EIO");
    expect(await code(() => vm.dev.mmap(0))).toBe("EIO");
    expect(await code(() => map.read(DMA_REG.id))).toBe("EFAULT");
    expect(await code(vm.dev.reset())).toBe("EIO");
    expect((await vm3.dev.info()).liveUpdate?.mode).toBe("reset"); // the failed one is untouched
    // Close it (and the session, which holds LUO's reference), then set it up again.
    b.proc.close(vm.fd);
    b.proc.close(s.fd);
    await new Promise((r) => setTimeout(r, 0));
    const fd = await b.proc.open(vfioCdevPath(0));
    const dev = vfioDevice(b.proc, fd);
    await dev.bindIommufd(vm.iommufd);
    expect((await dev.info()).numRegions).toBe(9);
  });
});

describe("the next kernel", () => {
  async function handedOver(): Promise<{ b: Booted; vm: DeviceVm }> {
    const b = await bootVfio();
    const vm = await deviceVm(b.proc);
    await preserveVm(b.proc, vm);
    return { b, vm };
  }

  it("RETRIEVE_FD of a device vfio-pci does not own is ENODEV (sticky); FINISH stays vetoed", async () => {
    const { b } = await handedOver();
    const k2 = await b.kernel.kexec({ plugins: vfioPlugins({ bind: ["0000:04:00.0"] }) });
    const p = k2.spawn("vmm");
    const s = await (await p.openLiveUpdate()).retrieveSession("vm");
    expect(await code(s.retrieveFd(3n))).toBe("ENODEV");
    expect(await code(s.retrieveFd(3n))).toBe("ENODEV");
    expect(await code(s.finish())).toBe("EBUSY");
  });

  it("bus numbers are inherited while preserved devices are unfinished, renumbered otherwise", async () => {
    // Firmware numbered 02:00.0 under a bridge; the next machine gains a root port first in
    // depth-first order, so `pci=assign-busses` would move it.
    const b = await bootVfio();
    const vm = await deviceVm(b.proc);
    await preserveVm(b.proc, vm);
    const k2 = await b.kernel.kexec({ plugins: vfioPlugins({ assignBusses: true }) });
    const pci = k2.container.resolve(PCI_CORE);
    expect(pci.inheritedBusNumbers).toBe(true);
    expect(pci.find(0, 0x0200)?.address).toBe("0000:02:00.0");
    // Without preserved devices, assign-busses renumbers depth first (same result here).
    const k3 = await k2.kexec({ plugins: vfioPlugins({ assignBusses: true }) });
    expect(k3.container.resolve(PCI_CORE).inheritedBusNumbers).toBe(false);
  });

  it("a preserved bridge keeps the bus numbers firmware left even when assign-busses would change them", async () => {
    const b = await bootVfio();
    const vm = await deviceVm(b.proc);
    await preserveVm(b.proc, vm);
    // Someone (firmware, hotplug) moved root port 00:03.0's bus to 0x40 before the kexec.
    const rp3 = b.kernel.container.resolve(PCI_CORE).find(0, 0x18)! as unknown as {
      setBusNumbers(p: number, s: number, sub: number): void;
    };
    rp3.setBusNumbers(0, 0x40, 0x40);
    const k2 = await b.kernel.kexec({ plugins: vfioPlugins({ assignBusses: true }) });
    const pci = k2.container.resolve(PCI_CORE);
    expect(pci.find(0, 0x4000)?.address).toBe("0000:40:00.0");
    expect(pci.find(0, 0x0400)).toBeUndefined();
  });
});

describe("the PCI FLB in the handover", () => {
  async function saved(): Promise<{ machine: Machine; pciSer: bigint; k1: Kernel; path: string }> {
    const b = await bootVfio();
    const vm = await deviceVm(b.proc);
    await preserveVm(b.proc, vm);
    const pciSer = b.kernel.container.resolve(PCI_CORE).outgoing!.phys;
    const path = `${await tempDir()}/h-${Math.random().toString(36).slice(2)}.img`;
    await b.kernel.kexec({ saveTo: path });
    return { machine: b.machine, pciSer, k1: b.kernel, path };
  }

  it("luo inspect shows the vfio-pci record and the PCI FLB; the decoders read them", async () => {
    const { path } = await saved();
    const machine = await Machine.load(path, { hardware: [iommuUnitLoader, pciSegmentLoader] });
    const report = inspectHandover(machine);
    const file = report.sessions[0]!.files.find((f) => f.compatible === VFIO_PCI_LUO_FH_COMPATIBLE)!;
    expect(file.token).toBe(3n);
    expect(inspectVfioRecord(machine, file.data)).toEqual({ domain: 0, bdf: 0x200, address: "0000:02:00.0" });
    const flb = report.flbs.find((f) => f.compatible === "pci")!;
    expect(flb.count).toBe(1n);
    expect(inspectPciFlb(machine, flb.data).devices.map((d) => d.address)).toEqual([
      "0000:02:00.0",
      "0000:01:00.0",
      "0000:00:01.0",
    ]);
  });

  it("a wrong version panics the next kernel's boot", async () => {
    const { machine, pciSer } = await saved();
    machine.writeU32(pciSer + BigInt(PCI_SER.version), 1);
    const e = await machine.boot({ plugins: vfioPlugins() }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(KernelPanicError);
    expect((e as Error).message).toMatch(/PCI: Failed to retrieve incoming FLB data: version 1/);
  });

  it("a bad device chain panics the next kernel's boot", async () => {
    const { machine, pciSer } = await saved();
    machine.writeU64(pciSer + BigInt(PCI_SER.devices), pciSer); // points at pci_ser itself: count 0
    const e = await machine.boot({ plugins: vfioPlugins() }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(KernelPanicError);
    expect((e as Error).message).toMatch(/PCI device chain/);
  });

  it("an nr_devices that does not match the entries panics", async () => {
    const { machine, pciSer } = await saved();
    machine.writeU32(pciSer + BigInt(PCI_SER.nrDevices), 7);
    const e = await machine.boot({ plugins: vfioPlugins() }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(KernelPanicError);
  });

  it("a device never finished panics at the PCI FLB's finish", async () => {
    const { machine, pciSer } = await saved();
    // An extra, consistent entry for a device no vfio file refers to.
    const block = machine.readU64(pciSer + BigInt(PCI_SER.devices));
    const count = Number(machine.readU64(block + 8n));
    const at = block + 16n + BigInt(count * PCI_DEV_SER.size);
    machine.writeU32(at + BigInt(PCI_DEV_SER.domain), 0);
    machine.writeU64(at, 0n);
    machine.writeU32(at + 4n, (1 << 16) | 0x0400); // bdf 04:00.0, refcount 1
    machine.writeU64(block + 8n, BigInt(count + 1));
    machine.writeU32(pciSer + BigInt(PCI_SER.nrDevices), count + 1);
    const k2 = await machine.boot({ plugins: vfioPlugins() });
    const warnings: Error[] = [];
    k2.liveupdate.events.on("warning", (w) => warnings.push(w.error));
    const p = k2.spawn("vmm");
    const s = await (await p.openLiveUpdate()).retrieveSession("vm");
    const ram = await s.retrieveFd(1n);
    const ifd = await s.retrieveFd(2n);
    const dev = vfioDevice(p, await s.retrieveFd(3n));
    const devId = await dev.bindIommufd(ifd);
    hwptRestore(p, ifd, HWPT_TOKEN);
    const ioas = ioasAlloc(p, ifd);
    ioasMapFile(p, ifd, ram, 0, { ioasId: ioas, length: memfdFile(p, ram).size(), iova: HIGH_IOVA });
    await dev.attach(hwptAlloc(p, ifd, devId, ioas));
    await s.finish();
    const panic = warnings.find((w) => w instanceof KernelPanicError);
    expect(panic?.message).toMatch(/Some preserved devices were never finished/);
  });
});
