/**
 * vfio's use of iommufd (`drivers/vfio/iommufd.c`): a cdev binds its device to an iommufd with
 * the in-kernel `iommufdBind` of `@luo/iommufd-handler` (the device's requester id is its PCI
 * segment and BDF), attaches and detaches it through the bound device, and — from the live-update
 * handler — preserves the device's IOMMU state with `iommufdDevicePreserve`.
 *
 * @module
 */
import type { FlbAccess, Process, SessionDependencies } from "@luo/core";
import {
  iommufdBind,
  iommufdDevicePreserve,
  type IommufdDevice,
  type IommufdDevicePreservation,
} from "@luo/iommufd-handler";
import { LiveUpdateError } from "@luo/core";
import type { PciFunction } from "../pci/function.js";

/** A device bound to an iommufd through a vfio cdev. */
export class VfioIommufdBinding {
  #preservation: IommufdDevicePreservation | undefined;

  /** @param device - the bound iommufd device */
  constructor(readonly device: IommufdDevice) {}

  /** The device id inside the iommufd (`out_devid`). */
  get devId(): number {
    return this.device.id;
  }

  /** The HWPT the device is attached to, if any. */
  get attachedPt(): number | undefined {
    return this.device.hwpt?.id;
  }

  /** Attaches to IOAS or HWPT `ptId`; returns the HWPT id. iommufd's errors (`EBUSY` when preserved, `ENOENT` …). */
  attach(ptId: number): number {
    return this.device.attach(ptId);
  }

  /** Detaches. iommufd's errors (`EBUSY` when preserved). */
  detach(): void {
    this.device.detach();
  }

  /** Unbinds (close path). */
  unbind(): void {
    this.device.unbind();
  }

  /**
   * Preserves the device's IOMMU state (`iommufd_device_preserve`). `ENOENT` not attached or the
   * iommufd not preserved earlier in the session; `EINVAL` HWPT not marked; `EBUSY` already.
   */
  async preserve(session: SessionDependencies, flb: FlbAccess): Promise<void> {
    if (this.#preservation)
      throw new LiveUpdateError("EBUSY", `${this.device.name}: IOMMU state already preserved`);
    this.#preservation = await iommufdDevicePreserve({ session, flb }, this.device);
  }

  /** Undoes {@link VfioIommufdBinding.preserve} (no-op when not preserved). */
  async unpreserve(): Promise<void> {
    const p = this.#preservation;
    this.#preservation = undefined;
    await p?.unpreserve();
  }
}

/**
 * Binds `fn` to the iommufd behind `iommufdFd` of `proc` (`VFIO_DEVICE_BIND_IOMMUFD`). `EBADF`
 * bad fd, `EINVAL` not an iommufd, `EBUSY` another iommufd owns the device, `EPERM` the device's
 * DMA belongs to a preserved iommufd, `ENODEV` no IOMMU unit covers it.
 */
export function vfioIommufdBind(proc: Process, iommufdFd: number, fn: PciFunction): VfioIommufdBinding {
  return new VfioIommufdBinding(
    iommufdBind(proc, iommufdFd, { rid: { segment: fn.domain, bdf: fn.bdf }, name: fn.address }),
  );
}
