// Runs the README's iommufd example exactly as written, so the README cannot drift from the API.
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it, vi } from "vitest";

const here = dirname(fileURLToPath(import.meta.url));

describe("README iommufd example", () => {
  it("runs and prints what the device reads after the live update", async () => {
    const readme = await readFile(join(here, "..", "..", "..", "README.md"), "utf8");
    const marker = readme.indexOf("<!-- readme-iommufd-example");
    expect(marker).toBeGreaterThan(0);
    const start = readme.indexOf("```ts\n", marker) + "```ts\n".length;
    const code = readme.slice(start, readme.indexOf("```", start));
    const file = join(here, "generated", "readme-iommufd.ts");
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, `// generated from README.md by readme.test.ts\n${code}\nexport {};\n`);
    const log = vi.spyOn(console, "log").mockImplementation(() => {});
    try {
      await import(/* @vite-ignore */ file);
      expect(log.mock.calls.map((c) => String(c[0]))).toEqual(["restores HWPTs: true", "guest state"]);
    } finally {
      log.mockRestore();
    }
  });
});
