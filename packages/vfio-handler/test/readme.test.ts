// Runs the README's vfio example exactly as written, so the README cannot drift from the API.
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { runReadmeBlock } from "../../../scripts/readme-block.mjs";

const here = dirname(fileURLToPath(import.meta.url));

describe("README vfio example", () => {
  it("runs and prints the device's live-update capability and the bytes copied during the gap", async () => {
    const { markerAt, logged } = await runReadmeBlock({
      marker: "<!-- vfio-readme-example",
      testDir: here,
      file: "readme-example.ts",
    });
    expect(markerAt).toBeGreaterThan(0);
    expect(logged).toEqual(['{"mode":"continuous","retrieved":true}', "copied while no kernel ran"]);
  });
});
