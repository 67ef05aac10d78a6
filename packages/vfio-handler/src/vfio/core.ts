/**
 * vfio in one kernel (`drivers/vfio/vfio_main.c`, `device_cdev.c`): which PCI functions vfio-pci
 * owns, and their device nodes — `/dev/vfio/devices/vfio<N>` per device, `/dev/vfio/<N>` per
 * IOMMU group (one device per group here) and the container `/dev/vfio/vfio`.
 *
 * vfio-pci takes every enumerated endpoint, or those named by the plugin's `bind` option (the
 * model of `driver_override`: a device vfio does not own cannot be retrieved after a live update,
 * `ENODEV`). Device numbers follow enumeration order. Opening the cdev of an incoming preserved
 * device that is not finished yet is `EBUSY`: the only way in is `LIVEUPDATE_SESSION_RETRIEVE_FD`
 * (a normal open would initialise the device without its preserved state).
 *
 * @module
 */
import type { InjectionToken } from "tsyringe";
import { LiveUpdateError } from "@luo/core";
import type { PciCore } from "../kernel/pci-core.js";
import { VfioDeviceFile } from "./device-file.js";
import { VfioContainerFile, VfioGroupFile } from "./group.js";
import { VfioPciDevice, type VfioLiveUpdateMode } from "./pci-device.js";

/** DI token of the kernel's {@link VfioCore}. */
export const VFIO_CORE: InjectionToken<VfioCore> = Symbol.for("luo.vfio.VfioCore");

/** Path of the vfio container. */
export const VFIO_CONTAINER_PATH = "/dev/vfio/vfio";
/** Path of vfio cdev number `n`. */
export const vfioCdevPath = (n: number): string => `/dev/vfio/devices/vfio${n}`;
/** Path of vfio group number `n`. */
export const vfioGroupPath = (n: number): string => `/dev/vfio/${n}`;

/** vfio of one kernel. */
export class VfioCore {
  /** Devices vfio-pci owns, by cdev number. */
  readonly devices: readonly VfioPciDevice[];

  /**
   * @param pci - the kernel's PCI core (already enumerated)
   * @param mode - device behaviour across a live update
   * @param bind - addresses (`SSSS:BB:DD.F`) vfio-pci owns; undefined: every endpoint
   */
  constructor(
    readonly pci: PciCore,
    readonly mode: VfioLiveUpdateMode,
    bind: readonly string[] | undefined,
  ) {
    const owned = pci.functions().filter((f) => f.kind === "endpoint" && (!bind || bind.includes(f.address)));
    this.devices = owned.map((fn, i) => new VfioPciDevice(fn, i, i, pci, mode));
  }

  /** The device vfio owns at (domain, bdf), if any. */
  find(domain: number, bdf: number): VfioPciDevice | undefined {
    return this.devices.find((d) => d.fn.domain === domain && d.fn.bdf === bdf);
  }

  /** Registers the device nodes with `registerDevice`. */
  registerNodes(
    registerDevice: (path: string, open: () => VfioDeviceFile | VfioGroupFile | VfioContainerFile) => void,
  ): void {
    registerDevice(VFIO_CONTAINER_PATH, () => new VfioContainerFile());
    for (const d of this.devices) {
      registerDevice(vfioCdevPath(d.index), () => this.openCdev(d));
      registerDevice(vfioGroupPath(d.group), () => new VfioGroupFile(d, this));
    }
  }

  /** `open("/dev/vfio/devices/vfioN")`. `EBUSY` for an unfinished incoming preserved device. */
  openCdev(d: VfioPciDevice): VfioDeviceFile {
    if (this.pci.isIncoming(d.fn)) {
      throw new LiveUpdateError(
        "EBUSY",
        `${d.name} was preserved by the previous kernel; retrieve it from its live-update session`,
      );
    }
    return new VfioDeviceFile(d, "cdev", this);
  }

  /** A fresh cdev file for a retrieved device (the live-update retrieve path). */
  openRetrieved(d: VfioPciDevice): VfioDeviceFile {
    return new VfioDeviceFile(d, "cdev", this, true);
  }
}
