/**
 * The shape check shared by file handlers ({@link defineFileHandler}) and FLBs
 * ({@link defineFlb}): it owns encoding the compatible for its `char compatible[48]` ABI field,
 * checking that every required callback is a function, and making the frozen definition that
 * carries the compatible's bytes. Errors are `EINVAL`, worded per kind (`handler`, `FLB`).
 *
 * @module
 */
import { LiveUpdateError } from "../errors.js";
import { COMPATIBLE_SIZE, encodeFixedString } from "../abi/index.js";

/** What kind of definition is checked, as messages name it. */
export type ShapeKind = "handler" | "FLB";

/**
 * Checks that `spec` has a valid compatible (`<kind> compatible` in messages) and every callback
 * in `required`; returns the compatible's bytes. `EINVAL` otherwise.
 */
export function checkShape(
  spec: { readonly compatible: string },
  required: readonly string[],
  kind: ShapeKind,
): Uint8Array {
  const bytes = encodeFixedString(spec.compatible, COMPATIBLE_SIZE, `${kind} compatible`);
  for (const op of required) {
    if (typeof (spec as Record<string, unknown>)[op] !== "function") {
      throw new LiveUpdateError("EINVAL", `${kind} "${spec.compatible}" lacks the required ${op} callback`);
    }
  }
  return bytes;
}

/** Checks `spec` ({@link checkShape}) and returns a frozen copy with its `compatibleBytes`. */
export function defineShape<S extends { readonly compatible: string }>(
  spec: S,
  required: readonly string[],
  kind: ShapeKind,
): Readonly<S & { compatibleBytes: Uint8Array }> {
  return Object.freeze({ ...spec, compatibleBytes: checkShape(spec, required, kind) });
}
