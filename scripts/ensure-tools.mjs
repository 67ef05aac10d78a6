#!/usr/bin/env node
// Makes sure the external FDT readers the tests compare against are installed: `dtc`
// (device-tree-compiler) and libfdt's Python binding (python3-libfdt, used through
// /usr/bin/python3, Debian's interpreter). As root it installs them with apt-get; otherwise it
// prints the exact command to run and exits non-zero. It never lets tests skip.
import { execFileSync, spawnSync } from "node:child_process";

const PACKAGES = ["device-tree-compiler", "python3-libfdt"];

function haveDtc() {
  return spawnSync("dtc", ["--version"], { stdio: "ignore" }).status === 0;
}
function haveLibfdt() {
  return spawnSync("/usr/bin/python3", ["-c", "import libfdt"], { stdio: "ignore" }).status === 0;
}

if (haveDtc() && haveLibfdt()) process.exit(0);

const command = `apt-get update && apt-get install -y ${PACKAGES.join(" ")}`;
if (typeof process.getuid === "function" && process.getuid() === 0) {
  console.log(`[ensure-tools] installing ${PACKAGES.join(", ")} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  execFileSync("apt-get", ["update"], { stdio: "inherit", env });
  execFileSync("apt-get", ["install", "-y", ...PACKAGES], { stdio: "inherit", env });
  if (haveDtc() && haveLibfdt()) process.exit(0);
  console.error("[ensure-tools] apt-get finished but dtc or python3-libfdt is still missing");
  process.exit(1);
}
console.error(
  `[ensure-tools] the tests need dtc and python3-libfdt. Run as root:\n  sudo sh -c '${command}'`,
);
process.exit(1);
