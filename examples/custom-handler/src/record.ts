/**
 * Byte layout of the `"eventfd-v1"` handover record: what one preserved eventfd leaves in
 * preserved memory for the next kernel. Little-endian, packed; any change needs a new compatible.
 *
 * ```text
 * eventfd_luo_ser (16 B)   0 u64 count | 8 u32 flags (EFD_* bits) | 12 u32 reserved (0)
 * ```
 *
 * The record sits at the start of one preserved page (the file's `data` is that page's physical
 * address). {@link decodeEventFdRecord} checks what it reads: flags outside the `EFD_*` set or a
 * non-zero reserved word are `EINVAL`, so a newer or corrupt record is refused, never guessed at.
 *
 * @module
 */
import { EFD_FLAGS_SET, LiveUpdateError } from "@luo/core";

/** Compatible string of the eventfd handler. */
export const EVENTFD_LUO_COMPATIBLE = "eventfd-v1";

/** Field offsets of `struct eventfd_luo_ser`: `u64 count; u32 flags; u32 reserved`. */
export const EVENTFD_LUO_SER = { count: 0, flags: 8, reserved: 12 } as const;
/** Bytes of `struct eventfd_luo_ser` (16). */
export const EVENTFD_LUO_SER_SIZE = EVENTFD_LUO_SER.reserved + 4;

/** The fields of one record. */
export interface EventFdRecord {
  /** The counter at freeze. */
  readonly count: bigint;
  /** The `EFD_*` flags the eventfd was made with. */
  readonly flags: number;
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, EVENTFD_LUO_SER_SIZE);
}

/** Writes `record` into the first 16 bytes of `bytes`. */
export function encodeEventFdRecord(bytes: Uint8Array, record: EventFdRecord): void {
  const dv = view(bytes);
  dv.setBigUint64(EVENTFD_LUO_SER.count, record.count, true);
  dv.setUint32(EVENTFD_LUO_SER.flags, record.flags, true);
  dv.setUint32(EVENTFD_LUO_SER.reserved, 0, true);
}

/** Reads and checks a record; `EINVAL` naming `where` for unknown flags or a reserved word ≠ 0. */
export function decodeEventFdRecord(bytes: Uint8Array, where: string): EventFdRecord {
  const dv = view(bytes);
  const flags = dv.getUint32(EVENTFD_LUO_SER.flags, true);
  const reserved = dv.getUint32(EVENTFD_LUO_SER.reserved, true);
  if ((flags & ~EFD_FLAGS_SET) !== 0 || reserved !== 0) {
    throw new LiveUpdateError(
      "EINVAL",
      `eventfd record at ${where}: flags 0x${flags.toString(16)} / reserved 0x${reserved.toString(16)} unknown`,
    );
  }
  return { count: dv.getBigUint64(EVENTFD_LUO_SER.count, true), flags };
}
