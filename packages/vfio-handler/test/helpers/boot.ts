// Shared setup of the vfio tests: machines with a PCI topology (root ports, a bridge, DMA
// engines), kernels booted with memfd + vfio, and small helpers around the uapi.
import {
  F_ADD_SEALS,
  Machine,
  isLiveUpdateError,
  type Kernel,
  type LiveUpdateDevice,
  type Plugin,
  type Process,
  type SessionHandle,
} from "@luo/core";
import { F_SEAL_GROW, F_SEAL_SEAL, F_SEAL_SHRINK, memfd, memfdCreate } from "@luo/memfd-handler";
import {
  hwptAlloc,
  hwptMarkPreserve,
  ioasAlloc,
  ioasMapFile,
  iommuUnit,
  iommufd,
  iommufdOpen,
  type IommufdLiveUpdateMode,
} from "@luo/iommufd-handler";
import {
  PCI_COMMAND,
  pciBridge,
  dmaEngine,
  pciSegment,
  rootPort,
  vfio,
  VFIO_CONTAINER_PATH,
  VFIO_GROUP_SET_CONTAINER,
  VFIO_SET_IOMMU,
  VFIO_GROUP_GET_DEVICE_FD,
  vfioGroupPath,
  vfioDevice,
  vfioOpen,
  DmaEngineDriver,
  type VfioDevice,
  type PciSegmentDesc,
  type VfioPluginOptions,
} from "@luo/vfio-handler";

/**
 * The default topology: root port 00:01.0 → bridge 01:00.0 → engines 02:00.0 and 02:01.0 (a VF);
 * root port 00:02.0 → engine 03:00.0 (needs an ACS quirk); root port 00:03.0 → engine 04:00.0.
 * vfio numbers the endpoints in that order: vfio0 = 02:00.0, vfio1 = 02:01.0 (VF),
 * vfio2 = 03:00.0 (ACS quirk), vfio3 = 04:00.0.
 */
export const TOPOLOGY: PciSegmentDesc = {
  devices: [
    rootPort({
      device: 1,
      children: [
        pciBridge({ device: 0, children: [dmaEngine({ device: 0 }), dmaEngine({ device: 1, vf: true })] }),
      ],
    }),
    rootPort({ device: 2, children: [dmaEngine({ device: 0, acsQuirk: true })] }),
    rootPort({ device: 3, children: [dmaEngine({ device: 0 })] }),
  ],
};

/** A machine with one IOMMU unit and `TOPOLOGY` (or `desc`). */
export function pciMachine(desc: PciSegmentDesc = TOPOLOGY, memory = "64 MiB"): Machine {
  return new Machine({ memory, hardware: [iommuUnit({ name: "dmar0" }), pciSegment(desc)] });
}

/** A booted kernel and a process in it. */
export interface Booted {
  readonly machine: Machine;
  readonly kernel: Kernel;
  readonly proc: Process;
}

/** The plugins of a vfio kernel: memfd, iommufd (`iommu` behaviour) and vfio (`options`). */
export function vfioPlugins(
  options: VfioPluginOptions = {},
  iommu: IommufdLiveUpdateMode = "restore",
): Plugin[] {
  return [memfd(), iommufd({ liveUpdate: iommu }), vfio(options)];
}

/** Boots memfd + iommufd + vfio (with `options`) on `machine`. */
export async function bootVfio(
  machine: Machine = pciMachine(),
  options: VfioPluginOptions = {},
): Promise<Booted> {
  const kernel = await machine.boot({ plugins: vfioPlugins(options) });
  return { machine, kernel, proc: kernel.spawn("vmm") };
}

/** A 4-byte little-endian `int` argument. */
export function intArg(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setInt32(0, n, true);
  return b;
}

/** A NUL-terminated string argument. */
export function strArg(s: string): Uint8Array {
  return new TextEncoder().encode(`${s}\0`);
}

