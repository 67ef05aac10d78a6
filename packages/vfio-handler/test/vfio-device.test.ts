// vfio in a kernel without iommufd: device nodes, the unbound cdev, the legacy group/container
// path (info, regions, config and BAR access, mmap and its revocation, reset, SET_IRQS errors,
// close), the uapi preservation rules for group, container and group-obtained fds, the PCI
// shutdown at kexec, and PCI hardware in the machine image.
import { describe, expect, it } from "vitest";
import { Machine, isLiveUpdateError } from "@luo/core";
import { memfdCreate } from "@luo/memfd-handler";
import { iommuUnitLoader } from "@luo/iommufd-handler";
import {
  DMA_ENGINE_ID,
  DMA_REG,
  PCI_COMMAND,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_CORE,
  VFIO_CONTAINER_PATH,
  VFIO_CORE,
  VFIO_DEVICE_BIND,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_FLAGS_PCI,
  VFIO_DEVICE_FLAGS_RESET,
  VFIO_DEVICE_SET_IRQS,
  VFIO_GROUP_GET_DEVICE_FD,
  VFIO_GROUP_GET_STATUS,
  VFIO_GROUP_SET_CONTAINER,
  VFIO_IRQ_SET,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_MSIX_IRQ_INDEX,
  VFIO_PCI_NUM_REGIONS,
  VFIO_REGION_INFO_FLAG_MMAP,
  VFIO_SET_IOMMU,
  VFIO_TYPE1_IOMMU,
  VFIO_TYPE1v2_IOMMU,
  DmaEngine,
  pciSegmentLoader,
  vfioCdevPath,
  vfioDevice,
  vfioGroupPath,
  vfioOpen,
} from "@luo/vfio-handler";
import {
  bootVfio,
  deviceVm,
  intArg,
  openViaGroup,
  pciMachine,
  preserveVm,
  strArg,
  vfioPlugins,
} from "./helpers/boot.js";
import { tempDir } from "./helpers/tmp.js";

async function code(p: Promise<unknown> | (() => unknown)): Promise<string> {
  try {
    await (typeof p === "function" ? p() : p);
  } catch (e) {
    if (isLiveUpdateError(e)) return e.code;
    throw e;
  }
  return "ok";
}

function engineAt(machine: Machine, bdf: number): DmaEngine {
  const seg = machine.hardware.list("pci-segment")[0] as unknown as { find(b: number): unknown };
  return seg.find(bdf) as DmaEngine;
}

describe("vfio device nodes", () => {
  it("creates a cdev and a group per endpoint and one container", async () => {
    const { kernel, proc } = await bootVfio();
    const core = kernel.container.resolve(VFIO_CORE);
    expect(core.devices.map((d) => d.fn.address)).toEqual([
      "0000:02:00.0",
      "0000:02:01.0",
      "0000:03:00.0",
      "0000:04:00.0",
    ]);
    for (let n = 0; n < 4; n++) {
      proc.close(await proc.open(vfioCdevPath(n)));
      proc.close(await proc.open(vfioGroupPath(n)));
    }
    expect(await code(proc.open(vfioCdevPath(4)))).toBe("ENOENT");
    proc.close(await proc.open(VFIO_CONTAINER_PATH));
  });

  it("owns only the devices named by `bind`", async () => {
    const { kernel, proc } = await bootVfio(pciMachine(), { bind: ["0000:04:00.0"] });
    expect(kernel.container.resolve(VFIO_CORE).devices.map((d) => d.fn.address)).toEqual(["0000:04:00.0"]);
    expect(await code(proc.open(vfioCdevPath(1)))).toBe("ENOENT");
  });

  it("an unbound cdev refuses everything but BIND_IOMMUFD; bind needs an iommufd fd", async () => {
    const { proc } = await bootVfio();
    const fd = await vfioOpen(proc, 0);
    const dev = vfioDevice(proc, fd);
    expect(await code(dev.info())).toBe("EINVAL");
    expect(await code(() => dev.configRead(0, 4))).toBe("EINVAL");
    expect(await code(() => dev.mmap(0))).toBe("EINVAL");
    const arg = new Uint8Array(VFIO_DEVICE_BIND.size);
    expect(await code(proc.ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, arg))).toBe("EINVAL"); // argsz 0
    expect(await code(proc.ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD))).toBe("EFAULT");
    expect(await code(dev.bindIommufd(99))).toBe("EBADF");
    expect(await code(dev.bindIommufd(fd))).toBe("EINVAL"); // not an iommufd
  });
});

