// Runs the README's iommufd example exactly as written, so the README cannot drift from the API.
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { runReadmeBlock } from "../../../scripts/readme-block.mjs";

const here = dirname(fileURLToPath(import.meta.url));

describe("README iommufd example", () => {
  it("runs and prints what the device reads after the live update", async () => {
    const { markerAt, logged } = await runReadmeBlock({
      marker: "<!-- readme-iommufd-example",
      testDir: here,
      file: "readme-iommufd.ts",
    });
    expect(markerAt).toBeGreaterThan(0);
    expect(logged).toEqual(["restores HWPTs: true", "guest state"]);
  });
});
