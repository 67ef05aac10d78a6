/**
 * Extensions of `luo inspect`: a package that preserves its own records (a file handler's
 * serialized state, an FLB, machine hardware) can teach the inspector to decode them, without
 * the core importing the package. An extension names the hardware loaders an image of a machine
 * with its hardware needs, and turns the validated handover into lines of text and JSON.
 *
 * `luo inspect <image> --with <module>` imports the module (a path, or a package name resolvable
 * from the current directory) and uses its `luoInspect` export (or its default export).
 * Happy path: the image loads with the extensions' loaders, the core report is printed, then one
 * section per extension. Unhappy paths: a module without a valid extension, or an extension that
 * throws, fails the command (exit status 1) with the error.
 *
 * @module
 */
import { LiveUpdateError } from "../errors.js";
import type { HardwareLoader, Machine } from "../machine/index.js";
import type { HandoverReport } from "./inspect.js";

/** What an extension adds to a report. */
export interface InspectSection {
  /** Human-readable lines (printed indented under the extension's name). */
  readonly lines: readonly string[];
  /** JSON-safe data (printed under `extensions.<name>` with `--json`). */
  readonly json: unknown;
}

/** An extension of `luo inspect` (see the module comment). */
export interface InspectExtension {
  /** Section title and JSON key, e.g. `"iommufd"`. */
  readonly name: string;
  /** Loaders for the machine hardware this package defines. */
  readonly hardware?: readonly HardwareLoader[];
  /** Decodes the package's records from the machine, after the core validated the handover. */
  inspect(machine: Machine, report: HandoverReport): InspectSection;
}

/** `EINVAL` unless `ext` is an {@link InspectExtension}; returns it. */
export function checkInspectExtension(ext: unknown, from: string): InspectExtension {
  const e = ext as Partial<InspectExtension> | undefined;
  if (
    typeof e !== "object" ||
    e === null ||
    typeof e.name !== "string" ||
    e.name.length === 0 ||
    typeof e.inspect !== "function" ||
    (e.hardware !== undefined && !Array.isArray(e.hardware))
  ) {
    throw new LiveUpdateError(
      "EINVAL",
      `${from} exports no luo inspect extension (luoInspect: { name, inspect })`,
    );
  }
  return e as InspectExtension;
}
