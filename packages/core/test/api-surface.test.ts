// The package boundary: what `@luo/core` exports is exactly what docs/api-surface.md lists and
// describes. Runtime exports are compared both ways with the rows of kind `value`; every row of
// kind `type` must still be exported (checked with the compiler on the package's entry point).
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { describe, expect, it } from "vitest";
import * as core from "@luo/core";
import * as internal from "@luo/core/internal";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

interface Row {
  readonly name: string;
  readonly kind: string;
  readonly description: string;
}

/** The `| \`name\` | kind | description |` rows of the page. */
function parseRows(markdown: string): Row[] {
  const rows: Row[] = [];
  for (const line of markdown.split("\n")) {
    const m = /^\|\s*`([A-Za-z_$][\w$]*)`\s*\|\s*(\w+)\s*\|\s*(.*?)\s*\|\s*$/.exec(line);
    if (m) rows.push({ name: m[1]!, kind: m[2]!, description: m[3]! });
  }
  return rows;
}

const rows = parseRows(await readFile(join(root, "docs", "api-surface.md"), "utf8"));

describe("the public surface of @luo/core", () => {
  it("lists every export once, each with a kind and a description", () => {
    expect(rows.length).toBeGreaterThan(100);
    const names = rows.map((r) => r.name);
    expect(
      names.filter((n, i) => names.indexOf(n) !== i),
      "listed twice",
    ).toEqual([]);
    for (const r of rows) {
      expect(["value", "type"], `kind of ${r.name}`).toContain(r.kind);
      expect(r.description.length, `description of ${r.name}`).toBeGreaterThan(10);
    }
  });

  it("exports at runtime exactly the rows of kind value", () => {
    const listed = rows.filter((r) => r.kind === "value").map((r) => r.name);
    const exported = Object.keys(core);
    expect(
      exported.filter((n) => !listed.includes(n)),
      "exported but not in docs/api-surface.md",
    ).toEqual([]);
    expect(
      listed.filter((n) => !exported.includes(n)),
      "in docs/api-surface.md but not exported",
    ).toEqual([]);
  });

  it("exports every row of kind type, and no other type", () => {
    const entry = join(root, "packages", "core", "src", "index.ts");
    const config = ts.readConfigFile(join(root, "tsconfig.base.json"), (p) => ts.sys.readFile(p));
    const { options } = ts.parseJsonConfigFileContent(config.config, ts.sys, root);
    const program = ts.createProgram([entry], { ...options, noEmit: true });
    const checker = program.getTypeChecker();
    const mod = checker.getSymbolAtLocation(program.getSourceFile(entry)!)!;
    const types = checker
      .getExportsOfModule(mod)
      .map((s) => s.getName())
      .filter((n) => !(n in core));
    const listed = rows.filter((r) => r.kind === "type").map((r) => r.name);
    expect(
      types.filter((n) => !listed.includes(n)),
      "exported type not in the page",
    ).toEqual([]);
    expect(
      listed.filter((n) => !types.includes(n)),
      "listed type not exported",
    ).toEqual([]);
  });

  it("keeps the orchestrator's internals out of it (they are in @luo/core/internal)", () => {
    for (const name of [
      "FileSet",
      "LuoFile",
      "Session",
      "SessionList",
      "FlbState",
      "Registry",
      "LevelMutex",
    ]) {
      expect(name in core, `${name} is not public`).toBe(false);
      expect(name in internal, `${name} is in @luo/core/internal`).toBe(true);
    }
    // BlockChain and readChain are public: handler-owned record sets (the PCI FLB) use them.
    for (const name of ["SessionRecords", "toU64", "toLiveUpdateError"]) {
      expect(name in core, `${name} is not public`).toBe(false);
    }
    const both = Object.keys(internal).filter((n) => n in core);
    expect(both, "internal re-exports nothing public").toEqual([]);
  });
});
