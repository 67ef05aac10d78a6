// docs/handler-authoring.md cannot drift from the API: its `my-handler.ts` (the handler a third
// party writes from an empty folder) is extracted, typechecked with tsc against the compiled
// declarations (as from an installed package), and run through the conformance kit's cases.
import { execFile } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { handlerConformanceCases, type ConformanceSubject } from "@luo/core/testing";

const here = dirname(fileURLToPath(import.meta.url));
const generated = join(here, "generated");

async function extract(marker: string): Promise<string> {
  const doc = await readFile(join(here, "..", "..", "..", "docs", "handler-authoring.md"), "utf8");
  const at = doc.indexOf(`<!-- doc-test: ${marker} -->`);
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
      `// generated from docs/handler-authoring.md by docs.test.ts\n${await extract("my-handler.ts")}`,
    );
    const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
    const args = ["--noEmit", "--strict", "--module", "nodenext", "--target", "es2022", "--types", "node"];
    await promisify(execFile)(process.execPath, [tsc, ...args, "--skipLibCheck", file], {
      cwd: here,
    }).catch((e: { stdout?: string }) => expect.fail(`tsc: ${e.stdout ?? String(e)}`));
    const mod = (await import(/* @vite-ignore */ file)) as { subject: () => ConformanceSubject<number> };
    const cases = handlerConformanceCases(mod.subject).filter((c) => c.skipReason === undefined);
    expect(cases.length).toBe(10);
    for (const c of cases) await c.run();
  });
});
