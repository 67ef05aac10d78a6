// The headless browser the page tests drive, in one place: Debian's chromium at /usr/bin/chromium
// (never a browser build downloaded by a test tool). Shared by scripts/ensure-tools.mjs and the
// browser tests (examples/vmm/test); types in browser-tools.d.mts.
import { spawnSync } from "node:child_process";

/** Where Debian's chromium package puts the browser. */
export const CHROMIUM = "/usr/bin/chromium";

/** The Debian packages that provide it. */
export const BROWSER_PACKAGES = Object.freeze(["chromium"]);

/**
 * Flags for a headless run on a machine without network: no sandbox (root in CI), no GPU, and no
 * background connections (update checks, sync), which a closed network refuses many times over.
 */
export const CHROMIUM_ARGS = Object.freeze([
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
]);

/** True when `chromium --version` runs. */
export function haveChromium() {
  return spawnSync(CHROMIUM, ["--version"], { stdio: "ignore" }).status === 0;
}
