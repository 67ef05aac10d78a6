// Every `@example` of the API reference, compiled and run: the code blocks of `@example` tags in
// the sources of every workspace package are written next to their package's tests (so they
// resolve `@luo/*` exactly as that package's users would), typechecked together with the
// repository's compiler options, and — unless they register vitest suites — run, with their
// console output captured. An example that stops compiling or throws fails here.
import { mkdir, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { describe, expect, it, vi } from "vitest";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

interface Example {
  /** `packages/core/src/kernel/process.ts#1` */
  readonly name: string;
  readonly code: string;
  /** Where the example is written: `<package>/test/generated/examples/…`. */
  readonly file: string;
}

async function sourceFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await sourceFiles(p)));
    else if (e.name.endsWith(".ts") && !e.name.endsWith(".d.ts")) out.push(p);
  }
  return out;
}

/** The ```ts blocks of the `@example` tags of every doc comment in `text`. */
export function extractExamples(text: string): string[] {
  const out: string[] = [];
  for (const comment of text.match(/\/\*\*[\s\S]*?\*\//g) ?? []) {
    const body = comment
      .slice(3, -2)
      .split("\n")
      .map((l) => l.replace(/^\s*\* ?/, ""))
      .join("\n");
    for (const part of body.split(/^@example\b/m).slice(1)) {
      const block = /```ts\n([\s\S]*?)```/.exec(part.split(/^@(?!example)\w+/m)[0]!);
      if (block) out.push(block[1]!);
    }
  }
  return out;
}

async function collect(): Promise<Example[]> {
  const examples: Example[] = [];
  for (const group of ["packages", "examples"]) {
    for (const pkg of await readdir(join(root, group))) {
      const src = join(root, group, pkg, "src");
      let files: string[];
      try {
        files = await sourceFiles(src);
      } catch {
        continue; // a package without sources
      }
      for (const f of files.sort()) {
        extractExamples(await readFile(f, "utf8")).forEach((code, i) => {
          const rel = relative(src, f).replace(/\.ts$/, "").replace(/[/\\]/g, "-");
          examples.push({
            name: `${relative(root, f)}#${i + 1}`,
            code,
            file: join(root, group, pkg, "test", "generated", "examples", `${rel}-${i + 1}.ts`),
          });
        });
      }
    }
  }
  return examples;
}

const examples = await collect();

/** Examples that register vitest suites cannot run inside a test; they are typechecked only. */
const registersSuites = (code: string): boolean => /\bdescribe\w*\(/.test(code);

describe("@example blocks of the API reference", () => {
  it("exist for every main entry point", () => {
    const where = examples.map((e) => e.name.replace(/#\d+$/, ""));
    for (const f of [
      "packages/core/src/machine/machine.ts",
      "packages/core/src/system/kernel.ts",
      "packages/core/src/kernel/process.ts",
      "packages/core/src/liveupdate/device.ts",
      "packages/core/src/liveupdate/core.ts",
      "packages/core/src/liveupdate/handler.ts",
      "packages/core/src/liveupdate/flb.ts",
      "packages/core/src/plugin/plugin.ts",
      "packages/core/src/inspect/inspect.ts",
      "packages/memfd-handler/src/plugin.ts",
      "packages/memfd-handler/src/memfd/create.ts",
    ]) {
      expect(where, `an @example in ${f}`).toContain(f);
    }
  });

  it("typecheck", async () => {
    for (const dir of new Set(examples.map((e) => dirname(e.file)))) {
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { recursive: true });
    }
    for (const e of examples) {
      await writeFile(e.file, `// generated from ${e.name} by examples.test.ts\n${e.code}\nexport {};\n`);
    }
    const config = ts.readConfigFile(join(root, "tsconfig.base.json"), (p) => ts.sys.readFile(p));
    const { options } = ts.parseJsonConfigFileContent(config.config, ts.sys, root);
    const program = ts.createProgram(
      examples.map((e) => e.file),
      {
        ...options,
        noEmit: true,
        composite: false,
        declaration: false,
        declarationMap: false,
        incremental: false,
      },
    );
    const mine = new Set(examples.map((e) => e.file));
    const errors = ts
      .getPreEmitDiagnostics(program)
      .filter((d) => d.file === undefined || mine.has(d.file.fileName))
      .map((d) => {
        const where = d.file
          ? `${relative(root, d.file.fileName)}:${d.file.getLineAndCharacterOfPosition(d.start ?? 0).line + 1}`
          : "";
        return `${where} ${ts.flattenDiagnosticMessageText(d.messageText, "\n")}`;
      });
    expect(errors).toEqual([]);
  });

  for (const e of examples.filter((x) => !registersSuites(x.code))) {
    it(`runs ${e.name}`, async () => {
      await mkdir(dirname(e.file), { recursive: true });
      await writeFile(e.file, `// generated from ${e.name} by examples.test.ts\n${e.code}\nexport {};\n`);
      const log = vi.spyOn(console, "log").mockImplementation(() => {});
      try {
        await import(/* @vite-ignore */ e.file);
        expect(log.mock.calls.length, "the example prints what it shows").toBeGreaterThan(0);
      } finally {
        log.mockRestore();
      }
    });
  }
});
