/**
 * The `"vfio-pci-v1"` live-update handler (`drivers/vfio/pci/vfio_pci_liveupdate.c`): preserves a
 * vfio cdev so the next kernel hands the same PCI device (same segment and BDF) back to userspace.
 *
 * Record (one zeroed preserved page, the file's data is its address), packed little-endian:
 * `struct vfio_pci_core_device_ser { u32 domain; u16 bdf; }` — 6 bytes.
 *
 * - canPreserve: a vfio device file opened through the cdev **and bound** to an iommufd. Group
 *   files, the container and group-obtained device files are refused (LUO answers `ENOENT`).
 * - preserve, in the kernel's order, each step unwound if a later one fails: the PCI core records
 *   the device and its bridges (`EINVAL` VF or ACS quirk on the path, `EBUSY` already preserved,
 *   `ENOENT` no outgoing PCI FLB); iommufd preserves the device's attachment (`ENOENT` not
 *   attached or the iommufd not preserved earlier in this session, `EINVAL` HWPT not marked);
 *   the record page is allocated (`ENOMEM`).
 * - unpreserve: the mirror image (iommufd, PCI core, record).
 * - freeze (reboot): interrupts still set up → `EINVAL`; not in D0 → `EINVAL` (the device is left
 *   as it was). Otherwise, `reset` mode: BAR mappings revoked, function reset, memory/IO decode
 *   and bus mastering off; `continuous` mode: mappings revoked, the device keeps running and its
 *   DMA keeps flowing through the preserved IOMMU domain. Either way the fd answers `EIO` from
 *   now on. There is **no unfreeze**: if the reboot fails after this device froze, the device
 *   stays frozen — close its fds (and the session, which drops LUO's reference) and set it up
 *   again.
 * - retrieve (next kernel): the device vfio owns at the recorded segment/BDF (`ENODEV` if none),
 *   as a fresh, unbound cdev file: everything but `VFIO_DEVICE_BIND_IOMMUFD` is refused until it
 *   is bound. In `continuous` mode the bind does not reset the device.
 * - canFinish: only once retrieved and bound again (FINISH fails before retrieve and before bind).
 * - finish: the PCI core drops the device and its bridges from the incoming PCI FLB; the record
 *   page is freed.
 *
 * @module
 */
import { LiveUpdateError, defineFileHandler, type FileHandler } from "@luo/core";
import { PCI_CORE } from "../kernel/pci-core.js";
import { formatPciAddress } from "../pci/regs.js";
import { VFIO_CORE } from "../vfio/core.js";
import { VfioDeviceFile } from "../vfio/device-file.js";

/** Compatible of the vfio-pci handler. */
export const VFIO_PCI_LUO_FH_COMPATIBLE = "vfio-pci-v1";

/** `struct vfio_pci_core_device_ser` offsets and size. */
export const VFIO_PCI_SER = { size: 6, domain: 0, bdf: 4 } as const;

const hex = (v: bigint): string => `0x${v.toString(16)}`;

/** The `"vfio-pci-v1"` handler (registered by the `vfio()` plugin). */
export const vfioPciHandler: FileHandler<VfioDeviceFile> = defineFileHandler<VfioDeviceFile>({
  compatible: VFIO_PCI_LUO_FH_COMPATIBLE,

  canPreserve: (file) => file instanceof VfioDeviceFile && file.origin === "cdev" && file.bound,

  getId: (file) => file.device.fn,

  async preserve({ file, kho, session, flb, container }) {
    const pci = container.resolve(PCI_CORE);
    const fn = file.device.fn;
    const out = pci.outgoing;
    if (!out) throw new LiveUpdateError("ENOENT", `${file.description}: no outgoing PCI FLB`);
    out.preserve(fn);
    try {
      await file.binding?.preserve(session, flb);
      try {
        const ser = kho.allocPreserve(VFIO_PCI_SER.size);
        const dv = new DataView(ser.view.buffer, ser.view.byteOffset, VFIO_PCI_SER.size);
        dv.setUint32(VFIO_PCI_SER.domain, fn.domain, true);
        dv.setUint16(VFIO_PCI_SER.bdf, fn.bdf, true);
        return { data: ser.phys };
      } catch (e) {
        await file.binding?.unpreserve();
        throw e;
      }
    } catch (e) {
      out.unpreserve(fn);
      throw e;
    }
  },

  async unpreserve({ file, kho, data, container }) {
    await file.binding?.unpreserve();
    container.resolve(PCI_CORE).outgoing?.unpreserve(file.device.fn);
    kho.unpreserveFree(data);
  },

  freeze({ file }) {
    const dev = file.device;
    if (dev.irqsEnabled) {
      throw new LiveUpdateError(
        "EINVAL",
        `${dev.name}: interrupts are still enabled; disable them before kexec`,
      );
    }
    if (dev.fn.powerState !== "D0") {
      throw new LiveUpdateError("EINVAL", `${dev.name} is in ${dev.fn.powerState}, not D0`);
    }
    dev.freeze();
  },

  retrieve({ data, incoming, container }) {
    if (!incoming?.covers(data, VFIO_PCI_SER.size)) {
      throw new LiveUpdateError("EINVAL", `vfio-pci record at ${hex(data)} is not handed-over memory`);
    }
    const bytes = incoming.machine.view(data, VFIO_PCI_SER.size);
    const dv = new DataView(bytes.buffer, bytes.byteOffset, VFIO_PCI_SER.size);
    const domain = dv.getUint32(VFIO_PCI_SER.domain, true);
    const bdf = dv.getUint16(VFIO_PCI_SER.bdf, true);
    const vfio = container.resolve(VFIO_CORE);
    const dev = vfio.find(domain, bdf);
    if (!dev) {
      throw new LiveUpdateError("ENODEV", `no device owned by vfio-pci at ${formatPciAddress(domain, bdf)}`);
    }
    return vfio.openRetrieved(dev);
  },

  canFinish: ({ file, retrieveStatus }) => retrieveStatus === 1 && file !== undefined && file.bound,

  finish({ data, incoming, container }) {
    const pci = container.resolve(PCI_CORE);
    if (incoming?.covers(data, VFIO_PCI_SER.size)) {
      const bytes = incoming.machine.view(data, VFIO_PCI_SER.size);
      const dv = new DataView(bytes.buffer, bytes.byteOffset, VFIO_PCI_SER.size);
      const fn = pci.find(dv.getUint32(VFIO_PCI_SER.domain, true), dv.getUint16(VFIO_PCI_SER.bdf, true));
      if (fn && pci.isIncoming(fn)) pci.incoming!.finish(fn);
      incoming.restoreFree(data);
    }
  },
});
