#!/usr/bin/env node
// Makes sure the external FDT readers the tests compare against are installed: `dtc`
// (device-tree-compiler) and libfdt's Python binding (python3-libfdt, used through
// /usr/bin/python3, Debian's interpreter); which tools and packages, and how they are probed, is
// scripts/fdt-tools.mjs, shared with the tests. As root it installs them with apt-get; otherwise
// it prints the exact command to run and exits non-zero. It never lets tests skip.
import { execFileSync } from "node:child_process";
import { FDT_PACKAGES, INSTALL_COMMAND, missingFdtTools } from "./fdt-tools.mjs";

if (missingFdtTools().length === 0) process.exit(0);

if (typeof process.getuid === "function" && process.getuid() === 0) {
  console.log(`[ensure-tools] installing ${FDT_PACKAGES.join(", ")} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  execFileSync("apt-get", ["update"], { stdio: "inherit", env });
  execFileSync("apt-get", ["install", "-y", ...FDT_PACKAGES], { stdio: "inherit", env });
  if (missingFdtTools().length === 0) process.exit(0);
  console.error("[ensure-tools] apt-get finished but dtc or python3-libfdt is still missing");
  process.exit(1);
}
console.error(
  `[ensure-tools] the tests need dtc and python3-libfdt. Run as root:\n  sudo sh -c '${INSTALL_COMMAND}'`,
);
process.exit(1);
