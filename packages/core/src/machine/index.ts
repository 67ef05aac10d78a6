// The emulated machine's public surface: page geometry constants, memory-size parsing, the
// Machine (RAM, page allocator, preserved marks, scrub, image save/load), machine hardware and
// the image format identifiers.

export {
  DEFAULT_RAM_BASE,
  MAX_ORDER,
  MAX_ORDER_BYTES,
  MAX_ORDER_PAGES,
  PAGE_SHIFT,
  PAGE_SIZE,
  PHYS_ADDR_LIMIT,
  POISON_BYTE,
} from "./constants.js";
export { formatSize, parseSize, type MemorySize } from "./size.js";
export {
  Machine,
  type MachineBlock,
  type MachineLoadOptions,
  type MachineOptions,
  type MachineSaveOptions,
  type MachineStats,
} from "./machine.js";
export {
  MachineHardwareSet,
  type HardwareFactory,
  type HardwareLoader,
  type HardwareRecord,
  type MachineHardware,
} from "./hardware.js";
export { MACHINE_IMAGE_MAGIC, MACHINE_IMAGE_VERSION } from "./image.js";
export { crc32 } from "./crc32.js";
