// The `luo` command line as a user runs it: `--help` exits 0 with the usage on stdout, bad usage
// exits 2 with a message on stderr, and `./dev luo inspect m.img --json` prints only JSON on
// stdout (no pnpm banner, no build output), so it can be piped to `jq`.
import { execFile } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Machine } from "@luo/core";
import { createTestFile, testHandlerPlugin } from "@luo/core/testing";
import { tempDir } from "./fixtures/machine-helpers.js";
import { enc } from "./helpers/luo.js";

const run = promisify(execFile);
const PACKAGE = join(dirname(fileURLToPath(import.meta.url)), "..");
const CLI = join(PACKAGE, "bin", "luo.js");
const REPO = join(PACKAGE, "..", "..");

/** Runs a command; resolves with its exit status and output whether or not it failed. */
async function outcome(
  file: string,
  args: string[],
  cwd = PACKAGE,
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(file, args, { cwd });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

const luo = (...args: string[]): ReturnType<typeof outcome> => outcome(process.execPath, [CLI, ...args]);

let dir: string;
let cleanup: () => Promise<void>;
let image: string;

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir("cli"));
  image = join(dir, "m.img");
  const k = await new Machine({ memory: "8 MiB" }).boot({ plugins: [testHandlerPlugin()] });
  const p = k.spawn("vmm");
  const s = await (await p.openLiveUpdate()).createSession("vm-0");
  await s.preserveFd(createTestFile(p, "f", enc("hello")), 7n);
  await k.kexec({ saveTo: image });
});
afterAll(() => cleanup());

describe("luo CLI", () => {
  it("--help and -h print the usage and exit 0", async () => {
    for (const args of [["--help"], ["-h"], ["inspect", "--help"]]) {
      const r = await luo(...args);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(
        /^usage: luo inspect <machine-image> \[--json\] \[--dtb <dir>\] \[--with <module>\]\.\.\.\n/,
      );
      expect(r.stdout).toContain("--with <module>   load an inspect extension");
      expect(r.stderr).toBe("");
    }
  });

  it("bad usage exits 2 with a message naming the problem", async () => {
    const cases: Array<[string[], string]> = [
      [["inspect", image, "--bogus"], "luo: Unknown option '--bogus'"],
      [["inspect", image, "--dtb"], "luo: Option '--dtb <value>' argument missing"],
      [[], "luo: missing command"],
      [["inspekt", image], 'luo: unknown command "inspekt"'],
      [["inspect"], "luo: inspect needs a machine image"],
      [["inspect", image, "other.img"], 'luo: unexpected argument "other.img"'],
    ];
    for (const [args, message] of cases) {
      const r = await luo(...args);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.stdout).toBe("");
      expect(r.stderr.startsWith(message), r.stderr).toBe(true);
      expect(r.stderr).toContain("usage: luo inspect <machine-image>");
    }
  });

  it("a leading -- is ignored (pnpm run luo -- inspect ...)", async () => {
    const r = await luo("--", "inspect", image, "--json");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).liveupdateNumber).toBe("1");
  });

  it("./dev luo inspect --json prints only JSON on stdout", async () => {
    const r = await outcome(join(REPO, "dev"), ["luo", "inspect", image, "--json"], REPO);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as { liveupdateNumber: string; sessions: Array<{ name: string }> };
    expect(report.liveupdateNumber).toBe("1");
    expect(report.sessions.map((s) => s.name)).toEqual(["vm-0"]);
  });
});
