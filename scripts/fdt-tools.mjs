// The external FDT readers the tests compare against, in one place: `dtc` (device-tree-compiler)
// and libfdt's Python binding (python3-libfdt) run by Debian's /usr/bin/python3. Shared by the
// tool check (scripts/ensure-tools.mjs) and the FDT test helpers
// (packages/core/test/helpers/external-fdt.ts); types in fdt-tools.d.mts.
import { spawnSync } from "node:child_process";

/** Debian's interpreter: python3-libfdt is installed for it, not for a pyenv python3 on PATH. */
export const SYSTEM_PYTHON = "/usr/bin/python3";

/** The Debian packages that provide the tools. */
export const FDT_PACKAGES = Object.freeze(["device-tree-compiler", "python3-libfdt"]);

/** The shell command that installs them (as root). */
export const INSTALL_COMMAND = `apt-get update && apt-get install -y ${FDT_PACKAGES.join(" ")}`;

/** True when `dtc --version` runs. */
export function haveDtc() {
  return spawnSync("dtc", ["--version"], { stdio: "ignore" }).status === 0;
}

/** True when {@link SYSTEM_PYTHON} can `import libfdt`. */
export function haveLibfdt() {
  return spawnSync(SYSTEM_PYTHON, ["-c", "import libfdt"], { stdio: "ignore" }).status === 0;
}

/** The missing tools, each described for a message; empty when both are installed. */
export function missingFdtTools() {
  return [
    ...(haveDtc() ? [] : ["dtc (device-tree-compiler)"]),
    ...(haveLibfdt() ? [] : [`libfdt for ${SYSTEM_PYTHON} (python3-libfdt)`]),
  ];
}
