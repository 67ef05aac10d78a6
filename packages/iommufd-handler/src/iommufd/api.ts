/**
 * The iommufd calls a process makes (the convenient face of the raw ioctls in `uapi.ts`) and the
 * in-kernel API other drivers use: binding a device to an iommufd (what vfio's
 * `VFIO_DEVICE_BIND_IOMMUFD` calls) and preserving a bound device's IOMMU state for a live update
 * (what vfio's preserve calls), so that no package reaches into another's internals.
 *
 * Every call fails only with `LiveUpdateError`: `EBADF` (fd not open), `EINVAL` (not an iommufd,
 * bad arguments), `ESHUTDOWN` (the kernel was replaced), plus each operation's own errors
 * (see `IommufdFile`).
 *
 * @module
 */
import { LiveUpdateError, type FlbAccess, type Process, type SessionDependencies } from "@luo/core";
import { memfdFile, type MemfdMapping } from "@luo/memfd-handler";
import { iommuLiveUpdateFlb, type IommuFlbOutgoing } from "../iommu/flb.js";
import { IOMMU_READ, IOMMU_WRITE } from "../iommu/pgtable.js";
import { requesterKey, type RequesterId } from "../iommu/unit.js";
import { iommufdFile, type IommufdDevice } from "./ictx.js";
import { IOMMUFD_DEVICE_PATH } from "../plugin.js";

/** Where and how to map (common to {@link ioasMapFile} and {@link ioasMapUser}). */
export interface IoasMapOptions {
  /** The IOAS. */
  readonly ioasId: number;
  /** Bytes (a multiple of 4 KiB). */
  readonly length: number;
  /** IOVA to map at (`IOMMU_IOAS_MAP_FIXED_IOVA`); default: the kernel picks. */
  readonly iova?: bigint | number;
  /** The device may read (default true). */
  readonly read?: boolean;
  /** The device may write (default true). */
  readonly write?: boolean;
}

function protOf(o: IoasMapOptions): number {
  return (o.read === false ? 0 : IOMMU_READ) | (o.write === false ? 0 : IOMMU_WRITE);
}

function num(v: bigint | number | undefined, what: string): number | undefined {
  if (v === undefined) return undefined;
  const n = typeof v === "bigint" ? Number(v) : v;
  if (!Number.isSafeInteger(n) || n < 0)
    throw new LiveUpdateError("EINVAL", `${what}: bad value ${String(v)}`);
  return n;
}

/** `open("/dev/iommu")`: a new iommufd in `proc`; returns the fd. `ENOENT` without the plugin. */
export function iommufdOpen(proc: Process): Promise<number> {
  return proc.open(IOMMUFD_DEVICE_PATH);
}

/** `IOMMU_IOAS_ALLOC`: returns the new IOAS id. */
export function ioasAlloc(proc: Process, fd: number): number {
  return iommufdFile(proc, fd).allocIoas();
}

/**
 * `IOMMU_IOAS_MAP_FILE`: maps `[start, start + length)` of the memfd `memfd` (an fd of `proc`);
 * returns the IOVA. The memfd's seals at this moment are what live update checks later.
 */
export function ioasMapFile(
  proc: Process,
  fd: number,
  memfd: number,
  start: number,
  options: IoasMapOptions,
): number {
  const ictx = iommufdFile(proc, fd);
  const file = memfdFile(proc, memfd);
  return ictx.mapFile(
    options.ioasId,
    file,
    start,
    options.length,
    num(options.iova, "IOAS_MAP_FILE iova"),
    protOf(options),
    proc,
  );
}

/**
 * `IOMMU_IOAS_MAP` of process memory, named by a shared memfd mapping and an offset into it
 * (the model has no address space); returns the IOVA. Such a mapping cannot be preserved.
 */
export function ioasMapUser(
  proc: Process,
  fd: number,
  mapping: MemfdMapping,
  offset: number,
  options: IoasMapOptions,
): number {
  return iommufdFile(proc, fd).mapUser(
    options.ioasId,
    mapping,
    offset,
    options.length,
    num(options.iova, "IOAS_MAP iova"),
    protOf(options),
    proc,
  );
}

/** `IOMMU_IOAS_UNMAP`: unmaps whole mappings inside the range; returns the bytes unmapped. */
export function ioasUnmap(
  proc: Process,
  fd: number,
  ioasId: number,
  iova: bigint | number,
  length: number,
): number {
  return iommufdFile(proc, fd).unmap(
    ioasId,
    num(iova, "IOAS_UNMAP iova")!,
    num(length, "IOAS_UNMAP length")!,
  );
}

/** `IOMMU_IOAS_IOVA_RANGES`. */
export function ioasIovaRanges(
  proc: Process,
  fd: number,
  ioasId: number,
): { ranges: Array<{ start: bigint; last: bigint }>; alignment: bigint } {
  return iommufdFile(proc, fd).iovaRanges(ioasId);
}

/** `IOMMU_IOAS_CHANGE_PROCESS`: the caller takes over the pinned-page accounting. */
export function ioasChangeProcess(proc: Process, fd: number): void {
  iommufdFile(proc, fd).changeProcess(proc);
}

/** `IOMMU_HWPT_ALLOC`: a paging HWPT for bound device `devId` on IOAS `ioasId`; returns its id. */
export function hwptAlloc(proc: Process, fd: number, devId: number, ioasId: number): number {
  return iommufdFile(proc, fd).allocHwpt(devId, ioasId);
}

