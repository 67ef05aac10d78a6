// Memory-size parsing and formatting for machine configuration ("512 MiB" ⇄ 536870912).

import { LiveUpdateError } from "../errors.js";
import { MAX_ORDER_BYTES } from "./constants.js";

/**
 * A memory size as accepted by {@link parseSize}: `"512 MiB"`, `"1G"`, `"4194304"`, or a byte count.
 *
 * @category Machine
 */
export type MemorySize = string | number | bigint;

const UNITS: Readonly<Record<string, bigint>> = {
  "": 1n,
  b: 1n,
  k: 1n << 10n,
  kib: 1n << 10n,
  m: 1n << 20n,
  mib: 1n << 20n,
  g: 1n << 30n,
  gib: 1n << 30n,
  t: 1n << 40n,
  tib: 1n << 40n,
};

const SIZE_RE = /^\s*(?:0x([0-9a-f]+)|(\d+)(?:\.(\d+))?)\s*([a-z]*)\s*$/i;

function describe(input: MemorySize): string {
  return typeof input === "string" ? JSON.stringify(input) : String(input);
}

function invalid(input: MemorySize, why: string): LiveUpdateError {
  return new LiveUpdateError("EINVAL", `invalid memory size ${describe(input)}: ${why}`);
}

function toBytes(input: MemorySize): bigint {
  if (typeof input === "bigint") return input;
  if (typeof input === "number") {
    if (!Number.isSafeInteger(input)) throw invalid(input, "not an integer byte count");
    return BigInt(input);
  }
  if (typeof input !== "string") throw invalid(input, "expected a string, number or bigint");
  const m = SIZE_RE.exec(input);
  if (m === null) throw invalid(input, 'expected a number with an optional unit, e.g. "512 MiB"');
  const [, hex, int, frac, unitRaw] = m;
  const unit = (unitRaw ?? "").toLowerCase();
  const mult = UNITS[unit];
  if (mult === undefined) {
    throw invalid(
      input,
      `unknown unit "${unitRaw}" (use B, KiB, MiB, GiB or TiB; K, M, G, T are binary too)`,
    );
  }
  if (hex !== undefined) return BigInt(`0x${hex}`) * mult;
  const whole = BigInt(int ?? "0") * mult;
  if (frac === undefined) return whole;
  const scale = 10n ** BigInt(frac.length);
  const part = BigInt(frac) * mult;
  if (part % scale !== 0n) throw invalid(input, "not a whole number of bytes");
  return whole + part / scale;
}

/**
 * Parses a machine memory size into bytes.
 *
 * Accepts a byte count (`number` or `bigint`) or a string: a decimal (optionally fractional, as
 * in `"1.5 GiB"`) or `0x` hexadecimal number followed by an optional binary unit — `B`, `KiB`,
 * `MiB`, `GiB`, `TiB` or the single letters `K`, `M`, `G`, `T` (case-insensitive, spaces
 * allowed). Decimal units such as `MB` are rejected as ambiguous.
 *
 * @param input - the size to parse
 * @returns the size in bytes
 * @throws {@link LiveUpdateError} `EINVAL` (message naming the input) when the input does not
 *   parse, is not positive, is not a multiple of 2 MiB (the largest page block), or exceeds
 *   `Number.MAX_SAFE_INTEGER` bytes
 *
 * @category Machine
 */
export function parseSize(input: MemorySize): number {
  const bytes = toBytes(input);
  if (bytes <= 0n) throw invalid(input, "must be positive");
  if (bytes % BigInt(MAX_ORDER_BYTES) !== 0n) throw invalid(input, "must be a multiple of 2 MiB");
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid(input, "too large");
  return Number(bytes);
}

/**
 * Formats a byte count with the largest binary unit that divides it exactly, e.g.
 * `formatSize(536870912) === "512 MiB"`, `formatSize(6144) === "6 KiB"`, `formatSize(100) === "100 B"`.
 *
 * @param bytes - a non-negative byte count
 *
 * @category Machine
 */
export function formatSize(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"] as const;
  let value = bytes;
  let i = 0;
  while (i < units.length - 1 && value !== 0 && value % 1024 === 0) {
    value /= 1024;
    i++;
  }
  return `${value} ${units[i]}`;
}
