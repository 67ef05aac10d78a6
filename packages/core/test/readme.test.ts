// Runs the README's "How a live update works here" example exactly as written, so the README
// cannot drift from the API.
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { runReadmeBlock } from "../../../scripts/readme-block.mjs";

const here = dirname(fileURLToPath(import.meta.url));

describe("README example", () => {
  it("runs and prints the retrieved state", async () => {
    const { markerAt, logged } = await runReadmeBlock({
      marker: "<!-- readme-example",
      testDir: here,
      file: "readme-example.ts",
    });
    expect(markerAt).toBeGreaterThan(0);
    expect(logged).toEqual(["handed over 1 session(s)", "guest state", "live update #1 complete"]);
  });
});
