// `@luo/core/testing` needs no test runner: a fresh Node process imports it by package name from a
// folder outside the repository whose node_modules holds the built @luo/core and its runtime
// dependencies but no vitest, then runs a live update with the test handler. The same process
// shows that vitest is really out of reach there (`import("vitest")` and the vitest-based
// `@luo/core/testing/conformance` fail to resolve), so the first import proves something.
import { execFile } from "node:child_process";
import { cp, mkdir, realpath, symlink, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tempDir } from "./fixtures/machine-helpers.js";

const run = promisify(execFile);
const CORE = join(dirname(fileURLToPath(import.meta.url)), "..");
const RUNTIME_DEPS = ["eventemitter3", "reflect-metadata", "tsyringe"];
let dir: string;
let cleanup: () => Promise<void>;

beforeAll(async () => {
  // Under the OS temp dir, so no node_modules of the repository is on the resolution path.
  ({ dir, cleanup } = await tempDir("testing-entry"));
  const pkg = join(dir, "node_modules", "@luo", "core");
  await mkdir(pkg, { recursive: true });
  await cp(join(CORE, "package.json"), join(pkg, "package.json"));
  await cp(join(CORE, "dist"), join(pkg, "dist"), { recursive: true }); // copied: no path back to the repo
  for (const dep of RUNTIME_DEPS) {
    await symlink(await realpath(join(CORE, "node_modules", dep)), join(dir, "node_modules", dep), "dir");
  }
});
afterAll(() => cleanup());

const SCRIPT = `
import { Machine } from "@luo/core";
import { TEST_FLB_MAGIC, createTestFile, testHandlerPlugin } from "@luo/core/testing";
const out = {};
const code = (p) => p.then(() => "resolved", (e) => e.code);
out.vitest = await code(import("vitest"));
out.conformance = await import("@luo/core/testing/conformance").then(() => "resolved", (e) => e.code + " " + /'vitest'/.test(e.message));

const plugin = testHandlerPlugin({ flbs: 1 });
const k1 = await new Machine({ memory: "16 MiB" }).boot({ plugins: [plugin] });
const p = k1.spawn("vmm");
const s = await (await p.openLiveUpdate()).createSession("vm");
await s.preserveFd(createTestFile(p, "a", new TextEncoder().encode("hello")), 1n);
plugin.control.fail("freeze", { code: "EAGAIN" });
out.failedKexec = await code(k1.kexec());
plugin.control.clear("freeze");
const k2 = await k1.kexec();
const q = k2.spawn("vmm");
const inc = await (await q.openLiveUpdate()).retrieveSession("vm");
out.content = new TextDecoder().decode(q.pread(await inc.retrieveFd(1n), 16, 0));
await inc.finish();
out.k1 = plugin.controlOf(k1).log.map((c) => c.op + (c.failed ? "!" : ""));
out.k2 = plugin.control.log.map((c) => c.op);
out.flbPreserve = plugin.controlOf(k1).values("flbPreserve").map((v) => String(v - TEST_FLB_MAGIC));
out.flbFinish = plugin.control.values("flbFinish").map((v) => String(v - TEST_FLB_MAGIC));
console.log(JSON.stringify(out));
`;

describe("@luo/core/testing without vitest", () => {
  it("imports and runs a live update in a process where vitest cannot resolve", async () => {
    const script = join(dir, "use-testing.mjs");
    await writeFile(script, SCRIPT);
    const { stdout } = await run(process.execPath, [script], { cwd: dir, env: { PATH: process.env.PATH } });
    expect(JSON.parse(stdout)).toEqual({
      vitest: "ERR_MODULE_NOT_FOUND",
      conformance: "ERR_MODULE_NOT_FOUND true",
      failedKexec: "EAGAIN",
      content: "hello",
      k1: ["flbPreserve", "preserve", "freeze!", "freeze"],
      k2: ["retrieve", "canFinish", "finish", "flbRetrieve", "flbFinish"],
      flbPreserve: ["0"],
      flbFinish: ["0"],
    });
  });
});
