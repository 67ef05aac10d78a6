/**
 * Userspace helpers: typed wrappers that build the vfio ioctl structs, call `proc.ioctl` and decode
 * the answers — what a VMM's vfio layer does — plus the DMA engine's userspace driver (the model of
 * the vfio selftests' memcpy drivers). Every call goes through the same ioctl, read and write
 * paths as raw user code would, so errors are the kernel's (`EINVAL`, `EIO`, `EBUSY` …).
 *
 * @module
 */
import { LiveUpdateError, type Process } from "@luo/core";
import { DMA_CMD, DMA_REG, DMA_STATUS } from "../pci/dma-engine.js";
import { PCI_COMMAND, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY } from "../pci/regs.js";
import { VfioDeviceFile } from "./device-file.js";
import type { VfioBarMapping } from "./pci-device.js";
import {
  VFIO_DEVICE_ATTACH,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_DETACH,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_GET_IRQ_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_INFO,
  VFIO_DEVICE_INFO_CAP_LIVEUPDATE,
  VFIO_DEVICE_INFO_CAP_LIVEUPDATE_SIZE,
  VFIO_DEVICE_RESET,
  VFIO_DEVICE_SET_IRQS,
  VFIO_INFO_CAP_HEADER,
  VFIO_IRQ_INFO,
  VFIO_IRQ_SET,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_NONE,
  VFIO_LIVEUPDATE_CONTINUOUS,
  VFIO_LIVEUPDATE_RETRIEVED,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_MSIX_IRQ_INDEX,
  VFIO_REGION_INFO,
  vfioRegionOffset,
} from "./uapi.js";
import { vfioCdevPath } from "./core.js";

/** What `VFIO_DEVICE_GET_INFO` reports. */
export interface VfioDeviceInfo {
  /** `VFIO_DEVICE_FLAGS_*`. */
  readonly flags: number;
  /** Number of regions. */
  readonly numRegions: number;
  /** Number of IRQ indexes. */
  readonly numIrqs: number;
  /** The live-update capability: how the device behaves across a kexec. */
  readonly liveUpdate: { readonly mode: "reset" | "continuous"; readonly retrieved: boolean } | undefined;
}

/** What `VFIO_DEVICE_GET_REGION_INFO` reports. */
export interface VfioRegionInfo {
  /** `VFIO_REGION_INFO_FLAG_*`. */
  readonly flags: number;
  /** Region size in bytes (0: absent). */
  readonly size: number;
  /** Offset of the region in the device fd. */
  readonly offset: number;
}

/** What `VFIO_DEVICE_GET_IRQ_INFO` reports. */
export interface VfioIrqInfo {
  /** `VFIO_IRQ_INFO_*`. */
  readonly flags: number;
  /** Number of vectors. */
  readonly count: number;
}

/** Opens vfio cdev number `n` (`/dev/vfio/devices/vfio<n>`) in `proc`; returns the fd. */
export function vfioOpen(proc: Process, n: number): Promise<number> {
  return proc.open(vfioCdevPath(n));
}

/** A vfio device fd of a process, with typed ioctls. */
export class VfioDevice {
  /**
   * @param proc - the process owning the fd
   * @param fd - a vfio device fd
   */
  constructor(
    readonly proc: Process,
    readonly fd: number,
  ) {}

  /** `VFIO_DEVICE_BIND_IOMMUFD`; returns the device id in the iommufd. */
  async bindIommufd(iommufd: number): Promise<number> {
    const arg = new Uint8Array(VFIO_DEVICE_BIND.size);
    const dv = new DataView(arg.buffer);
    dv.setUint32(VFIO_DEVICE_BIND.argsz, VFIO_DEVICE_BIND.size, true);
    dv.setInt32(VFIO_DEVICE_BIND.iommufd, iommufd, true);
    await this.proc.ioctl(this.fd, VFIO_DEVICE_BIND_IOMMUFD, arg);
    return dv.getUint32(VFIO_DEVICE_BIND.outDevid, true);
  }

  /** `VFIO_DEVICE_ATTACH_IOMMUFD_PT`; returns the HWPT id attached. */
  async attach(ptId: number): Promise<number> {
    const arg = new Uint8Array(VFIO_DEVICE_ATTACH.size);
    const dv = new DataView(arg.buffer);
    dv.setUint32(VFIO_DEVICE_ATTACH.argsz, VFIO_DEVICE_ATTACH.size, true);
    dv.setUint32(VFIO_DEVICE_ATTACH.ptId, ptId, true);
    await this.proc.ioctl(this.fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, arg);
    return dv.getUint32(VFIO_DEVICE_ATTACH.ptId, true);
  }

