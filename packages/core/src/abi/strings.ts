/**
 * Fixed-size C strings of the handover ABI (`char name[64]`, `char compatible[48]`).
 *
 * The public API takes JS strings; they are stored as UTF-8 with a terminating NUL, so the byte
 * length must be 1..size-1 and must not contain NUL, and the string must not contain a lone
 * UTF-16 surrogate (`EINVAL`): it has no UTF-8 form, `TextEncoder` would write U+FFFD instead, and
 * the next kernel would look up bytes that differ from the string registered here. Readers of incoming data require
 * a NUL inside the field and valid UTF-8 — anything else is corrupt state.
 *
 * @module
 */
import { LiveUpdateError } from "../errors.js";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** A lone UTF-16 surrogate (a `\p{Cs}` code point: only unpaired halves match with the `u` flag). */
const LONE_SURROGATE = /\p{Cs}/u;

/**
 * Encodes `value` for a `char[size]` field. `EINVAL` (naming `what`) when it has a lone surrogate,
 * is empty, contains NUL, or is `size - 1` bytes or longer.
 *
 * @category Handover ABI
 */
export function encodeFixedString(value: string, size: number, what: string): Uint8Array {
  if (typeof value !== "string") throw new LiveUpdateError("EINVAL", `${what} must be a string`);
  if (LONE_SURROGATE.test(value)) {
    throw new LiveUpdateError(
      "EINVAL",
      `${what} ${JSON.stringify(value)} has a lone surrogate (not valid Unicode, no UTF-8 form)`,
    );
  }
  const bytes = encoder.encode(value);
  if (bytes.length === 0) throw new LiveUpdateError("EINVAL", `${what} is empty`);
  if (bytes.includes(0)) throw new LiveUpdateError("EINVAL", `${what} ${JSON.stringify(value)} contains NUL`);
  if (bytes.length > size - 1) {
    throw new LiveUpdateError(
      "EINVAL",
      `${what} ${JSON.stringify(value)} is ${bytes.length} bytes; at most ${size - 1} fit with the NUL`,
    );
  }
  return bytes;
}

/**
 * Reads a `char[size]` field. Returns `undefined` when there is no NUL inside the field, the
 * string is empty, or it is not valid UTF-8 (callers turn that into a kernel panic).
 *
 * @category Handover ABI
 */
export function readFixedString(view: Uint8Array, offset: number, size: number): string | undefined {
  const end = view.indexOf(0, offset);
  if (end < 0 || end >= offset + size || end === offset) return undefined;
  return decodeUtf8(view.subarray(offset, end));
}

/**
 * Decodes `bytes` as UTF-8; `undefined` when they are not valid UTF-8.
 *
 * @category Handover ABI
 */
export function decodeUtf8(bytes: Uint8Array): string | undefined {
  try {
    return decoder.decode(bytes);
  } catch {
    return undefined;
  }
}

/**
 * Writes an already validated session name (1..63 bytes) into a zeroed `char name[64]` slot
 * without allocating (one per session creation; a handover may hold hundreds of thousands).
 *
 * @category Handover ABI
 */
export function writeSessionName(view: Uint8Array, offset: number, name: string): void {
  // ASCII names (the common case) are copied byte by byte: no view object per session.
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c >= 0x80) {
      encoder.encodeInto(name, view.subarray(offset, offset + 63));
      return;
    }
    view[offset + i] = c;
  }
}
