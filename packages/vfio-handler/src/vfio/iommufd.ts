/**
 * What vfio needs from iommufd for one device (the in-kernel iommufd device API that
 * `vfio_iommufd_physical_bind` and friends call), kept behind one interface so the device file
 * does not depend on iommufd's internals.
 *
 * @module
 */
import type { Process, SessionDependencies } from "@luo/core";
import type { PciFunction } from "../pci/function.js";

/** A device bound to an iommufd (`struct iommufd_device`). */
export interface VfioIommufdBinding {
  /** The device id inside the iommufd (`out_devid`). */
  readonly devId: number;
  /** The page table the device is attached to, if any. */
  readonly attachedPt: number | undefined;
  /**
   * Attaches the device to IOAS or HWPT `ptId`; returns the HWPT id actually used. iommufd's
   * errors (`ENOENT` unknown id, `EBUSY` a preserved device, …).
   */
  attach(ptId: number): number;
  /** Detaches the device. iommufd's errors (`EBUSY` for a preserved device). */
  detach(): void;
  /** Unbinds the device from the iommufd (close path; never fails). */
  unbind(): void;
  /**
   * LUO: preserves the device's iommufd state in the session being preserved
   * (`iommufd_device_preserve`). `ENOENT` not attached or the iommufd not preserved in this
   * session before the device; `EINVAL` the attached HWPT is not marked for preservation.
   */
  preserve(session: SessionDependencies): void | Promise<void>;
  /** Undoes {@link VfioIommufdBinding.preserve}. */
  unpreserve(): void;
}

/** Binds devices to iommufds (`VFIO_DEVICE_BIND_IOMMUFD`). */
export interface VfioIommufdBinder {
  /**
   * Binds `fn` to the iommufd behind `iommufdFd` of `proc`. `EBADF` bad fd, `EINVAL` not an
   * iommufd, `EPERM` when the device's DMA is owned by a preserved iommufd.
   */
  bind(proc: Process, iommufdFd: number, fn: PciFunction): VfioIommufdBinding;
}
