/**
 * Property value encoding: building the raw bytes of string, string-list, u32 and u64 properties
 * (big-endian, strings NUL-terminated UTF-8) and reading them back with strict checks. Every
 * malformed value (wrong size, missing NUL, invalid UTF-8, out-of-range number) is an
 * {@link FdtError}. The readers accept `undefined` (what `getProp` returns for a missing
 * property) and report it as a missing property.
 *
 * @module
 */
import { FdtError } from "../errors.js";
import { U32_MAX, U64_MAX } from "./format.js";

const utf8Encoder = new TextEncoder();
// fatal: invalid UTF-8 is an error, not U+FFFD; ignoreBOM: a leading U+FEFF is kept, not eaten.
const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function encodeText(s: string, what: string): Uint8Array {
  if (typeof s !== "string") throw new FdtError(`${what}: not a string`);
  if (s.includes("\0")) throw new FdtError(`${what}: string contains a NUL character`);
  if (LONE_SURROGATE.test(s)) throw new FdtError(`${what}: string contains a lone surrogate`);
  return utf8Encoder.encode(s);
}

function present(value: Uint8Array | undefined, what: string): Uint8Array {
  if (value === undefined) throw new FdtError(`${what}: property is missing`);
  return value;
}

function decodeText(bytes: Uint8Array, what: string): string {
  try {
    return utf8Decoder.decode(bytes);
  } catch {
    throw new FdtError(`${what}: invalid UTF-8`);
  }
}

/**
 * Encodes a string property value: UTF-8 bytes followed by one NUL.
 *
 * @param s - the string; must not contain NUL or lone surrogates
 * @throws {@link FdtError} when `s` cannot be stored
 *
 * @category FDT
 */
export function fdtString(s: string): Uint8Array {
  const bytes = encodeText(s, "string value");
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/**
 * Encodes a string-list property value: each string's UTF-8 bytes followed by a NUL. An empty
 * list is an empty value.
 *
 * @param list - the strings; none may contain NUL or lone surrogates
 * @throws {@link FdtError} when a string cannot be stored
 *
 * @category FDT
 */
export function fdtStringList(list: readonly string[]): Uint8Array {
  const parts = list.map((s, i) => encodeText(s, `string list item ${i}`));
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length + 1, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length + 1;
  }
  return out;
}

/**
 * Encodes a u32 property value (one big-endian cell).
 *
 * @param n - an integer in [0, 2^32)
 * @throws {@link FdtError} when `n` is out of range or not an integer
 *
 * @category FDT
 */
export function fdtU32(n: number): Uint8Array {
  if (!Number.isInteger(n) || n < 0 || n > U32_MAX) throw new FdtError(`u32 value out of range: ${n}`);
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n);
  return out;
}

/**
 * Encodes a u64 property value (two big-endian cells, high cell first).
 *
 * @param n - an integer in [0, 2^64)
 * @throws {@link FdtError} when `n` is out of range
 *
 * @category FDT
 */
export function fdtU64(n: bigint): Uint8Array {
  if (typeof n !== "bigint" || n < 0n || n > U64_MAX) throw new FdtError(`u64 value out of range: ${n}`);
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, n);
  return out;
}

/**
 * Reads a string property value: exactly one NUL, at the end, and valid UTF-8 before it.
 *
 * @param input - the raw property value (`undefined` when the property is missing)
 * @param what - names the property in error messages
 * @throws {@link FdtError} when the value is missing or not a single NUL-terminated UTF-8 string
 *
 * @category FDT
 */
export function readFdtString(input: Uint8Array | undefined, what = "string property"): string {
  const value = present(input, what);
  if (value.length === 0 || value[value.length - 1] !== 0) {
    throw new FdtError(`${what}: string is not NUL-terminated (${value.length} bytes)`);
  }
  const nul = value.indexOf(0);
  if (nul !== value.length - 1)
    throw new FdtError(`${what}: string has a NUL at byte ${nul}, before its end`);
  return decodeText(value.subarray(0, nul), what);
}

/**
 * Reads a string-list property value: zero or more NUL-terminated UTF-8 strings back to back.
 * An empty value is an empty list.
 *
 * @param input - the raw property value (`undefined` when the property is missing)
 * @param what - names the property in error messages
 * @throws {@link FdtError} when the value is missing, does not end with NUL or holds invalid UTF-8
 *
 * @category FDT
 */
export function readFdtStringList(input: Uint8Array | undefined, what = "string-list property"): string[] {
  const value = present(input, what);
  if (value.length === 0) return [];
  if (value[value.length - 1] !== 0) {
    throw new FdtError(`${what}: string list is not NUL-terminated (${value.length} bytes)`);
  }
  const out: string[] = [];
  let start = 0;
  while (start < value.length) {
    const nul = value.indexOf(0, start);
    out.push(decodeText(value.subarray(start, nul), `${what} item ${out.length}`));
    start = nul + 1;
  }
  return out;
}

/**
 * Reads a u32 property value (exactly 4 bytes, big-endian).
 *
 * @param input - the raw property value (`undefined` when the property is missing)
 * @param what - names the property in error messages
 * @throws {@link FdtError} when the value is missing or not 4 bytes long
 *
 * @category FDT
 */
export function readFdtU32(input: Uint8Array | undefined, what = "u32 property"): number {
  const value = present(input, what);
  if (value.length !== 4) throw new FdtError(`${what}: expected 4 bytes, got ${value.length}`);
  return new DataView(value.buffer, value.byteOffset, 4).getUint32(0);
}

/**
 * Reads a u64 property value (exactly 8 bytes, big-endian).
 *
 * @param input - the raw property value (`undefined` when the property is missing)
 * @param what - names the property in error messages
 * @throws {@link FdtError} when the value is missing or not 8 bytes long
 *
 * @category FDT
 */
export function readFdtU64(input: Uint8Array | undefined, what = "u64 property"): bigint {
  const value = present(input, what);
  if (value.length !== 8) throw new FdtError(`${what}: expected 8 bytes, got ${value.length}`);
  return new DataView(value.buffer, value.byteOffset, 8).getBigUint64(0);
}
