#!/usr/bin/env node
// Makes sure the external tools the tests compare against or drive are installed:
// - `dtc` (device-tree-compiler) and libfdt's Python binding (python3-libfdt, used through
//   /usr/bin/python3, Debian's interpreter): independent FDT readers (scripts/fdt-tools.mjs);
// - Debian's `chromium`: the headless browser the HTML timeline test opens (scripts/browser-tools.mjs).
// As root it installs what is missing with apt-get; otherwise it prints the exact command to run
// and exits non-zero. It never lets tests skip.
import { execFileSync } from "node:child_process";
import { FDT_PACKAGES, missingFdtTools } from "./fdt-tools.mjs";
import { BROWSER_PACKAGES, haveChromium } from "./browser-tools.mjs";

function missingPackages() {
  return [...(missingFdtTools().length > 0 ? FDT_PACKAGES : []), ...(haveChromium() ? [] : BROWSER_PACKAGES)];
}

const missing = missingPackages();
if (missing.length === 0) process.exit(0);

const command = `apt-get update && apt-get install -y ${missing.join(" ")}`;
if (typeof process.getuid === "function" && process.getuid() === 0) {
  console.log(`[ensure-tools] installing ${missing.join(", ")} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  execFileSync("apt-get", ["update"], { stdio: "inherit", env });
  execFileSync("apt-get", ["install", "-y", ...missing], { stdio: "inherit", env });
  const still = missingPackages();
  if (still.length === 0) process.exit(0);
  console.error(`[ensure-tools] apt-get finished but ${still.join(", ")} is still missing`);
  process.exit(1);
}
console.error(`[ensure-tools] the tests need ${missing.join(", ")}. Run as root:\n  sudo sh -c '${command}'`);
process.exit(1);
