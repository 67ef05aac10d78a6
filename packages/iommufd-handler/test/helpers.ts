// Shared setup of the iommufd tests: a machine with one IOMMU unit booted with memfd + iommufd, a
// guest-RAM memfd sealed for live update, a test "device" bound and attached the way vfio does,
// and kexec helpers.
import {
  F_ADD_SEALS,
  Machine,
  PAGE_SIZE,
  type Kernel,
  type LiveUpdateDevice,
  type LiveUpdateError,
  type ErrnoCode,
  type Process,
} from "@luo/core";
import { F_SEAL_GROW, F_SEAL_SEAL, F_SEAL_SHRINK, memfd, memfdCreate } from "@luo/memfd-handler";
import {
  hwptAlloc,
  ioasAlloc,
  ioasMapFile,
  iommuFor,
  iommuUnit,
  iommufd,
  iommufdBind,
  iommufdOpen,
  pciRequester,
  type DmaPort,
  type IommufdDevice,
  type IommufdLiveUpdateMode,
  type IommuUnit,
} from "@luo/iommufd-handler";
import { expect } from "vitest";
import { testDevicePlugin } from "./device.js";

/** The test device's requester id. */
export const DEV_RID = pciRequester(0, 1, 0, 0);
/** IOVA guest RAM is mapped at. */
export const RAM_IOVA = 0x1_0000_0000;

/** A booted kernel with one process that has /dev/liveupdate open. */
export interface Booted {
  readonly machine: Machine;
  readonly kernel: Kernel;
  readonly proc: Process;
  readonly dev: LiveUpdateDevice;
}

/** A machine with one IOMMU unit covering every segment. */
export function iommuMachine(memory = "64 MiB"): Machine {
  return new Machine({ memory, hardware: [iommuUnit({ name: "dmar0" })] });
}

/** Boots `machine` with memfd + iommufd in `mode`. */
export async function boot(machine: Machine, mode: IommufdLiveUpdateMode = "restore"): Promise<Booted> {
  const kernel = await machine.boot({
    plugins: [memfd(), iommufd({ liveUpdate: mode }), testDevicePlugin()],
  });
  const proc = kernel.spawn("vmm");
  const dev = await proc.openLiveUpdate();
  return { machine, kernel, proc, dev };
}

/** kexec into the next kernel (with `mode`) and open /dev/liveupdate there. */
export async function kexec(from: Booted, mode: IommufdLiveUpdateMode = "restore"): Promise<Booted> {
  const kernel = (await from.kernel.kexec({
    plugins: [memfd(), iommufd({ liveUpdate: mode }), testDevicePlugin()],
  }))!;
  const proc = kernel.spawn("vmm");
  const dev = await proc.openLiveUpdate();
  return { machine: from.machine, kernel, proc, dev };
}

/** A memfd of `size` bytes filled with `fill(i)`, sealed SEAL|GROW|SHRINK unless told otherwise. */
export function guestRam(proc: Process, size: number, seal = true): number {
  const fd = memfdCreate(proc, "guest-ram", { allowSealing: true });
  proc.pwrite(fd, pattern(size, 1), 0);
  if (seal) proc.fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_GROW | F_SEAL_SHRINK);
  return fd;
}

/** What {@link vmSetup} built. */
export interface Vm {
  readonly iommufd: number;
  readonly ram: number;
  readonly ioas: number;
  readonly hwpt: number;
  readonly device: IommufdDevice;
  readonly port: DmaPort;
  readonly unit: IommuUnit;
}

/** A VM's DMA setup: guest RAM mapped at {@link RAM_IOVA} in a HWPT the device is attached to. */
export async function vmSetup(b: Booted, size = 16 * PAGE_SIZE, seal = true): Promise<Vm> {
  const ram = guestRam(b.proc, size, seal);
  const fd = await iommufdOpen(b.proc);
  const ioas = ioasAlloc(b.proc, fd);
  ioasMapFile(b.proc, fd, ram, 0, { ioasId: ioas, length: size, iova: RAM_IOVA });
  const device = iommufdBind(b.proc, fd, { rid: DEV_RID, name: "0000:01:00.0" });
  const hwpt = hwptAlloc(b.proc, fd, device.id, ioas);
  device.attach(hwpt);
  const unit = iommuFor(b.machine, DEV_RID);
  return { iommufd: fd, ram, ioas, hwpt, device, port: unit.port(DEV_RID), unit };
}

/** A deterministic byte pattern. */
export function pattern(n: number, seed: number): Uint8Array {
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

/** Runs `fn` (sync or async) and expects a LiveUpdateError with `code`. */
export async function rejects(fn: () => unknown, code: ErrnoCode): Promise<LiveUpdateError> {
  let err: unknown;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  expect(err, `expected ${code}`).toBeDefined();
  expect((err as LiveUpdateError).code, (err as Error).message).toBe(code);
  return err as LiveUpdateError;
}
