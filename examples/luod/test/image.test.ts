// Three VMMs across a kexec through luod, with the next kernel, the new luod and the new VMMs in a
// fresh Node process booted from the machine image: nothing travels through the JS heap, so
// the mapping memfd at token 0 is the only way the new luod learns the sessions and owners.
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { host, RAM_BYTES } from "./helpers.js";

const run = promisify(execFile);
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const dist = (pkg: string, file = "index.js"): string => JSON.stringify(join(ROOT, pkg, "dist", file));
let dir: string | undefined;
afterAll(() => (dir ? rm(dir, { recursive: true, force: true }) : undefined));

describe("luod through a machine image in a child process", () => {
  it("hands every session back to its owner; all finished; pages at baseline", async () => {
    dir = await mkdtemp(join(tmpdir(), "luod-image-"));
    const image = join(dir, "m.img");
    const h = await host(3, { saveTo: image });
    const r = await h.luod.update();
    expect(r).toMatchObject({ ok: true, kernel: undefined });
    expect(h.kernel.halted).toBe(true);
    const script = join(dir, "next.mjs");
    await writeFile(
      script,
      `import { Machine } from ${dist("packages/core")};
import { testHandlerPlugin } from ${dist("packages/core", "testing/index.js")};
import { memfd } from ${dist("packages/memfd-handler")};
import { startLuod, connectLuod } from ${dist("examples/luod")};
const plugins = () => [memfd(), testHandlerPlugin()];
const pattern = (i) => { const out = new Uint8Array(${RAM_BYTES}); for (let j = 0; j < out.length; j++) out[j] = (j * 31 + i * 7 + (j >> 12)) & 0xff; return out; };
const k = await (await Machine.load(process.argv[2])).boot({ plugins: plugins() });
const luod = await startLuod(k);
const before = await luod.status();
const vmms = [];
for (const i of [1, 2, 0]) {
  const p = k.spawn("vmm-" + i);
  const c = await connectLuod(p, { name: "vmm-" + i });
  const s = await c.retrieveSession("vm-" + i);
  const ram = await s.retrieveFd(1n);
  const same = Buffer.from(p.pread(ram, ${RAM_BYTES}, 0)).equals(Buffer.from(pattern(i)));
  await c.finishSession(s);
  vmms.push({ name: "vmm-" + i, hello: c.hello.sessions, same });
  c.close();
  p.exit();
}
const after = await luod.status();
luod.exit();
const cold = await new Machine({ memory: "64 MiB" }).boot({ plugins: plugins() });
console.log(JSON.stringify({
  number: String(k.liveupdate.liveupdateNumber),
  before: before.incoming.map((i) => [i.name, i.owner, i.state]),
  kexecsCount: before.kexecsCount,
  vmms,
  after: after.incoming.map((i) => i.state),
  own: after.ownSession,
  stats: k.liveupdate.stats(),
  unrestored: k.incoming.unrestoredPages,
  pages: [k.machine.stats().allocatedPages, k.machine.stats().preservedPages],
  coldPages: [cold.machine.stats().allocatedPages, cold.machine.stats().preservedPages],
}));
`,
    );
    const { stdout } = await run(process.execPath, [script, image]);
    const out = JSON.parse(stdout) as Record<string, unknown>;
    expect(out).toMatchObject({
      number: "1",
      kexecsCount: 1,
      before: [
        ["vm-0", "vmm-0", "waiting"],
        ["vm-1", "vmm-1", "waiting"],
        ["vm-2", "vmm-2", "waiting"],
      ],
      vmms: [
        { name: "vmm-1", hello: ["vm-1"], same: true },
        { name: "vmm-2", hello: ["vm-2"], same: true },
        { name: "vmm-0", hello: ["vm-0"], same: true },
      ],
      after: ["done", "done", "done"],
      own: "finished",
      stats: { outgoingSessions: 0, incomingSessions: 0, ownedFiles: 0 },
      unrestored: 0,
    });
    expect(out.pages).toEqual(out.coldPages);
  });
});
