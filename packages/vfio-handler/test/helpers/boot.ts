// Shared setup of the vfio tests: machines with a PCI topology (root ports, a bridge, DMA
// engines), kernels booted with memfd + vfio, and small helpers around the uapi.
import { Machine, type Kernel, type Plugin, type Process } from "@luo/core";
import { memfd } from "@luo/memfd-handler";
import { iommuUnit, iommufd, type IommufdLiveUpdateMode } from "@luo/iommufd-handler";
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
