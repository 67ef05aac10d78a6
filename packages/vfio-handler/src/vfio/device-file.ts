/**
 * A vfio device file (`struct vfio_device_file`): what `open("/dev/vfio/devices/vfioN")`, the
 * legacy `VFIO_GROUP_GET_DEVICE_FD`, or a live-update retrieve gives userspace.
 *
 * Happy path (cdev): open → `VFIO_DEVICE_BIND_IOMMUFD` (the device is enabled and reset) →
 * `VFIO_DEVICE_ATTACH_IOMMUFD_PT` → region info, BAR and config access through `pread`/`pwrite`
 * at `index << 40` or a BAR mapping → `VFIO_DEVICE_SET_IRQS` wires MSI-X vectors to eventfds →
 * close (interrupts freed, unbound, device disabled). A group-obtained file is usable at once
 * (the group path's container stands for the binding). Unhappy paths, each leaving everything
 * as it was: any call but `BIND_IOMMUFD` on an unbound cdev → `EINVAL`; binding twice → `EINVAL`,
 * while another file of the device is bound → `EBUSY`; a bad `argsz`, flags or index → `EINVAL`;
 * a NULL or short argument → `EFAULT`; an unknown command → `ENOTTY`; BAR access with memory
 * decode off → `EIO`; after the live-update freeze everything → `EIO` and mappings fault.
 *
 * @module
 */
import { KernelFile, LiveUpdateError, type Process } from "@luo/core";
import { vfioIommufdBind, type VfioIommufdBinding } from "./iommufd.js";
import { eventfdTrigger, type VfioIrqTrigger } from "./irq-trigger.js";
import type { VfioBarMapping, VfioPciDevice } from "./pci-device.js";
import type { VfioCore } from "./core.js";
import {
  VFIO_DEVICE_ATTACH,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_DETACH,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  VFIO_DEVICE_FLAGS_CAPS,
  VFIO_DEVICE_FLAGS_PCI,
  VFIO_DEVICE_FLAGS_RESET,
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
  VFIO_IRQ_INFO_EVENTFD,
  VFIO_IRQ_INFO_NORESIZE,
  VFIO_IRQ_SET,
  VFIO_IRQ_SET_ACTION_MASK,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_ACTION_UNMASK,
  VFIO_IRQ_SET_DATA_BOOL,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_NONE,
  VFIO_LIVEUPDATE_CONTINUOUS,
  VFIO_LIVEUPDATE_RETRIEVED,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_MSIX_IRQ_INDEX,
  VFIO_PCI_NUM_IRQS,
  VFIO_PCI_NUM_REGIONS,
  VFIO_PCI_OFFSET_SHIFT,
  VFIO_REGION_INFO,
  VFIO_REGION_INFO_FLAG_MMAP,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
  vfioRegionOffset,
} from "./uapi.js";
import { PCI_CFG_SPACE_EXP_SIZE } from "../pci/regs.js";
import { argszView } from "./user-memory.js";

/** How a device file was obtained. */
export type VfioDeviceFileOrigin = "cdev" | "group";

const REGION_SPAN = 2 ** VFIO_PCI_OFFSET_SHIFT;

/** A vfio device file (see the module comment). */
export class VfioDeviceFile extends KernelFile {
  #binding: VfioIommufdBinding | undefined;
  #granted: boolean;

  /**
   * @param device - the device
   * @param origin - cdev open (or live-update retrieve), or the legacy group path
   * @param core - the kernel's vfio
   * @param retrieved - the file was made by a live-update retrieve
   */
  constructor(
    readonly device: VfioPciDevice,
    readonly origin: VfioDeviceFileOrigin,
    private readonly core: VfioCore,
    readonly retrieved = false,
  ) {
    super();
    this.#granted = origin === "group";
    device.files.add(this);
  }

  get description(): string {
    return `vfio device ${this.device.name}${this.origin === "group" ? " (group)" : ""}`;
  }

  /** The iommufd binding of a bound cdev. */
  get binding(): VfioIommufdBinding | undefined {
    return this.#binding;
  }

  /** True once a cdev is bound to an iommufd (`cdev_opened`); always true for group files. */
  get bound(): boolean {
    return this.#granted;
  }

