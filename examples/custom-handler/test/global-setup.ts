// Vitest global setup of the custom-handler project: compiles this package and @luo/core
// (tsc -b, incremental) so the test that continues a kexec in a fresh Node process runs the
// compiled output, as an installed package would.
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export default function setup(): void {
  const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
  const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
  execFileSync(process.execPath, [tsc, "-b", "examples/custom-handler"], { cwd: root, stdio: "inherit" });
}
