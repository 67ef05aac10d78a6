// Runs the root README's "Running a live-update agent" example exactly as written (with the
// package's own name pointed at its sources), so the README cannot drift from the API.
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it, vi } from "vitest";

const here = dirname(fileURLToPath(import.meta.url));

describe("README: Running a live-update agent", () => {
  it("runs and prints what it promises", async () => {
    const readme = await readFile(join(here, "..", "..", "..", "README.md"), "utf8");
    const marker = readme.indexOf("<!-- readme-luod-example");
    expect(marker).toBeGreaterThan(0);
    const start = readme.indexOf("```ts\n", marker) + "```ts\n".length;
    const code = readme
      .slice(start, readme.indexOf("```", start))
      .replace('"@luo/example-luod"', '"../../src/index.js"');
    const file = join(here, "generated", "readme-luod.ts");
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, `// generated from README.md by readme.test.ts\n${code}\nexport {};\n`);
    const log = vi.spyOn(console, "log").mockImplementation(() => {});
    try {
      await import(/* @vite-ignore */ file);
      expect(log.mock.calls.map((c) => String(c[0]))).toEqual([
        "vmm-0: ready",
        "update: preflight → barrier → kexec: the kernel was replaced",
        "guest memory",
        "luod's own session: finished",
      ]);
    } finally {
      log.mockRestore();
    }
  });
});