  /** `VFIO_DEVICE_DETACH_IOMMUFD_PT`. */
  async detach(): Promise<void> {
    const arg = new Uint8Array(VFIO_DEVICE_DETACH.size);
    new DataView(arg.buffer).setUint32(0, VFIO_DEVICE_DETACH.size, true);
    await this.proc.ioctl(this.fd, VFIO_DEVICE_DETACH_IOMMUFD_PT, arg);
  }

  /** `VFIO_DEVICE_GET_INFO` with its capability chain. */
  async info(): Promise<VfioDeviceInfo> {
    const size = VFIO_DEVICE_INFO.size + VFIO_DEVICE_INFO_CAP_LIVEUPDATE_SIZE;
    const arg = new Uint8Array(size);
    const dv = new DataView(arg.buffer);
    dv.setUint32(VFIO_DEVICE_INFO.argsz, size, true);
    await this.proc.ioctl(this.fd, VFIO_DEVICE_GET_INFO, arg);
    let liveUpdate: VfioDeviceInfo["liveUpdate"];
    for (let at = dv.getUint32(VFIO_DEVICE_INFO.capOffset, true); at !== 0 && at + 8 <= size;) {
      if (dv.getUint16(at + VFIO_INFO_CAP_HEADER.id, true) === VFIO_DEVICE_INFO_CAP_LIVEUPDATE) {
        const flags = dv.getUint32(at + 8, true);
        liveUpdate = {
          mode: flags & VFIO_LIVEUPDATE_CONTINUOUS ? "continuous" : "reset",
          retrieved: (flags & VFIO_LIVEUPDATE_RETRIEVED) !== 0,
        };
      }
      at = dv.getUint32(at + VFIO_INFO_CAP_HEADER.next, true);
    }
    return {
      flags: dv.getUint32(VFIO_DEVICE_INFO.flags, true),
      numRegions: dv.getUint32(VFIO_DEVICE_INFO.numRegions, true),
      numIrqs: dv.getUint32(VFIO_DEVICE_INFO.numIrqs, true),
      liveUpdate,
    };
  }

  /** `VFIO_DEVICE_GET_REGION_INFO` of region `index`. */
  async regionInfo(index: number): Promise<VfioRegionInfo> {
    const arg = new Uint8Array(VFIO_REGION_INFO.size);
    const dv = new DataView(arg.buffer);
    dv.setUint32(VFIO_REGION_INFO.argsz, VFIO_REGION_INFO.size, true);
    dv.setUint32(VFIO_REGION_INFO.index, index, true);
    await this.proc.ioctl(this.fd, VFIO_DEVICE_GET_REGION_INFO, arg);
    return {
      flags: dv.getUint32(VFIO_REGION_INFO.flags, true),
      size: Number(dv.getBigUint64(VFIO_REGION_INFO.regionSize, true)),
      offset: Number(dv.getBigUint64(VFIO_REGION_INFO.offset, true)),
    };
  }

  /** `VFIO_DEVICE_GET_IRQ_INFO` of IRQ index `index`. */
  async irqInfo(index: number): Promise<VfioIrqInfo> {
    const arg = new Uint8Array(VFIO_IRQ_INFO.size);
    const dv = new DataView(arg.buffer);
    dv.setUint32(VFIO_IRQ_INFO.argsz, VFIO_IRQ_INFO.size, true);
    dv.setUint32(VFIO_IRQ_INFO.index, index, true);
    await this.proc.ioctl(this.fd, VFIO_DEVICE_GET_IRQ_INFO, arg);
    return { flags: dv.getUint32(VFIO_IRQ_INFO.flags, true), count: dv.getUint32(VFIO_IRQ_INFO.count, true) };
  }

  /** `VFIO_DEVICE_SET_IRQS`: MSI-X vectors `start…` trigger `eventfds` (-1 leaves a vector unset). */
  async setMsix(eventfds: readonly number[], start = 0): Promise<void> {
    const size = VFIO_IRQ_SET.size + 4 * eventfds.length;
    const arg = new Uint8Array(size);
    const dv = new DataView(arg.buffer);
    dv.setUint32(VFIO_IRQ_SET.argsz, size, true);
    dv.setUint32(VFIO_IRQ_SET.flags, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, true);
    dv.setUint32(VFIO_IRQ_SET.index, VFIO_PCI_MSIX_IRQ_INDEX, true);
    dv.setUint32(VFIO_IRQ_SET.start, start, true);
    dv.setUint32(VFIO_IRQ_SET.count, eventfds.length, true);
    eventfds.forEach((fd, i) => dv.setInt32(VFIO_IRQ_SET.size + 4 * i, fd, true));
    await this.proc.ioctl(this.fd, VFIO_DEVICE_SET_IRQS, arg);
  }