  #check(): void {
    this.device.assertNotFrozen();
    if (!this.#granted) {
      throw new LiveUpdateError(
        "EINVAL",
        `${this.description} is not bound to an iommufd (VFIO_DEVICE_BIND_IOMMUFD first)`,
      );
    }
  }

  protected override release(): void {
    this.device.files.delete(this);
    if (this.device.owner !== this) return;
    this.#binding?.unbind();
    this.#binding = undefined;
    this.device.owner = undefined;
    this.device.disable();
  }

  override ioctl(proc: Process, cmd: number, arg: Uint8Array | undefined): Promise<number> {
    try {
      return Promise.resolve(this.#ioctl(proc, cmd, arg));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  #ioctl(proc: Process, cmd: number, arg: Uint8Array | undefined): number {
    this.device.assertNotFrozen();
    if (cmd === VFIO_DEVICE_BIND_IOMMUFD) return this.#bind(proc, arg);
    this.#check();
    switch (cmd) {
      case VFIO_DEVICE_ATTACH_IOMMUFD_PT:
        return this.#attach(arg);
      case VFIO_DEVICE_DETACH_IOMMUFD_PT:
        return this.#detach(arg);
      case VFIO_DEVICE_GET_INFO:
        return this.#info(arg);
      case VFIO_DEVICE_GET_REGION_INFO:
        return this.#regionInfo(arg);
      case VFIO_DEVICE_GET_IRQ_INFO:
        return this.#irqInfo(arg);
      case VFIO_DEVICE_SET_IRQS:
        return this.#setIrqs(proc, arg);
      case VFIO_DEVICE_RESET:
        this.device.reset();
        return 0;
      default:
        throw new LiveUpdateError("ENOTTY", `${this.description} has no ioctl 0x${cmd.toString(16)}`);
    }
  }

  #bind(proc: Process, arg: Uint8Array | undefined): number {
    const what = `VFIO_DEVICE_BIND_IOMMUFD on ${this.device.name}`;
    const { dv } = argszView(arg, VFIO_DEVICE_BIND.size, what);
    if (this.origin !== "cdev") throw new LiveUpdateError("EINVAL", `${what}: not a cdev file`);
    if (dv.getUint32(VFIO_DEVICE_BIND.flags, true) !== 0)
      throw new LiveUpdateError("EINVAL", `${what}: unknown flags`);
    if (this.#granted) throw new LiveUpdateError("EINVAL", `${what}: already bound`);
    if (this.device.owner)
      throw new LiveUpdateError("EBUSY", `${what}: another file of the device is in use`);
    const binding = vfioIommufdBind(proc, dv.getInt32(VFIO_DEVICE_BIND.iommufd, true), this.device.fn);
    // From here nothing can fail.
    this.device.owner = this;
    this.device.enable(this.retrieved && this.device.mode === "continuous");
    this.#binding = binding;
    this.#granted = true;
    dv.setUint32(VFIO_DEVICE_BIND.outDevid, binding.devId, true);
    return 0;
  }

  #attach(arg: Uint8Array | undefined): number {
    const what = `VFIO_DEVICE_ATTACH_IOMMUFD_PT on ${this.device.name}`;
    const { dv } = argszView(arg, VFIO_DEVICE_ATTACH.size, what);
    if (dv.getUint32(VFIO_DEVICE_ATTACH.flags, true) !== 0)
      throw new LiveUpdateError("EINVAL", `${what}: unknown flags`);
    if (!this.#binding) throw new LiveUpdateError("EINVAL", `${what}: a group-path device has no iommufd`);
    const pt = this.#binding.attach(dv.getUint32(VFIO_DEVICE_ATTACH.ptId, true));
    dv.setUint32(VFIO_DEVICE_ATTACH.ptId, pt, true);
    return 0;
  }

  #detach(arg: Uint8Array | undefined): number {
    const what = `VFIO_DEVICE_DETACH_IOMMUFD_PT on ${this.device.name}`;
    const { dv } = argszView(arg, VFIO_DEVICE_DETACH.size, what);
    if (dv.getUint32(VFIO_DEVICE_DETACH.flags, true) !== 0)
      throw new LiveUpdateError("EINVAL", `${what}: unknown flags`);
    if (!this.#binding) throw new LiveUpdateError("EINVAL", `${what}: a group-path device has no iommufd`);
    this.#binding.detach();
    return 0;
  }

  #info(arg: Uint8Array | undefined): number {
    const what = `VFIO_DEVICE_GET_INFO on ${this.device.name}`;
    const { dv, argsz } = argszView(arg, 16, what);
    const need = VFIO_DEVICE_INFO.size + VFIO_DEVICE_INFO_CAP_LIVEUPDATE_SIZE;
    dv.setUint32(
      VFIO_DEVICE_INFO.flags,
      VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET | VFIO_DEVICE_FLAGS_CAPS,
      true,
    );
    dv.setUint32(VFIO_DEVICE_INFO.numRegions, VFIO_PCI_NUM_REGIONS, true);
    dv.setUint32(VFIO_DEVICE_INFO.numIrqs, VFIO_PCI_NUM_IRQS, true);
    if (argsz < need || dv.byteLength < need) {
      // Too small for the capability chain: report the size needed (userspace retries).
      dv.setUint32(VFIO_DEVICE_INFO.argsz, need, true);
      if (argsz >= VFIO_DEVICE_INFO.size && dv.byteLength >= VFIO_DEVICE_INFO.size)
        dv.setUint32(VFIO_DEVICE_INFO.capOffset, 0, true);
      return 0;
    }
    const at = VFIO_DEVICE_INFO.size;
    dv.setUint32(VFIO_DEVICE_INFO.capOffset, at, true);
    dv.setUint16(at + VFIO_INFO_CAP_HEADER.id, VFIO_DEVICE_INFO_CAP_LIVEUPDATE, true);
    dv.setUint16(at + VFIO_INFO_CAP_HEADER.version, 1, true);
    dv.setUint32(at + VFIO_INFO_CAP_HEADER.next, 0, true);
    const flags =
      (this.device.mode === "continuous" ? VFIO_LIVEUPDATE_CONTINUOUS : 0) |
      (this.retrieved ? VFIO_LIVEUPDATE_RETRIEVED : 0);
    dv.setUint32(at + 8, flags, true);
    dv.setUint32(at + 12, 0, true);
    return 0;
  }

  #regionInfo(arg: Uint8Array | undefined): number {
    const what = `VFIO_DEVICE_GET_REGION_INFO on ${this.device.name}`;
    const { dv } = argszView(arg, VFIO_REGION_INFO.size, what);
    const index = dv.getUint32(VFIO_REGION_INFO.index, true);
    if (index >= VFIO_PCI_NUM_REGIONS) throw new LiveUpdateError("EINVAL", `${what}: no region ${index}`);
    let size = 0;
    let flags = 0;
    if (index === VFIO_PCI_CONFIG_REGION_INDEX) {
      size = PCI_CFG_SPACE_EXP_SIZE;
      flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
    } else {
      const bar = this.device.fn.bars.get(index);
      if (bar) {
        size = bar.size;
        flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE | VFIO_REGION_INFO_FLAG_MMAP;
      }
    }
    dv.setUint32(VFIO_REGION_INFO.flags, flags, true);
    dv.setUint32(VFIO_REGION_INFO.capOffset, 0, true);
    dv.setBigUint64(VFIO_REGION_INFO.regionSize, BigInt(size), true);
    dv.setBigUint64(VFIO_REGION_INFO.offset, BigInt(vfioRegionOffset(index)), true);
    return 0;
  }

  #irqInfo(arg: Uint8Array | undefined): number {
    const what = `VFIO_DEVICE_GET_IRQ_INFO on ${this.device.name}`;
    const { dv } = argszView(arg, VFIO_IRQ_INFO.size, what);
    const index = dv.getUint32(VFIO_IRQ_INFO.index, true);
    if (index >= VFIO_PCI_NUM_IRQS) throw new LiveUpdateError("EINVAL", `${what}: no IRQ index ${index}`);
    const vectors = index === VFIO_PCI_MSIX_IRQ_INDEX ? (this.device.fn.msixLayout?.vectors ?? 0) : 0;
    dv.setUint32(VFIO_IRQ_INFO.flags, vectors ? VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE : 0, true);
    dv.setUint32(VFIO_IRQ_INFO.count, vectors, true);
    return 0;
  }

  #setIrqs(proc: Process, arg: Uint8Array | undefined): number {
    const what = `VFIO_DEVICE_SET_IRQS on ${this.device.name}`;
    const { dv, argsz } = argszView(arg, VFIO_IRQ_SET.size, what);
    const flags = dv.getUint32(VFIO_IRQ_SET.flags, true);
    const index = dv.getUint32(VFIO_IRQ_SET.index, true);
    const start = dv.getUint32(VFIO_IRQ_SET.start, true);
    const count = dv.getUint32(VFIO_IRQ_SET.count, true);
    const data = flags & (VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_DATA_EVENTFD);
    const action =
      flags & (VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_ACTION_TRIGGER);
    if (flags & ~(data | action) || popcount(data) !== 1 || popcount(action) !== 1) {
      throw new LiveUpdateError(
        "EINVAL",
        `${what}: flags 0x${flags.toString(16)} need one data type and one action`,
      );
    }
    if (index >= VFIO_PCI_NUM_IRQS) throw new LiveUpdateError("EINVAL", `${what}: no IRQ index ${index}`);
    const vectors = index === VFIO_PCI_MSIX_IRQ_INDEX ? (this.device.fn.msixLayout?.vectors ?? 0) : 0;
    if (index !== VFIO_PCI_MSIX_IRQ_INDEX || action !== VFIO_IRQ_SET_ACTION_TRIGGER) {
      throw new LiveUpdateError("EINVAL", `${what}: only MSI-X triggers are supported (index ${index})`);
    }
    if (data === VFIO_IRQ_SET_DATA_NONE && count === 0) {
      this.device.freeIrqs();
      return 0;
    }
    if (start + count > vectors || count === 0) {
      throw new LiveUpdateError("EINVAL", `${what}: vectors ${start}+${count} exceed ${vectors}`);
    }
    if (data !== VFIO_IRQ_SET_DATA_EVENTFD) {
      throw new LiveUpdateError("EINVAL", `${what}: MSI-X takes eventfds (or DATA_NONE with count 0)`);
    }
    if (argsz < VFIO_IRQ_SET.size + 4 * count || dv.byteLength < VFIO_IRQ_SET.size + 4 * count) {
      throw new LiveUpdateError("EINVAL", `${what}: argsz ${argsz} too small for ${count} eventfds`);
    }
    const triggers: (VfioIrqTrigger | undefined)[] = [];
    try {
      for (let i = 0; i < count; i++) {
        const fd = dv.getInt32(VFIO_IRQ_SET.size + 4 * i, true);
        triggers.push(fd === -1 ? undefined : eventfdTrigger(proc, fd));
      }
    } catch (e) {
      for (const t of triggers) t?.release();
      throw e;
    }
    this.device.setMsix(start, triggers);
    return 0;
  }

  #region(offset: number, length: number): { index: number; off: number } {
    const index = Math.floor(offset / REGION_SPAN);
    const off = offset - index * REGION_SPAN;
    const what = `${this.description}: access at region ${index} offset ${off}`;
    let size = 0;
    if (index === VFIO_PCI_CONFIG_REGION_INDEX) size = PCI_CFG_SPACE_EXP_SIZE;
    else if (index < VFIO_PCI_NUM_REGIONS) size = this.device.fn.bars.get(index)?.size ?? 0;
    if (size === 0 || off + length > size)
      throw new LiveUpdateError("EINVAL", `${what} (+${length}) is outside the region`);
    if (index !== VFIO_PCI_CONFIG_REGION_INDEX && !this.device.fn.memoryEnabled) {
      throw new LiveUpdateError("EIO", `${what}: memory decode is off`);
    }
    return { index, off };
  }

  override readAt(offset: number, length: number): Uint8Array {
    this.#check();
    const { index, off } = this.#region(offset, length);
    const out = new Uint8Array(length);
    for (let i = 0; i < length;) {
      const w = chunk(off + i, length - i);
      const v =
        index === VFIO_PCI_CONFIG_REGION_INDEX
          ? BigInt(this.device.fn.configRead(off + i, w))
          : this.device.fn.barRead(index, off + i, w);
      for (let b = 0; b < w; b++) out[i + b] = Number((v >> BigInt(8 * b)) & 0xffn);
      i += w;
    }
    return out;
  }

  override writeAt(offset: number, data: Uint8Array): number {
    this.#check();
    const { index, off } = this.#region(offset, data.length);
    for (let i = 0; i < data.length;) {
      const w = chunk(off + i, data.length - i);
      let v = 0n;
      for (let b = w - 1; b >= 0; b--) v = (v << 8n) | BigInt(data[i + b]!);
      if (index === VFIO_PCI_CONFIG_REGION_INDEX) this.device.fn.configWrite(off + i, w, Number(v));
      else this.device.fn.barWrite(index, off + i, w, v);
      i += w;
    }
    return data.length;
  }

  /**
   * `mmap` of BAR region `bar`: a mapping whose loads and stores reach the device directly.
   * `EIO` frozen, `EINVAL` unbound or no such BAR.
   */
  mmap(bar: number): VfioBarMapping {
    this.#check();
    if (!Number.isInteger(bar) || bar < 0 || bar > 5)
      throw new LiveUpdateError("EINVAL", `${this.description}: region ${String(bar)} cannot be mapped`);
    return this.device.map(bar);
  }
}

/** Largest naturally aligned access (4, 2 or 1 bytes) at `off` within `left` bytes. */
function chunk(off: number, left: number): 1 | 2 | 4 {
  if (left >= 4 && off % 4 === 0) return 4;
  if (left >= 2 && off % 2 === 0) return 2;
  return 1;
}

function popcount(v: number): number {
  let n = 0;
  for (; v; v &= v - 1) n++;
  return n;
}
