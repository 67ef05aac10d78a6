/**
 * The vfio user ABI (`include/uapi/linux/vfio.h`) as far as the model implements it: ioctl
 * numbers (type `';'`, base 100, `_IO` encoding without size bits, as in the header), argument
 * struct layouts, flags, and the vfio-pci region and IRQ indexes. Arguments are user memory
 * (`Uint8Array`), little-endian; an `int` argument (a container fd, an extension number) is a
 * 4-byte little-endian integer, and `VFIO_GROUP_GET_DEVICE_FD` takes the device name as a
 * NUL-terminated string.
 *
 * @module
 */

/** ioctl type of vfio (`VFIO_TYPE`). */
export const VFIO_TYPE = 0x3b;
/** First vfio ioctl number (`VFIO_BASE`). */
export const VFIO_BASE = 100;
const io = (nr: number): number => (VFIO_TYPE << 8) | (VFIO_BASE + nr);

/** `VFIO_GET_API_VERSION` (container): returns {@link VFIO_API_VERSION}. */
export const VFIO_GET_API_VERSION = io(0);
/** `VFIO_CHECK_EXTENSION` (container): 1 when the IOMMU type in the `int` argument is supported. */
export const VFIO_CHECK_EXTENSION = io(1);
/** `VFIO_SET_IOMMU` (container): selects the IOMMU type. */
export const VFIO_SET_IOMMU = io(2);
/** `VFIO_GROUP_GET_STATUS`: `{u32 argsz; u32 flags}`. */
export const VFIO_GROUP_GET_STATUS = io(3);
/** `VFIO_GROUP_SET_CONTAINER`: `int` container fd. */
export const VFIO_GROUP_SET_CONTAINER = io(4);
/** `VFIO_GROUP_UNSET_CONTAINER`. */
export const VFIO_GROUP_UNSET_CONTAINER = io(5);
/** `VFIO_GROUP_GET_DEVICE_FD`: device name; returns a new fd. */
export const VFIO_GROUP_GET_DEVICE_FD = io(6);
/** `VFIO_DEVICE_GET_INFO`: `struct vfio_device_info`. */
export const VFIO_DEVICE_GET_INFO = io(7);
/** `VFIO_DEVICE_GET_REGION_INFO`: `struct vfio_region_info`. */
export const VFIO_DEVICE_GET_REGION_INFO = io(8);
/** `VFIO_DEVICE_GET_IRQ_INFO`: `struct vfio_irq_info`. */
export const VFIO_DEVICE_GET_IRQ_INFO = io(9);
/** `VFIO_DEVICE_SET_IRQS`: `struct vfio_irq_set` + data. */
export const VFIO_DEVICE_SET_IRQS = io(10);
/** `VFIO_DEVICE_RESET`: no argument. */
export const VFIO_DEVICE_RESET = io(11);
/** `VFIO_DEVICE_BIND_IOMMUFD`: `struct vfio_device_bind_iommufd`. */
export const VFIO_DEVICE_BIND_IOMMUFD = io(18);
/** `VFIO_DEVICE_ATTACH_IOMMUFD_PT`: `struct vfio_device_attach_iommufd_pt`. */
export const VFIO_DEVICE_ATTACH_IOMMUFD_PT = io(19);
/** `VFIO_DEVICE_DETACH_IOMMUFD_PT`: `struct vfio_device_detach_iommufd_pt`. */
export const VFIO_DEVICE_DETACH_IOMMUFD_PT = io(20);

/** `VFIO_API_VERSION`. */
export const VFIO_API_VERSION = 0;
/** `VFIO_TYPE1_IOMMU`. */
export const VFIO_TYPE1_IOMMU = 1;
/** `VFIO_TYPE1v2_IOMMU`. */
export const VFIO_TYPE1v2_IOMMU = 3;

/** `struct vfio_group_status { u32 argsz; u32 flags; }`. */
export const VFIO_GROUP_STATUS = { size: 8, argsz: 0, flags: 4 } as const;
/** Group status: every device of the group is owned by vfio. */
export const VFIO_GROUP_FLAGS_VIABLE = 1 << 0;
/** Group status: the group is in a container. */
export const VFIO_GROUP_FLAGS_CONTAINER_SET = 1 << 1;

/** `struct vfio_device_info { u32 argsz, flags, num_regions, num_irqs, cap_offset, pad; }`. */
export const VFIO_DEVICE_INFO = {
  size: 24,
  argsz: 0,
  flags: 4,
  numRegions: 8,
  numIrqs: 12,
  capOffset: 16,
} as const;
/** Device info: the device supports `VFIO_DEVICE_RESET`. */
export const VFIO_DEVICE_FLAGS_RESET = 1 << 0;
/** Device info: a PCI device. */
export const VFIO_DEVICE_FLAGS_PCI = 1 << 1;
/** Device info: `cap_offset` points at a capability chain. */
export const VFIO_DEVICE_FLAGS_CAPS = 1 << 7;

