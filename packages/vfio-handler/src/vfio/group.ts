/**
 * The legacy vfio paths (`drivers/vfio/group.c`, `container.c`): `/dev/vfio/<group>` and the
 * container `/dev/vfio/vfio` with the type1 IOMMU backends. They exist so userspace written for
 * them works as far as the live-update rules care: a group joins a container, the container gets
 * an IOMMU type, and `VFIO_GROUP_GET_DEVICE_FD` hands out a device file. The live-update handler
 * refuses all three kinds of file (`ENOENT`): only a bound cdev can be preserved. DMA mapping
 * through a type1 container (`VFIO_IOMMU_MAP_DMA`) is not modelled (`ENOTTY`).
 *
 * Errors: `GET_DEVICE_FD` before the container has an IOMMU → `EINVAL`, an unknown device name →
 * `ENODEV`, an incoming preserved device not finished yet → `EBUSY`, a device in use → `EBUSY`;
 * `SET_CONTAINER` with something that is not a container → `EINVAL`, twice → `EINVAL`;
 * `SET_IOMMU` with an unknown type → `EINVAL`, without a group → `EINVAL`, twice → `EBUSY`.
 *
 * @module
 */
import { KernelFile, LiveUpdateError, type Process } from "@luo/core";
import type { VfioCore } from "./core.js";
import { VfioDeviceFile } from "./device-file.js";
import type { VfioPciDevice } from "./pci-device.js";
import {
  VFIO_API_VERSION,
  VFIO_CHECK_EXTENSION,
  VFIO_GET_API_VERSION,
  VFIO_GROUP_FLAGS_CONTAINER_SET,
  VFIO_GROUP_FLAGS_VIABLE,
  VFIO_GROUP_GET_DEVICE_FD,
  VFIO_GROUP_GET_STATUS,
  VFIO_GROUP_SET_CONTAINER,
  VFIO_GROUP_STATUS,
  VFIO_GROUP_UNSET_CONTAINER,
  VFIO_SET_IOMMU,
  VFIO_TYPE1_IOMMU,
  VFIO_TYPE1v2_IOMMU,
} from "./uapi.js";
import { argszView, userInt, userString } from "./user-memory.js";

/** A container file (`/dev/vfio/vfio`). */
export class VfioContainerFile extends KernelFile {
  /** Groups in the container. */
  readonly groups = new Set<VfioGroupFile>();
  /** IOMMU type set with `VFIO_SET_IOMMU` (0: none). */
  iommuType = 0;

  get description(): string {
    return "vfio container";
  }

  override ioctl(_proc: Process, cmd: number, arg: Uint8Array | undefined): Promise<number> {
    try {
      return Promise.resolve(this.#ioctl(cmd, arg));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  #ioctl(cmd: number, arg: Uint8Array | undefined): number {
    switch (cmd) {
      case VFIO_GET_API_VERSION:
        return VFIO_API_VERSION;
      case VFIO_CHECK_EXTENSION: {
        const ext = userInt(arg, "VFIO_CHECK_EXTENSION");
        return ext === VFIO_TYPE1_IOMMU || ext === VFIO_TYPE1v2_IOMMU ? 1 : 0;
      }
      case VFIO_SET_IOMMU: {
        const type = userInt(arg, "VFIO_SET_IOMMU");
        if (type !== VFIO_TYPE1_IOMMU && type !== VFIO_TYPE1v2_IOMMU) {
          throw new LiveUpdateError("EINVAL", `VFIO_SET_IOMMU: IOMMU type ${type} is not supported`);
        }
        if (this.groups.size === 0)
          throw new LiveUpdateError("EINVAL", "VFIO_SET_IOMMU: the container has no group");
        if (this.iommuType !== 0)
          throw new LiveUpdateError("EBUSY", "VFIO_SET_IOMMU: the container already has an IOMMU");
        this.iommuType = type;
        return 0;
      }
      default:
        throw new LiveUpdateError("ENOTTY", `vfio container has no ioctl 0x${cmd.toString(16)}`);
    }
  }

  protected override release(): void {
    for (const g of this.groups) g.container = undefined;
    this.groups.clear();
  }
}

/** A group file (`/dev/vfio/<group>`): one device per group in this model. */
export class VfioGroupFile extends KernelFile {
  /** The container the group is in. */
  container: VfioContainerFile | undefined;

  /**
   * @param device - the group's device
   * @param core - the kernel's vfio
   */
  constructor(
    readonly device: VfioPciDevice,
    private readonly core: VfioCore,
  ) {
    super();
  }

  get description(): string {
    return `vfio group ${this.device.group}`;
  }

  override ioctl(proc: Process, cmd: number, arg: Uint8Array | undefined): Promise<number> {
    try {
      return Promise.resolve(this.#ioctl(proc, cmd, arg));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  #ioctl(proc: Process, cmd: number, arg: Uint8Array | undefined): number {
    switch (cmd) {
      case VFIO_GROUP_GET_STATUS: {
        const { dv } = argszView(arg, VFIO_GROUP_STATUS.size, "VFIO_GROUP_GET_STATUS");
        dv.setUint32(
          VFIO_GROUP_STATUS.flags,
          VFIO_GROUP_FLAGS_VIABLE | (this.container ? VFIO_GROUP_FLAGS_CONTAINER_SET : 0),
          true,
        );
        return 0;
      }
      case VFIO_GROUP_SET_CONTAINER: {
        const fd = userInt(arg, "VFIO_GROUP_SET_CONTAINER");
        const c = proc.file(fd);
        if (!(c instanceof VfioContainerFile))
          throw new LiveUpdateError("EINVAL", `fd ${fd} is not a vfio container`);
        if (this.container)
          throw new LiveUpdateError("EINVAL", `${this.description} is already in a container`);
        this.container = c;
        c.groups.add(this);
        return 0;
      }
      case VFIO_GROUP_UNSET_CONTAINER:
        if (!this.container) throw new LiveUpdateError("EINVAL", `${this.description} is not in a container`);
        this.container.groups.delete(this);
        this.container = undefined;
        return 0;
      case VFIO_GROUP_GET_DEVICE_FD:
        return proc.installFile(this.#getDevice(userString(arg, "VFIO_GROUP_GET_DEVICE_FD")));
      default:
        throw new LiveUpdateError("ENOTTY", `${this.description} has no ioctl 0x${cmd.toString(16)}`);
    }
  }

  #getDevice(name: string): VfioDeviceFile {
    const what = `VFIO_GROUP_GET_DEVICE_FD ${JSON.stringify(name)} on ${this.description}`;
    if (!this.container?.iommuType)
      throw new LiveUpdateError("EINVAL", `${what}: the group's container has no IOMMU`);
    const dev = this.device;
    if (dev.fn.address !== name) throw new LiveUpdateError("ENODEV", `${what}: no such device in the group`);
    if (this.core.pci.isIncoming(dev.fn)) {
      throw new LiveUpdateError(
        "EBUSY",
        `${what}: the device was preserved by the previous kernel; retrieve it from its live-update session`,
      );
    }
    if (dev.owner) throw new LiveUpdateError("EBUSY", `${what}: the device is in use`);
    const file = new VfioDeviceFile(dev, "group", this.core);
    dev.owner = file;
    dev.enable(false);
    return file;
  }
}
