// What `npm pack` / `pnpm pack` of each publishable workspace package ships, and what its
// manifest promises: only what a user needs (no build-info files), every source map together
// with the sources it points to, every export and bin target present, engines/repository/
// keywords, a "./package.json" export, and tsyringe as a peer wherever the package uses it (two
// copies would be two DI registries) with reflect-metadata only where a source file loads it.
import { execFile } from "node:child_process";
import { readdirSync, readFileSync, existsSync } from "node:fs";
import { dirname, join, posix, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const run = promisify(execFile);
const REPO = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const ROOT_MANIFEST = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as Manifest;

interface Manifest {
  name: string;
  private?: boolean;
  engines?: { node?: string };
  repository?: { type?: string; url?: string; directory?: string };
  keywords?: string[];
  exports?: Record<string, unknown>;
  publishConfig?: { exports?: Record<string, unknown> };
  bin?: Record<string, string>;
  dependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
}

/** Publishable (not private) packages under packages/. */
const packages = readdirSync(join(REPO, "packages"))
  .map((name) => join(REPO, "packages", name))
  .filter((dir) => existsSync(join(dir, "package.json")))
  .map((dir) => ({ dir, manifest: JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as Manifest }))
  .filter((p) => p.manifest.private !== true);

/** Every file path string in an exports map (conditions nested). */
function targets(exports: unknown): string[] {
  if (typeof exports === "string") return [exports];
  if (exports && typeof exports === "object") return Object.values(exports).flatMap(targets);
  return [];
}

/** All source files of a package (src/**), as text. */
function sources(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name));
      else if (e.name.endsWith(".ts")) out.push(readFileSync(join(d, e.name), "utf8"));
    }
  };
  walk(join(dir, "src"));
  return out;
}

describe("published packages", () => {
  it("include @luo/core and @luo/memfd-handler", () => {
    expect(packages.map((p) => p.manifest.name)).toEqual(
      expect.arrayContaining(["@luo/core", "@luo/memfd-handler"]),
    );
  });

  for (const { dir, manifest } of packages) {
    describe(manifest.name, () => {
      it("npm pack ships only dist, src, bin and the manifest; every map with its sources", async () => {
        const { stdout } = await run("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], {
          cwd: dir,
        });
        const files = (JSON.parse(stdout) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map(
          (f) => f.path,
        );
        const shipped = new Set(files);
        expect(files.filter((f) => /tsbuildinfo/.test(f))).toEqual([]);
        expect(
          files.filter(
            (f) => !/^(dist|src|bin)\//.test(f) && !/^(package\.json|README\.md|LICENSE)$/.test(f),
          ),
        ).toEqual([]);
        expect(files.some((f) => f.startsWith("test/"))).toBe(false);
        const maps = files.filter((f) => f.endsWith(".map"));
        expect(maps.length).toBeGreaterThan(0);
        const missing: string[] = [];
        for (const m of maps) {
          const map = JSON.parse(readFileSync(join(dir, m), "utf8")) as { sources: string[] };
          for (const s of map.sources) {
            const target = posix.normalize(posix.join(posix.dirname(m), s));
            if (!shipped.has(target)) missing.push(`${m} → ${target}`);
          }
        }
        expect(missing).toEqual([]);
        const wanted = [
          ...targets(manifest.publishConfig?.exports ?? manifest.exports),
          ...Object.values(manifest.bin ?? {}),
        ].map((t) => posix.normalize(t));
        expect(wanted.filter((t) => !shipped.has(t))).toEqual([]);
      });

      it("declares engines, repository (with directory), keywords and a ./package.json export", () => {
        expect(manifest.engines?.node).toBe(ROOT_MANIFEST.engines?.node);
        expect(manifest.repository?.type).toBe("git");
        expect(manifest.repository?.url).toMatch(/^git\+https:\/\/.+\.git$/);
        expect(manifest.repository?.directory).toBe(relative(REPO, dir).split("\\").join("/"));
        expect(manifest.keywords?.length).toBeGreaterThan(0);
        expect(manifest.exports?.["./package.json"]).toBe("./package.json");
        expect(manifest.publishConfig?.exports?.["./package.json"]).toBe("./package.json");
      });

      it("takes tsyringe as a peer where used and reflect-metadata only where loaded", () => {
        const text = sources(dir);
        const usesTsyringe = text.some((t) => /from "tsyringe"/.test(t));
        const loadsReflect = text.some((t) => /import "reflect-metadata"/.test(t));
        expect(manifest.dependencies?.tsyringe).toBeUndefined();
        if (usesTsyringe) expect(manifest.peerDependencies?.tsyringe).toBeDefined();
        expect(manifest.dependencies?.["reflect-metadata"] !== undefined).toBe(loadsReflect);
      });
    });
  }
});