  /** `VFIO_DEVICE_SET_IRQS` with `DATA_NONE`, count 0: frees every MSI-X vector. */
  async disableMsix(): Promise<void> {
    const arg = new Uint8Array(VFIO_IRQ_SET.size);
    const dv = new DataView(arg.buffer);
    dv.setUint32(VFIO_IRQ_SET.argsz, VFIO_IRQ_SET.size, true);
    dv.setUint32(VFIO_IRQ_SET.flags, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, true);
    dv.setUint32(VFIO_IRQ_SET.index, VFIO_PCI_MSIX_IRQ_INDEX, true);
    await this.proc.ioctl(this.fd, VFIO_DEVICE_SET_IRQS, arg);
  }

  /** `VFIO_DEVICE_RESET`. */
  async reset(): Promise<void> {
    await this.proc.ioctl(this.fd, VFIO_DEVICE_RESET);
  }

  /** Reads `width` bytes of config space (`pread` of the config region). */
  configRead(offset: number, width: 1 | 2 | 4): number {
    const b = this.proc.pread(this.fd, width, vfioRegionOffset(VFIO_PCI_CONFIG_REGION_INDEX) + offset);
    let v = 0;
    for (let i = width - 1; i >= 0; i--) v = v * 256 + b[i]!;
    return v;
  }

  /** Writes `width` bytes of config space (`pwrite` of the config region). */
  configWrite(offset: number, width: 1 | 2 | 4, value: number): void {
    const b = new Uint8Array(width);
    for (let i = 0; i < width; i++) b[i] = (value >>> (8 * i)) & 0xff;
    this.proc.pwrite(this.fd, b, vfioRegionOffset(VFIO_PCI_CONFIG_REGION_INDEX) + offset);
  }

  /** Reads a BAR register (`pread` of the BAR region). */
  barRead(bar: number, offset: number, width: 4 | 8 = 4): bigint {
    const b = this.proc.pread(this.fd, width, vfioRegionOffset(bar) + offset);
    let v = 0n;
    for (let i = width - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
    return v;
  }

  /** Writes a BAR register (`pwrite` of the BAR region). */
  barWrite(bar: number, offset: number, value: bigint | number, width: 4 | 8 = 4): void {
    const b = new Uint8Array(width);
    let v = BigInt(value);
    for (let i = 0; i < width; i++, v >>= 8n) b[i] = Number(v & 0xffn);
    this.proc.pwrite(this.fd, b, vfioRegionOffset(bar) + offset);
  }

  /** `mmap` of BAR `bar`. `EIO` once frozen, `EINVAL` before bind. */
  mmap(bar: number): VfioBarMapping {
    const f = this.proc.file(this.fd);
    if (!(f instanceof VfioDeviceFile))
      throw new LiveUpdateError("EINVAL", `fd ${this.fd} is not a vfio device`);
    return f.mmap(bar);
  }
}

/** The typed view of vfio device fd `fd` of `proc`. */
export function vfioDevice(proc: Process, fd: number): VfioDevice {
  return new VfioDevice(proc, fd);
}

/**
 * Userspace driver of the DMA engine (see `dma-engine.ts` for the registers), driving it through
 * a {@link VfioDevice} only: enable memory decode and bus mastering, program a memcpy, read the
 * status. Waiting is the caller's business: machine time must advance for the engine to work.
 */
export class DmaEngineDriver {
  /** @param dev - the engine's vfio device (bound and attached) */
  constructor(readonly dev: VfioDevice) {}

  /** Turns memory decode and bus mastering on (config space command register). */
  enable(): void {
    const cmd = this.dev.configRead(PCI_COMMAND, 2);
    this.dev.configWrite(PCI_COMMAND, 2, cmd | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
  }

  /** Starts copying `size` bytes from IOVA `src` to IOVA `dst`, `count` times; interrupt when done if `irq`. */
  memcpyStart(src: bigint, dst: bigint, size: number, count = 1, irq = false): void {
    this.dev.barWrite(0, DMA_REG.src, src, 8);
    this.dev.barWrite(0, DMA_REG.dst, dst, 8);
    this.dev.barWrite(0, DMA_REG.count, BigInt(size), 8);
    this.dev.barWrite(0, DMA_REG.descriptors, count);
    this.dev.barWrite(0, DMA_REG.cmd, DMA_CMD.start | (irq ? DMA_CMD.irq : 0));
  }

  /** True while a transfer is in flight. */
  busy(): boolean {
    return (this.dev.barRead(0, DMA_REG.status) & BigInt(DMA_STATUS.busy)) !== 0n;
  }

  /** True when the last transfer failed. */
  failed(): boolean {
    return (this.dev.barRead(0, DMA_REG.status) & BigInt(DMA_STATUS.error)) !== 0n;
  }

  /** Descriptors completed by the current or last transfer. */
  completed(): number {
    return Number(this.dev.barRead(0, DMA_REG.done));
  }

  /** IOVA of the last failed access. */
  faultIova(): bigint {
    return this.dev.barRead(0, DMA_REG.faultIova, 8);
  }
}
