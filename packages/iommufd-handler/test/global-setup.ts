// Vitest global setup of the iommufd-handler project: compiles the package and what it depends on
// (tsc -b) so the `luo inspect --with` test runs the real compiled CLI and extension.
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export default function setup(): void {
  const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
  const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
  execFileSync(process.execPath, [tsc, "-b", "packages/iommufd-handler"], { cwd: root, stdio: "inherit" });
}
