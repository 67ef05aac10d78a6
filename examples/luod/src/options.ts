/**
 * Checks the options objects of `startLuod` and `connectLuod` as plain JavaScript may pass them:
 * anything malformed is an `EINVAL` `LiveUpdateError` naming the option, never a `TypeError`
 * later on.
 *
 * @module
 */
import { LiveUpdateError } from "@luo/core";

/**
 * What an option may be: a type, a positive integer of milliseconds, a non-negative integer of
 * nanoseconds (number or bigint), or one of some strings.
 */
export type OptionKind = "string" | "function" | "array" | "ms" | "ns" | readonly string[];

function fits(v: unknown, kind: OptionKind): boolean {
  if (Array.isArray(kind)) return kind.includes(v as string);
  switch (kind) {
    case "array":
      return Array.isArray(v);
    case "ms":
      return Number.isSafeInteger(v) && (v as number) > 0;
    case "ns":
      return typeof v === "bigint" ? v >= 0n : Number.isSafeInteger(v) && (v as number) >= 0;
    default:
      return typeof v === kind;
  }
}

function expected(kind: OptionKind): string {
  if (Array.isArray(kind)) return `one of ${kind.map((k) => JSON.stringify(k)).join(", ")}`;
  if (kind === "ns") return "a non-negative integer of nanoseconds";
  return kind === "ms" ? "a positive integer of milliseconds" : `a ${kind}`;
}

/** `EINVAL` unless `options` is an object whose known keys (undefined allowed) fit `spec`. */
export function checkOptions(call: string, options: unknown, spec: Record<string, OptionKind>): void {
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    throw new LiveUpdateError("EINVAL", `${call}: options must be an object`);
  }
  for (const [key, v] of Object.entries(options)) {
    const kind = spec[key];
    if (kind === undefined) {
      throw new LiveUpdateError(
        "EINVAL",
        `${call}: unknown option "${key}" (known: ${Object.keys(spec).join(", ")})`,
      );
    }
    if (v !== undefined && !fits(v, kind)) {
      throw new LiveUpdateError("EINVAL", `${call}: option ${key} must be ${expected(kind)}`);
    }
  }
}
