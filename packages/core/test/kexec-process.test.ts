// Honesty across processes: a kexec written to a machine image continues in a fresh Node process
// (nothing can travel through the JS heap), and `luo inspect` reads the same image.
import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Machine, decodeFdt, getProp, inspectHandover, readFdtU64 } from "@luo/core";
import { createTestFile, testHandlerPlugin } from "@luo/core/testing";
import { tempDir } from "./fixtures/machine-helpers.js";
import { dtcDecompile } from "./helpers/external-fdt.js";
import { enc } from "./helpers/luo.js";

const run = promisify(execFile);
const DIST = join(dirname(fileURLToPath(import.meta.url)), "..", "dist");
/** The `luo` bin as installed (a shim that loads dist/cli/luo.js). */
const CLI = join(DIST, "..", "bin", "luo.js");
let dir: string;
let cleanup: () => Promise<void>;
let image: string;
const payload = Array.from({ length: 5 }, (_, i) => `file-${i}-${"x".repeat(i * 1000)}`);

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir("proc"));
  image = join(dir, "m.img");
  const plugin = testHandlerPlugin({ flbs: 1 });
  const k = await new Machine({ memory: "32 MiB" }).boot({ plugins: [plugin] });
  const p = k.spawn("vmm");
  const dev = await p.openLiveUpdate();
  const s = await dev.createSession("vm-0");
  for (const [i, text] of payload.entries()) {
    const fd = createTestFile(p, `f${i}`, enc(text));
    await s.preserveFd(fd, 100n + BigInt(i));
    p.close(fd);
  }
  await dev.createSession("empty");
  await k.kexec({ saveTo: image });
  expect(k.halted).toBe(true);
});
afterAll(() => cleanup());

describe("kexec into another process", () => {
  it("retrieves the same data in a fresh Node process", async () => {
    const script = join(dir, "next-kernel.mjs");
    await writeFile(
      script,
      `import { Machine } from ${JSON.stringify(join(DIST, "index.js"))};
import { testHandlerPlugin } from ${JSON.stringify(join(DIST, "testing", "index.js"))};
const plugin = testHandlerPlugin({ flbs: 1 });
const k = await (await Machine.load(process.argv[2])).boot({ plugins: [plugin] });
const p = k.spawn("vmm");
const dev = await p.openLiveUpdate();
const s = await dev.retrieveSession("vm-0");
const out = { number: String(k.liveupdate.liveupdateNumber), files: [] };
for (let i = 0; i < 5; i++) {
  const fd = await s.retrieveFd(100n + BigInt(i));
  out.files.push(new TextDecoder().decode(p.pread(fd, 1 << 16, 0)));
}
out.flb = String((await k.liveupdate.flbs.getIncoming(plugin.testFlbs[0])).magic);
await s.finish();
await s.close();
await (await dev.retrieveSession("empty")).close();
out.unrestored = k.incoming.unrestoredPages;
console.log(JSON.stringify(out));
`,
    );
    const { stdout } = await run(process.execPath, [script, image]);
    const out = JSON.parse(stdout);
    expect(out.number).toBe("1");
    expect(out.files).toEqual(payload);
    expect(out.flb).toBe(String(0xfeedf00dcafebee0n));
    expect(out.unrestored).toBe(0);
  });

  it("luo inspect --json matches what was preserved", async () => {
    const { stdout } = await run(process.execPath, [CLI, "inspect", image, "--json"]);
    const r = JSON.parse(stdout);
    expect(r.liveupdateNumber).toBe("1");
    expect(r.subtrees).toEqual(["LUO"]);
    expect(r.sessions.map((s: { name: string }) => s.name)).toEqual(["vm-0", "empty"]);
    expect(r.sessions[0].files.map((f: { token: string }) => f.token)).toEqual([
      "100",
      "101",
      "102",
      "103",
      "104",
    ]);
    expect(r.sessions[0].files.every((f: { compatible: string }) => f.compatible === "luo-test-v1")).toBe(
      true,
    );
    expect(r.sessions[1].files).toEqual([]);
    expect(r.flbs).toEqual([
      { compatible: "liveupdate-test-flb-v0", data: "0xfeedf00dcafebee0", count: "5" },
    ]);
    expect(r.preservedPages).toBeGreaterThan(5 * 4);
  });

  it("luo inspect prints text and writes dtbs that dtc decodes", async () => {
    const out = join(dir, "dtb");
    const { stdout } = await run(process.execPath, [CLI, "inspect", image, "--dtb", out]);
    expect(stdout).toContain('session "vm-0": 5 file(s)');
    expect(stdout).toContain("liveupdate-number: 1");
    const [root, luo] = dtcDecompile([
      await readFile(join(out, "kho-root.dtb")),
      await readFile(join(out, "luo.dtb")),
    ]);
    expect(root).toContain('compatible = "kho-v1";');
    expect(luo).toContain('compatible = "luo-v1";');
  });

  it("luo inspect exits non-zero with the panic message on a corrupt handover", async () => {
    const m = await Machine.load(image);
    // Corrupt the session block's count: find it through an inspection of a second copy.
    const report = inspectHandover(await Machine.load(image));
    expect(report.sessions.length).toBe(2);
    const head = readFdtU64(getProp(decodeFdt(report.blobs.luo!).root.children[0]!, "luo-session-header"));
    m.writeU64(head + 8n, 9999n);
    const bad = join(dir, "bad.img");
    await m.save(bad);
    const r = await run(process.execPath, [CLI, "inspect", bad]).catch(
      (e: { code: number; stderr: string }) => e,
    );
    expect((r as { code: number }).code).toBe(1);
    expect((r as { stderr: string }).stderr).toMatch(
      /kernel panic: session chain: block 0 at 0x[0-9a-f]+ has count 9999/,
    );
  });

  it("luo inspect rejects a file that is not a machine image", async () => {
    const junk = join(dir, "junk.img");
    await writeFile(junk, "not an image");
    const r = await run(process.execPath, [CLI, "inspect", junk]).catch(
      (e: { code: number; stderr: string }) => e,
    );
    expect((r as { code: number }).code).toBe(1);
    expect((r as { stderr: string }).stderr).toMatch(/machine image/);
  });
});
