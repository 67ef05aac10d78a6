// CRC-32 (IEEE 802.3, the zlib/PNG polynomial) used to checksum machine image sections: Node's
// native zlib.crc32 (every supported Node.js, ≥ 20.19, has it).

import { crc32 as zlibCrc32 } from "node:zlib";

/**
 * CRC-32 (IEEE, as in zlib, gzip and PNG), computed by Node's native `zlib.crc32`.
 *
 * @param data - bytes to checksum
 * @param value - the CRC of the preceding bytes when checksumming incrementally (default 0)
 * @returns the CRC-32 as an unsigned 32-bit number
 *
 * @category Machine
 */
export function crc32(data: Uint8Array, value = 0): number {
  return zlibCrc32(data, value) >>> 0;
}
