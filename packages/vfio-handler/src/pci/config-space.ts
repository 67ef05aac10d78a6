/**
 * The 4 KiB configuration space of one PCI function, with the write semantics of real hardware:
 * every byte has a writable mask (read-only bits keep their value) and a write-1-to-clear mask
 * (status error bits). Capabilities are chained from {@link PCI_CAPABILITY_LIST} as they are
 * added. Accesses are 1, 2 or 4 bytes, naturally aligned, inside the 4 KiB (`EINVAL` otherwise,
 * as `pci_user_read_config_*` refuses them). The function above decides what a write *does*
 * (FLR, power state, BAR decode); this class only stores bits.
 *
 * @module
 */
import { LiveUpdateError } from "@luo/core";
import {
  PCI_CAPABILITY_LIST,
  PCI_CFG_SPACE_EXP_SIZE,
  PCI_CFG_SPACE_SIZE,
  PCI_STATUS,
  PCI_STATUS_CAP_LIST,
} from "./regs.js";

/** Register widths a config access may use. */
export type ConfigWidth = 1 | 2 | 4;

/** Checks an access of `width` bytes at `offset`: aligned and inside 4 KiB. `EINVAL` otherwise. */
export function checkConfigAccess(offset: unknown, width: unknown, what: string): void {
  if (width !== 1 && width !== 2 && width !== 4) {
    throw new LiveUpdateError("EINVAL", `${what}: width ${String(width)} is not 1, 2 or 4 bytes`);
  }
  if (
    typeof offset !== "number" ||
    !Number.isInteger(offset) ||
    offset < 0 ||
    offset + width > PCI_CFG_SPACE_EXP_SIZE ||
    offset % width !== 0
  ) {
    throw new LiveUpdateError(
      "EINVAL",
      `${what}: offset ${String(offset)} is not a ${width}-byte aligned config-space offset`,
    );
  }
}

/** Bytes, writable mask and write-1-to-clear mask of a config space. */
export class PciConfigSpace {
  /** Current register values. */
  readonly bytes = new Uint8Array(PCI_CFG_SPACE_EXP_SIZE);
  /** Bits software may change. */
  readonly wmask = new Uint8Array(PCI_CFG_SPACE_EXP_SIZE);
  /** Bits cleared by writing 1. */
  readonly w1cmask = new Uint8Array(PCI_CFG_SPACE_EXP_SIZE);
  readonly #view = new DataView(this.bytes.buffer);
  /** Offset of the last capability added (0: none yet). */
  #lastCap = 0;
  /** Next free offset for a capability in the legacy space. */
  #nextCap = 0x40;

  /** Reads `width` bytes at `offset` (unchecked). */
  get(offset: number, width: ConfigWidth): number {
    if (width === 1) return this.bytes[offset]!;
    if (width === 2) return this.#view.getUint16(offset, true);
    return this.#view.getUint32(offset, true);
  }

  /** Stores `value` at `offset` ignoring the masks (device-internal update). */
  set(offset: number, width: ConfigWidth, value: number): void {
    if (width === 1) this.bytes[offset] = value & 0xff;
    else if (width === 2) this.#view.setUint16(offset, value & 0xffff, true);
    else this.#view.setUint32(offset, value >>> 0, true);
  }

  /** Sets the writable mask of a register. */
  setWritable(offset: number, width: ConfigWidth, mask: number): void {
    for (let i = 0; i < width; i++) this.wmask[offset + i] = (mask >>> (8 * i)) & 0xff;
  }

  /** Sets the write-1-to-clear mask of a register. */
  setW1c(offset: number, width: ConfigWidth, mask: number): void {
    for (let i = 0; i < width; i++) this.w1cmask[offset + i] = (mask >>> (8 * i)) & 0xff;
  }

  /** A software write: writable bits take the new value, W1C bits written as 1 clear. */
  write(offset: number, width: ConfigWidth, value: number): void {
    for (let i = 0; i < width; i++) {
      const o = offset + i;
      const v = (value >>> (8 * i)) & 0xff;
      const w = this.wmask[o]!;
      const c = this.w1cmask[o]!;
      this.bytes[o] = ((this.bytes[o]! & ~w) | (v & w)) & ~(v & c) & 0xff;
    }
  }

  /**
   * Appends a capability of `size` bytes with id `id` to the legacy list and returns its offset.
   * The caller fills the body and its writable bits.
   */
  addCapability(id: number, size: number): number {
    const at = this.#nextCap;
    if (at + size > PCI_CFG_SPACE_SIZE) {
      throw new LiveUpdateError("ENOSPC", `no room for capability 0x${id.toString(16)} in config space`);
    }
    this.#nextCap = (at + size + 3) & ~3;
    this.bytes[at] = id;
    this.bytes[at + 1] = 0;
    if (this.#lastCap === 0) this.bytes[PCI_CAPABILITY_LIST] = at;
    else this.bytes[this.#lastCap + 1] = at;
    this.#lastCap = at;
    this.set(PCI_STATUS, 2, this.get(PCI_STATUS, 2) | PCI_STATUS_CAP_LIST);
    return at;
  }

  /** Offset of the first capability with `id` (walking the list as `pci_find_capability`), or 0. */
  findCapability(id: number): number {
    let at = this.bytes[PCI_CAPABILITY_LIST]! & ~3;
    for (let hops = 0; at !== 0 && hops < 48; hops++) {
      if (this.bytes[at] === id) return at;
      at = this.bytes[at + 1]! & ~3;
    }
    return 0;
  }
}
