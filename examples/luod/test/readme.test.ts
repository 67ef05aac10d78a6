// Runs the root README's "Running a live-update agent" example exactly as written (with the
// package's own name pointed at its sources), so the README cannot drift from the API.
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { runReadmeBlock } from "../../../scripts/readme-block.mjs";

const here = dirname(fileURLToPath(import.meta.url));

describe("README: Running a live-update agent", () => {
  it("runs and prints what it promises", async () => {
    const { markerAt, logged } = await runReadmeBlock({
      marker: "<!-- readme-luod-example",
      testDir: here,
      file: "readme-luod.ts",
      replace: [['"@luo/example-luod"', '"../../src/index.js"']],
    });
    expect(markerAt).toBeGreaterThan(0);
    expect(logged).toEqual([
      "vmm-0: ready",
      "update: preflight → barrier → kexec: the kernel was replaced",
      "guest memory",
      "luod's own session: finished",
    ]);
  });
});