/** Capability header `{ u16 id; u16 version; u32 next; }`. */
export const VFIO_INFO_CAP_HEADER = { size: 8, id: 0, version: 2, next: 4 } as const;
/**
 * Device-info capability of this model: how the device behaves across a live update (the
 * `VFIO_DEVICE_INFO_CAP` reviewers asked for so userspace can tell a reset-only implementation
 * from continuous DMA). Body after the header: `u32 flags` ({@link VFIO_LIVEUPDATE_CONTINUOUS}),
 * `u32 reserved`. ID 0x4c55 ("LU").
 */
export const VFIO_DEVICE_INFO_CAP_LIVEUPDATE = 0x4c55;
/** Size of the live-update capability (header + flags + reserved). */
export const VFIO_DEVICE_INFO_CAP_LIVEUPDATE_SIZE = 16;
/** Live-update capability flag: the device keeps running and DMA keeps flowing across the kexec. */
export const VFIO_LIVEUPDATE_CONTINUOUS = 1 << 0;
/** Live-update capability flag: this fd came from `LIVEUPDATE_SESSION_RETRIEVE_FD`. */
export const VFIO_LIVEUPDATE_RETRIEVED = 1 << 1;

/** `struct vfio_region_info { u32 argsz, flags, index, cap_offset; u64 size, offset; }`. */
export const VFIO_REGION_INFO = {
  size: 32,
  argsz: 0,
  flags: 4,
  index: 8,
  capOffset: 12,
  regionSize: 16,
  offset: 24,
} as const;
/** Region can be read. */
export const VFIO_REGION_INFO_FLAG_READ = 1 << 0;
/** Region can be written. */
export const VFIO_REGION_INFO_FLAG_WRITE = 1 << 1;
/** Region can be mmapped. */
export const VFIO_REGION_INFO_FLAG_MMAP = 1 << 2;

/** `struct vfio_irq_info { u32 argsz, flags, index, count; }`. */
export const VFIO_IRQ_INFO = { size: 16, argsz: 0, flags: 4, index: 8, count: 12 } as const;
/** IRQ info: eventfd signalling supported. */
export const VFIO_IRQ_INFO_EVENTFD = 1 << 0;
/** IRQ info: the number of vectors cannot change without disabling first. */
export const VFIO_IRQ_INFO_NORESIZE = 1 << 3;

/** `struct vfio_irq_set { u32 argsz, flags, index, start, count; u8 data[]; }`. */
export const VFIO_IRQ_SET = { size: 20, argsz: 0, flags: 4, index: 8, start: 12, count: 16 } as const;
/** SET_IRQS data: none. */
export const VFIO_IRQ_SET_DATA_NONE = 1 << 0;
/** SET_IRQS data: one `u8` per vector. */
export const VFIO_IRQ_SET_DATA_BOOL = 1 << 1;
/** SET_IRQS data: one `s32` eventfd per vector (-1: unset). */
export const VFIO_IRQ_SET_DATA_EVENTFD = 1 << 2;
/** SET_IRQS action: mask. */
export const VFIO_IRQ_SET_ACTION_MASK = 1 << 3;
/** SET_IRQS action: unmask. */
export const VFIO_IRQ_SET_ACTION_UNMASK = 1 << 4;
/** SET_IRQS action: trigger. */
export const VFIO_IRQ_SET_ACTION_TRIGGER = 1 << 5;

/** `struct vfio_device_bind_iommufd { u32 argsz, flags; s32 iommufd; u32 out_devid; }`. */
export const VFIO_DEVICE_BIND = { size: 16, argsz: 0, flags: 4, iommufd: 8, outDevid: 12 } as const;
/** `struct vfio_device_attach_iommufd_pt { u32 argsz, flags, pt_id; }`. */
export const VFIO_DEVICE_ATTACH = { size: 12, argsz: 0, flags: 4, ptId: 8 } as const;
/** `struct vfio_device_detach_iommufd_pt { u32 argsz, flags; }`. */
export const VFIO_DEVICE_DETACH = { size: 8, argsz: 0, flags: 4 } as const;

/** vfio-pci region indexes: BAR0..BAR5 are 0..5. */
export const VFIO_PCI_BAR0_REGION_INDEX = 0;
/** Expansion ROM region. */
export const VFIO_PCI_ROM_REGION_INDEX = 6;
/** Config space region. */
export const VFIO_PCI_CONFIG_REGION_INDEX = 7;
/** VGA region. */
export const VFIO_PCI_VGA_REGION_INDEX = 8;
/** Number of vfio-pci regions. */
export const VFIO_PCI_NUM_REGIONS = 9;
/** INTx IRQ index. */
export const VFIO_PCI_INTX_IRQ_INDEX = 0;
/** MSI IRQ index. */
export const VFIO_PCI_MSI_IRQ_INDEX = 1;
/** MSI-X IRQ index. */
export const VFIO_PCI_MSIX_IRQ_INDEX = 2;
/** Number of vfio-pci IRQ indexes (ERR, REQ included). */
export const VFIO_PCI_NUM_IRQS = 5;
/** Region offsets within the device fd: `index << VFIO_PCI_OFFSET_SHIFT`. */
export const VFIO_PCI_OFFSET_SHIFT = 40;

/** The device-fd offset of region `index`. */
export function vfioRegionOffset(index: number): number {
  return index * 2 ** VFIO_PCI_OFFSET_SHIFT;
}