/** `IOMMU_DESTROY`. */
export function iommufdDestroy(proc: Process, fd: number, id: number): void {
  iommufdFile(proc, fd).destroy(id);
}

/** `IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE`: opts a HWPT in with a token (no unmark). */
export function hwptMarkPreserve(proc: Process, fd: number, hwptId: number, token: bigint | number): void {
  const t = typeof token === "number" && Number.isSafeInteger(token) && token >= 0 ? BigInt(token) : token;
  iommufdFile(proc, fd).markPreserve(hwptId, t as bigint);
}

/** `IOMMU_HWPT_LIVEUPDATE_RESTORE` (restore behaviour): the preserved HWPT of `token`; returns its id. */
export function hwptRestore(proc: Process, fd: number, token: bigint | number): number {
  const t = typeof token === "number" && Number.isSafeInteger(token) && token >= 0 ? BigInt(token) : token;
  if (typeof t !== "bigint")
    throw new LiveUpdateError("EINVAL", `HWPT_LIVEUPDATE_RESTORE: bad token ${String(token)}`);
  return iommufdFile(proc, fd).restoreHwpt(t);
}

/** What {@link iommufdLiveUpdateInfo} answers. */
export interface IommufdLiveUpdateInfo {
  /** True when this kernel restores preserved HWPTs (restore behaviour); false for phase 1. */
  readonly restoresHwpts: boolean;
}

/** The capability query a VMM asks before relying on HWPT restore (`IOMMU_LIVEUPDATE_GET_INFO`). */
export function iommufdLiveUpdateInfo(proc: Process, fd: number): IommufdLiveUpdateInfo {
  return { restoresHwpts: iommufdFile(proc, fd).restoresHwpts };
}

/** A device as a driver describes it to {@link iommufdBind}. */
export interface IommufdClientDevice {
  /** Its PCI requester id. */
  readonly rid: RequesterId;
  /** Its name in messages, e.g. `"0000:01:00.0"`. */
  readonly name: string;
}

/**
 * In-kernel: binds `device` to the iommufd behind `fd` of `proc` (`VFIO_DEVICE_BIND_IOMMUFD`) and
 * claims its DMA ownership; returns the bound device (its `id` is the uAPI `dev_id`; attach it
 * with `attach(ptId)`, detach, unbind). `EBUSY` when another iommufd owns the device; `EPERM`
 * when the device was preserved by the previous kernel and this is not its retrieved iommufd;
 * `ENODEV` when no IOMMU unit covers it.
 */
export function iommufdBind(proc: Process, fd: number, device: IommufdClientDevice): IommufdDevice {
  const ictx = iommufdFile(proc, fd);
  requesterKey(device?.rid);
  if (typeof device.name !== "string")
    throw new LiveUpdateError("EINVAL", "iommufdBind: device name is not a string");
  return ictx.bindDevice(device.rid, device.name);
}

/** What a device handler passes to {@link iommufdDevicePreserve} (from its `PreserveArgs`). */
export interface IommufdDevicePreserveArgs {
  /** The session's dependency API. */
  readonly session: SessionDependencies;
  /** FLB access. */
  readonly flb: FlbAccess;
}

/** A preserved device's IOMMU state; `unpreserve` undoes it (the handler's rollback/unpreserve). */
export interface IommufdDevicePreservation {
  /** Address of the device's `iommu_device_ser`. */
  readonly record: bigint;
  /** Undoes the preservation (record DELETED; attach/detach allowed again). */
  unpreserve(): Promise<void>;
}

/**
 * In-kernel (`iommufd_device_preserve`): preserves a bound device's IOMMU state in the IOMMU FLB,
 * from a device handler's preserve. `ENOENT` when the device is not attached or its iommufd is
 * not preserved earlier in the same session; `EINVAL` when its HWPT is not marked for
 * preservation (or not preserved); `EOPNOTSUPP` for a unit without live-update support; `EBUSY`
 * when already preserved. Afterwards attach/detach of the device is `EBUSY`. Link the IOMMU FLB
 * (`iommuLiveUpdateFlb`) to the device handler so the state lives as long as the device file.
 */
export async function iommufdDevicePreserve(
  args: IommufdDevicePreserveArgs,
  dev: IommufdDevice,
): Promise<IommufdDevicePreservation> {
  const hwpt = dev.hwpt;
  if (!dev.bound || !hwpt) throw new LiveUpdateError("ENOENT", `${dev.name} is not attached to a HWPT`);
  if (hwpt.token === undefined)
    throw new LiveUpdateError("EINVAL", `${dev.name}: HWPT ${hwpt.id} is not marked for preservation`);
  try {
    args.session.tokenOf(dev.ictx);
  } catch (e) {
    throw new LiveUpdateError(
      "ENOENT",
      `${dev.name}: its iommufd is not preserved earlier in session "${args.session.sessionName}"`,
      { cause: e },
    );
  }
  const flb = (await args.flb.getOutgoing(iommuLiveUpdateFlb)) as IommuFlbOutgoing | undefined;
  if (!flb) throw new LiveUpdateError("EINVAL", "the IOMMU FLB is not preserved");
  const record = dev.ictx.core.preserveDevice(dev.rid, dev.ictx, flb);
  return {
    record,
    unpreserve: async () => {
      const f = (await args.flb.getOutgoing(iommuLiveUpdateFlb)) as IommuFlbOutgoing | undefined;
      if (f) dev.ictx.core.unpreserveDevice(dev.rid, f);
    },
  };
}
