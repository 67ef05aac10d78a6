// docs/handler-authoring.md and this package's README cannot drift from the API: the guide's
// `my-handler.ts` (the handler a third party writes from an empty folder) is extracted,
// typechecked with tsc against the compiled declarations (as from an installed package) and run
// through the conformance kit's cases; the README example runs.
import { execFile } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it, vi } from "vitest";
import {
  CONFORMANCE_CHECKS,
  handlerConformanceCases,
  type ConformanceSubject,
} from "@luo/core/testing/conformance";

const here = dirname(fileURLToPath(import.meta.url));
const generated = join(here, "generated");

async function extract(path: string, marker: string): Promise<string> {
  const doc = await readFile(path, "utf8");
  const at = doc.indexOf(marker);
  expect(at, `marker for ${marker}`).toBeGreaterThan(0);
  const start = doc.indexOf("```ts\n", at) + "```ts\n".length;
  return doc.slice(start, doc.indexOf("```", start));
}

describe("docs/handler-authoring.md", () => {
  it("my-handler.ts typechecks and passes the conformance kit", async () => {
    await mkdir(generated, { recursive: true });
    const file = join(generated, "my-handler.ts");
    await writeFile(
      file,
      `// generated from docs/handler-authoring.md by docs.test.ts\n${await extract(join(here, "..", "..", "..", "docs", "handler-authoring.md"), "<!-- doc-test: my-handler.ts -->")}`,
    );
    const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
    const args = ["--noEmit", "--strict", "--module", "nodenext", "--target", "es2022", "--types", "node"];
    await promisify(execFile)(process.execPath, [tsc, ...args, "--skipLibCheck", file], {
      cwd: here,
    }).catch((e: { stdout?: string }) => expect.fail(`tsc: ${e.stdout ?? String(e)}`));
    const mod = (await import(/* @vite-ignore */ file)) as { subject: () => ConformanceSubject<number> };
    const cases = handlerConformanceCases(mod.subject).filter((c) => c.skipReason === undefined);
    // Every check applies but the two that need a corrupt() hook or linked FLBs.
    expect(cases.length).toBe(Object.keys(CONFORMANCE_CHECKS).length - 2);
    for (const c of cases) await c.run();
  });
});

describe("examples/custom-handler/README.md", () => {
  it("runs and prints the retrieved counter", async () => {
    await mkdir(generated, { recursive: true });
    const file = join(generated, "readme-example.ts");
    const code = await extract(join(here, "..", "README.md"), "<!-- readme-example");
    await writeFile(file, `// generated from README.md by docs.test.ts\n${code}\nexport {};\n`);
    const log = vi.spyOn(console, "log").mockImplementation(() => {});
    try {
      await import(/* @vite-ignore */ file);
      expect(log.mock.calls).toEqual([[3n]]);
    } finally {
      log.mockRestore();
    }
  });
});