/** The legacy path: container with IOMMU `type`, group `group` in it, device fd from the group. */
export async function openViaGroup(
  proc: Process,
  group: number,
  address: string,
  type = 1,
): Promise<{ container: number; groupFd: number; device: number }> {
  const container = await proc.open(VFIO_CONTAINER_PATH);
  const groupFd = await proc.open(vfioGroupPath(group));
  await proc.ioctl(groupFd, VFIO_GROUP_SET_CONTAINER, intArg(container));
  await proc.ioctl(container, VFIO_SET_IOMMU, intArg(type));
  const device = await proc.ioctl(groupFd, VFIO_GROUP_GET_DEVICE_FD, strArg(address));
  return { container, groupFd, device };
}

/** `PCI_COMMAND` of the function at `bdf` on segment 0 of `machine`. */
export { PCI_COMMAND };

/** IOVA of the DMA buffer: high in the 48-bit IOVA space. */
export const HIGH_IOVA = 0x4000_0000_0000n;
/** Token the device's HWPT is marked with. */
export const HWPT_TOKEN = 0x77n;

/** A VMM's device setup (see {@link deviceVm}). */
export interface DeviceVm {
  /** The DMA buffer memfd. */
  readonly ram: number;
  /** Its size. */
  readonly size: number;
  /** The iommufd. */
  readonly iommufd: number;
  /** The IOAS. */
  readonly ioas: number;
  /** The HWPT the device is attached to (marked with {@link HWPT_TOKEN} unless `mark` is false). */
  readonly hwpt: number;
  /** The device fd. */
  readonly fd: number;
  /** Its typed view. */
  readonly dev: VfioDevice;
  /** The DMA engine driver. */
  readonly drv: DmaEngineDriver;
}

/**
 * The VMM flow: a sealed DMA-buffer memfd of `size` bytes mapped with IOAS_MAP_FILE at
 * {@link HIGH_IOVA}, vfio cdev `n` bound to the iommufd and attached to a HWPT marked for
 * preservation, the engine's memory decode and bus mastering on.
 */
export async function deviceVm(
  proc: Process,
  {
    n = 0,
    size = 4 << 20,
    mark = true,
    attach = true,
  }: { n?: number; size?: number; mark?: boolean; attach?: boolean } = {},
): Promise<DeviceVm> {
  const ram = memfdCreate(proc, "dma-buffer", { allowSealing: true });
  proc.ftruncate(ram, size);
  proc.fcntl(ram, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_GROW | F_SEAL_SHRINK);
  const iommufd = await iommufdOpen(proc);
  const ioas = ioasAlloc(proc, iommufd);
  ioasMapFile(proc, iommufd, ram, 0, { ioasId: ioas, length: size, iova: HIGH_IOVA });
  const fd = await vfioOpen(proc, n);
  const dev = vfioDevice(proc, fd);
  const devId = await dev.bindIommufd(iommufd);
  const hwpt = hwptAlloc(proc, iommufd, devId, ioas);
  if (attach) await dev.attach(hwpt);
  if (mark) hwptMarkPreserve(proc, iommufd, hwpt, HWPT_TOKEN);
  const drv = new DmaEngineDriver(dev);
  drv.enable();
  return { ram, size, iommufd, ioas, hwpt, fd, dev, drv };
}

/** Preserves the memfd (1), the iommufd (2) and the device (3) of `vm` in a new session `name`. */
export async function preserveVm(proc: Process, vm: DeviceVm, name = "vm"): Promise<SessionHandle> {
  const lu = await liveUpdate(proc);
  const s = await lu.createSession(name);
  await s.preserveFd(vm.ram, 1n);
  await s.preserveFd(vm.iommufd, 2n);
  await s.preserveFd(vm.fd, 3n);
  return s;
}

const opened = new WeakMap<Process, LiveUpdateDevice>();

/** `proc`'s /dev/liveupdate handle, opened on first use (the device is exclusive). */
export async function liveUpdate(proc: Process): Promise<LiveUpdateDevice> {
  let lu = opened.get(proc);
  if (!lu) {
    lu = await proc.openLiveUpdate();
    opened.set(proc, lu);
  }
  return lu;
}

/** A deterministic byte pattern. */
export function pattern(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Runs `fn` and returns the LiveUpdateError code it fails with, or "ok". */
export async function code(fn: Promise<unknown> | (() => unknown)): Promise<string> {
  try {
    await (typeof fn === "function" ? fn() : fn);
  } catch (e) {
    if (isLiveUpdateError(e)) return e.code;
    throw e;
  }
  return "ok";
}