describe("legacy group and container path", () => {
  it("reports info, regions and IRQs and reaches config space and BARs", async () => {
    const { proc } = await bootVfio();
    const { device, groupFd } = await openViaGroup(proc, 0, "0000:02:00.0");
    const status = new Uint8Array(8);
    new DataView(status.buffer).setUint32(0, 8, true);
    await proc.ioctl(groupFd, VFIO_GROUP_GET_STATUS, status);
    expect(new DataView(status.buffer).getUint32(4, true)).toBe(3); // viable | container set
    const dev = vfioDevice(proc, device);
    const info = await dev.info();
    expect(info.flags & (VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET)).toBe(3);
    expect(info.numRegions).toBe(VFIO_PCI_NUM_REGIONS);
    expect(info.liveUpdate).toEqual({ mode: "reset", retrieved: false });
    expect(await dev.regionInfo(0)).toMatchObject({ size: 4096 });
    expect((await dev.regionInfo(0)).flags & VFIO_REGION_INFO_FLAG_MMAP).toBeTruthy();
    expect((await dev.regionInfo(1)).size).toBe(0);
    expect((await dev.regionInfo(VFIO_PCI_CONFIG_REGION_INDEX)).size).toBe(4096);
    expect(await code(dev.regionInfo(9))).toBe("EINVAL");
    expect((await dev.irqInfo(VFIO_PCI_MSIX_IRQ_INDEX)).count).toBe(2);
    expect(await code(dev.irqInfo(5))).toBe("EINVAL");
    expect(dev.configRead(0, 4)).toBe(0x11e91234);
    expect(dev.barRead(0, DMA_REG.id)).toBe(BigInt(DMA_ENGINE_ID));
    dev.barWrite(0, DMA_REG.liveness, 0x55);
    expect(dev.barRead(0, DMA_REG.liveness)).toBe(BigInt(~0x55 >>> 0));
    expect(await code(() => dev.barRead(1, 0))).toBe("EINVAL");
    expect(await code(() => dev.barRead(0, 4096))).toBe("EINVAL");
  });

  it("mmap reaches the BAR until a reset revokes it; the reset clears device state", async () => {
    const { proc } = await bootVfio();
    const { device } = await openViaGroup(proc, 0, "0000:02:00.0");
    const dev = vfioDevice(proc, device);
    const map = dev.mmap(0);
    expect(map.read(DMA_REG.id)).toBe(BigInt(DMA_ENGINE_ID));
    map.write(DMA_REG.src, 0x1000n, 8);
    await dev.reset();
    expect(await code(() => map.read(DMA_REG.id))).toBe("EFAULT");
    expect(dev.barRead(0, DMA_REG.src, 8)).toBe(0n);
    expect(dev.mmap(0).read(DMA_REG.id)).toBe(BigInt(DMA_ENGINE_ID));
  });

  it("BAR access with memory decode off is EIO", async () => {
    const { proc } = await bootVfio();
    const { device } = await openViaGroup(proc, 0, "0000:02:00.0");
    const dev = vfioDevice(proc, device);
    dev.configWrite(PCI_COMMAND, 2, 0);
    expect(await code(() => dev.barRead(0, DMA_REG.id))).toBe("EIO");
  });

  it("refuses GET_DEVICE_FD without an IOMMU, for unknown names and while in use; SET_IOMMU checks its type", async () => {
    const { proc } = await bootVfio();
    const container = await proc.open(VFIO_CONTAINER_PATH);
    const group = await proc.open(vfioGroupPath(3));
    expect(await code(proc.ioctl(container, VFIO_SET_IOMMU, intArg(VFIO_TYPE1_IOMMU)))).toBe("EINVAL");
    await proc.ioctl(group, VFIO_GROUP_SET_CONTAINER, intArg(container));
    expect(await code(proc.ioctl(group, VFIO_GROUP_SET_CONTAINER, intArg(container)))).toBe("EINVAL");
    expect(await code(proc.ioctl(group, VFIO_GROUP_GET_DEVICE_FD, strArg("0000:04:00.0")))).toBe("EINVAL");
    expect(await code(proc.ioctl(container, VFIO_SET_IOMMU, intArg(7)))).toBe("EINVAL");
    await proc.ioctl(container, VFIO_SET_IOMMU, intArg(VFIO_TYPE1v2_IOMMU));
    expect(await code(proc.ioctl(container, VFIO_SET_IOMMU, intArg(VFIO_TYPE1_IOMMU)))).toBe("EBUSY");
    expect(await code(proc.ioctl(group, VFIO_GROUP_GET_DEVICE_FD, strArg("0000:02:00.0")))).toBe("ENODEV");
    expect(await code(proc.ioctl(group, VFIO_GROUP_GET_DEVICE_FD, strArg("0000:04:00.0")))).toBe("ok");
    expect(await code(proc.ioctl(group, VFIO_GROUP_GET_DEVICE_FD, strArg("0000:04:00.0")))).toBe("EBUSY");
    expect(await code(proc.ioctl(group, VFIO_GROUP_GET_DEVICE_FD))).toBe("EFAULT");
    expect(await code(proc.ioctl(group, 0x3b99))).toBe("ENOTTY");
  });

  it("SET_IRQS rejects bad requests and changes nothing", async () => {
    const { kernel, proc } = await bootVfio();
    const { device } = await openViaGroup(proc, 0, "0000:02:00.0");
    const dev = vfioDevice(proc, device);
    const state = kernel.container.resolve(VFIO_CORE).devices[0]!;
    const set = (
      flags: number,
      index: number,
      start: number,
      fds: number[],
      argsz?: number,
    ): Promise<number> => {
      const arg = new Uint8Array(VFIO_IRQ_SET.size + 4 * fds.length);
      const dv = new DataView(arg.buffer);
      dv.setUint32(0, argsz ?? arg.length, true);
      dv.setUint32(4, flags, true);
      dv.setUint32(8, index, true);
      dv.setUint32(12, start, true);
      dv.setUint32(16, fds.length, true);
      fds.forEach((f, i) => dv.setInt32(20 + 4 * i, f, true));
      return proc.ioctl(device, VFIO_DEVICE_SET_IRQS, arg);
    };
    const trig = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    const memfd = memfdCreate(proc, "not-an-eventfd");
    expect(await code(set(VFIO_IRQ_SET_ACTION_TRIGGER, 2, 0, [-1]))).toBe("EINVAL"); // no data type
    expect(await code(set(trig | 1, 2, 0, [-1]))).toBe("EINVAL"); // two data types
    expect(await code(set(trig, 0, 0, [-1]))).toBe("EINVAL"); // INTx
    expect(await code(set(trig, 2, 1, [-1, -1]))).toBe("EINVAL"); // beyond the table
    expect(await code(set(trig, 2, 0, [-1], 20))).toBe("EINVAL"); // argsz too small
    expect(await code(set(trig, 2, 0, [memfd]))).toBe("EINVAL");
    expect(await code(set(trig, 2, 0, [-1, 77]))).toBe("EBADF");
    expect(state.irqsEnabled).toBe(false);
    expect(state.fn.msixEnabled).toBe(false);
    await dev.disableMsix();
  });

  it("closing the last device fd disables the device (bus mastering off, decode off)", async () => {
    const { kernel, proc } = await bootVfio();
    const { device } = await openViaGroup(proc, 0, "0000:02:00.0");
    const dev = vfioDevice(proc, device);
    dev.configWrite(PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    const fn = kernel.container.resolve(VFIO_CORE).devices[0]!.fn;
    expect(fn.busMaster).toBe(true);
    proc.close(device);
    expect(fn.command & (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER)).toBe(0);
  });
});

describe("the uapi rules: only a bound cdev is preservable", () => {
  for (const type of [VFIO_TYPE1_IOMMU, VFIO_TYPE1v2_IOMMU]) {
    it(`group, container and group-obtained device fds are ENOENT (type${type === 1 ? "1" : "1v2"} container)`, async () => {
      const { proc } = await bootVfio();
      const lu = await proc.openLiveUpdate();
      const s = await lu.createSession("vm");
      const { container, groupFd, device } = await openViaGroup(proc, 0, "0000:02:00.0", type);
      expect(await code(s.preserveFd(groupFd, 1n))).toBe("ENOENT");
      expect(await code(s.preserveFd(container, 2n))).toBe("ENOENT");
      expect(await code(s.preserveFd(device, 3n))).toBe("ENOENT");
      const cdev = await vfioOpen(proc, 3);
      expect(await code(s.preserveFd(cdev, 4n))).toBe("ENOENT"); // not bound
      // Nothing changed: the device still works through the group path.
      expect(vfioDevice(proc, device).barRead(0, DMA_REG.id)).toBe(BigInt(DMA_ENGINE_ID));
    });
  }
});

describe("the uapi rules: a bound cdev preserves (native iommufd, both iommufd behaviours)", () => {
  for (const iommu of ["restore", "phase1"] as const) {
    it(`cdev bound to an iommufd: PRESERVE_FD succeeds (iommufd ${iommu})`, async () => {
      const machine = pciMachine();
      const kernel = await machine.boot({ plugins: vfioPlugins({}, iommu) });
      const proc = kernel.spawn("vmm");
      const vm = await deviceVm(proc);
      const s = await preserveVm(proc, vm);
      expect(kernel.liveupdate.handingOver().sessions[0]!.files.map((f) => f.compatible)).toEqual([
        "memfd-v2",
        "iommufd-v1",
        "vfio-pci-v1",
      ]);
      expect(s.name).toBe("vm");
    });
  }
});

describe("PCI across kexec and in the machine image", () => {
  it("the kexec shutdown turns bus mastering off on devices that are not preserved", async () => {
    const machine = pciMachine();
    const { kernel, proc } = await bootVfio(machine);
    const { device } = await openViaGroup(proc, 3, "0000:04:00.0");
    const dev = vfioDevice(proc, device);
    dev.configWrite(PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    const fn = kernel.container.resolve(PCI_CORE).find(0, 0x0400)!;
    expect(fn.busMaster).toBe(true);
    const k2 = (await kernel.kexec())!;
    expect(fn.busMaster).toBe(false);
    expect(fn.memoryEnabled).toBe(true); // decode is left as it was
    expect(k2.container.resolve(PCI_CORE).inheritedBusNumbers).toBe(false);
  });

  it("saves PCI registers and device state in the machine image", async () => {
    const machine = pciMachine();
    const e = engineAt(machine, 0x0400);
    e.configWrite(PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
    e.barWrite(0, DMA_REG.src, 8, 0xabc000n);
    const path = `${await tempDir()}/m.img`;
    await machine.save(path);
    const back = await Machine.load(path, { hardware: [iommuUnitLoader, pciSegmentLoader] });
    const e2 = engineAt(back, 0x0400);
    expect(e2).toBeInstanceOf(DmaEngine);
    expect(e2.command).toBe(PCI_COMMAND_MEMORY);
    expect(e2.barRead(0, DMA_REG.src, 8)).toBe(0xabc000n);
    expect(await code(Machine.load(path))).toBe("ENOEXEC");
  });
});
