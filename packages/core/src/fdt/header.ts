/**
 * The FDT header: reading its ten fields and the checks that need nothing but the header (magic,
 * version compatibility, size), so that a caller holding only the first page of a blob can learn
 * its `totalsize` before reading the rest. Block layout checks against the whole blob live in the
 * decoder.
 *
 * @module
 */
import { FdtError } from "../errors.js";
import { FDT_HEADER_FIELD, FDT_HEADER_SIZE, FDT_MAGIC, FDT_VERSION } from "./format.js";

/** The oldest blob version the reader accepts (version 16 has no `size_dt_struct`). */
const FDT_MIN_READ_VERSION = 16;

/**
 * The ten header fields of a blob, as stored (all u32).
 *
 * @category FDT
 */
export interface FdtHeader {
  /** Always {@link FDT_MAGIC} once validated. */
  magic: number;
  /** Size of the whole blob in bytes (`totalsize`). */
  totalSize: number;
  /** Offset of the structure block. */
  offDtStruct: number;
  /** Offset of the strings block. */
  offDtStrings: number;
  /** Offset of the memory reservation block. */
  offMemRsvmap: number;
  /** Format version of the blob. */
  version: number;
  /** Oldest version the blob is backwards compatible with. */
  lastCompVersion: number;
  /** Physical id of the boot CPU. */
  bootCpuidPhys: number;
  /** Size of the strings block. */
  sizeDtStrings: number;
  /** Size of the structure block; not defined (and reported as 0) before version 17. */
  sizeDtStruct: number;
}

/**
 * Size of the header as laid out by `version` (36 bytes before version 17, 40 from it).
 *
 * @category FDT
 */
export function fdtHeaderSize(version: number): number {
  return version >= 17 ? FDT_HEADER_SIZE : FDT_HEADER_SIZE - 4;
}

/**
 * Reads and checks the header of a blob without looking past it: `blob` may be just the first
 * bytes (e.g. one page) of a larger blob. Checks the magic, that the version is readable (version
 * ≥ 16, `last_comp_version` ≤ 17 and ≤ version) and that `totalsize` covers at least the header.
 *
 * @param blob - at least the first 40 bytes of a blob
 * @throws {@link FdtError} when the header is short or invalid
 *
 * @category FDT
 */
export function peekFdtHeader(blob: Uint8Array): FdtHeader {
  if (blob.length < FDT_HEADER_SIZE) {
    throw new FdtError(`blob is ${blob.length} bytes, shorter than the ${FDT_HEADER_SIZE}-byte header`, 0);
  }
  const dv = new DataView(blob.buffer, blob.byteOffset, FDT_HEADER_SIZE);
  const field = (name: keyof typeof FDT_HEADER_FIELD): number => dv.getUint32(FDT_HEADER_FIELD[name]);
  const magic = field("magic");
  if (magic !== FDT_MAGIC) {
    throw new FdtError(`bad magic 0x${magic.toString(16).padStart(8, "0")} (expected 0xd00dfeed)`, 0);
  }
  const version = field("version");
  const lastCompVersion = field("lastCompVersion");
  if (version < FDT_MIN_READ_VERSION) {
    throw new FdtError(`version ${version} is older than ${FDT_MIN_READ_VERSION}`, FDT_HEADER_FIELD.version);
  }
  if (lastCompVersion > FDT_VERSION || lastCompVersion > version) {
    throw new FdtError(
      `last_comp_version ${lastCompVersion} is not readable (version ${version}, reader ${FDT_VERSION})`,
      FDT_HEADER_FIELD.lastCompVersion,
    );
  }
  const totalSize = field("totalSize");
  if (totalSize < fdtHeaderSize(version)) {
    throw new FdtError(`totalsize ${totalSize} is smaller than the header`, FDT_HEADER_FIELD.totalSize);
  }
  return {
    magic,
    totalSize,
    offDtStruct: field("offDtStruct"),
    offDtStrings: field("offDtStrings"),
    offMemRsvmap: field("offMemRsvmap"),
    version,
    lastCompVersion,
    bootCpuidPhys: field("bootCpuidPhys"),
    sizeDtStrings: field("sizeDtStrings"),
    sizeDtStruct: version >= 17 ? field("sizeDtStruct") : 0,
  };
}

/**
 * Returns the `totalsize` of the blob whose header starts `blob`, after the checks of
 * {@link peekFdtHeader}. Use it to learn how many bytes to read before calling `decodeFdt`.
 *
 * @param blob - at least the first 40 bytes of a blob
 * @throws {@link FdtError} when the header is short or invalid
 *
 * @category FDT
 */
export function fdtTotalSize(blob: Uint8Array): number {
  return peekFdtHeader(blob).totalSize;
}
