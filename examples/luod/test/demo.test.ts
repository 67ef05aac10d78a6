// The luod demo (`./dev luod-demo`): in-process with its printed story, and the built command's
// exit statuses.
import { execFile } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { runLuodDemo } from "../src/demo.js";

const MAIN = join(dirname(fileURLToPath(import.meta.url)), "..", "dist", "main.js");
const run = promisify(execFile);

describe("luod demo", () => {
  it("takes three VMMs through an update and prints what happened", async () => {
    const lines: string[] = [];
    expect(await runLuodDemo(3, (l) => lines.push(l))).toBe(0);
    const text = lines.join("\n");
    expect(text).toContain('outgoing "vm-2" of vmm-2');
    expect(text).toContain("update: preflight → barrier → kexec: the kernel was replaced");
    for (const i of [0, 1, 2])
      expect(text).toContain(`vmm-${i}: got vm-${i} back, guest RAM intact, finished`);
    expect(text).toContain("own session: finished");
    expect(text).toContain('incoming "vm-1" of vmm-1: done');
  });

  it("the command exits 0, and 2 on bad usage", async () => {
    const ok = await run(process.execPath, [MAIN, "--vmms", "1"]);
    expect(ok.stdout).toContain("vmm-0: got vm-0 back, guest RAM intact, finished");
    const bad = await run(process.execPath, [MAIN, "--vmms", "0"]).catch(
      (e: { code: number; stderr: string }) => e,
    );
    expect((bad as { code: number }).code).toBe(2);
    expect((await run(process.execPath, [MAIN, "--help"])).stdout).toContain("usage: luod-demo");
  });
});
