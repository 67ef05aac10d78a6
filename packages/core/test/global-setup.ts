// Vitest global setup for the core project: compiles the workspace once (tsc -b) so tests that
// start child processes (the `luo` CLI, a kexec continued in a fresh Node process) run the real
// compiled output. Incremental, so it is quick when nothing changed.
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export default function setup(): void {
  const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
  const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
  execFileSync(process.execPath, [tsc, "-b", "packages/core"], { cwd: root, stdio: "inherit" });
}
