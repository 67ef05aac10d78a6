// CRC-32 (IEEE 802.3, the zlib/PNG polynomial) used to checksum machine image sections: Node's
// native zlib.crc32 when present, a table-driven implementation otherwise.

import * as zlib from "node:zlib";

type Crc32Fn = (data: Uint8Array, value?: number) => number;

let table: Uint32Array | undefined;

function makeTable(): Uint32Array {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
}

/**
 * Table-driven CRC-32 in plain JavaScript (same results as `zlib.crc32`).
 *
 * @param data - bytes to checksum
 * @param value - the CRC of the preceding bytes when checksumming incrementally (default 0)
 * @returns the CRC-32 as an unsigned 32-bit number
 */
export function crc32Portable(data: Uint8Array, value = 0): number {
  const t = (table ??= makeTable());
  let c = ~value >>> 0;
  for (let i = 0; i < data.length; i++) c = t[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

const native = (zlib as { crc32?: Crc32Fn }).crc32;

/**
 * CRC-32 (IEEE, as in zlib, gzip and PNG). Uses Node's native `zlib.crc32` (Node ≥ 20.15) and
 * falls back to a table-driven implementation.
 *
 * @param data - bytes to checksum
 * @param value - the CRC of the preceding bytes when checksumming incrementally (default 0)
 * @returns the CRC-32 as an unsigned 32-bit number
 */
export const crc32: (data: Uint8Array, value?: number) => number =
  native === undefined ? crc32Portable : (data, value = 0) => native(data, value) >>> 0;
