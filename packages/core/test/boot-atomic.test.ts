// Boot is atomic: when the next kernel fails before it takes over (a plugin's register throws, a
// missing dependency, malformed plugins, a corrupt handover), the machine keeps the handover
// exactly as it was — same KHO root, same allocations and preserved marks, same bytes in every
// page — and a later boot with working plugins recovers every session, byte and FLB. The same
// through a machine image, in a fresh Node process.
import { createHash } from "node:crypto";
import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { KHO_INCOMING, MACHINE, Machine, definePlugin, type Kernel, type Plugin } from "@luo/core";
import { TEST_FLB_MAGIC, createTestFile, testHandlerPlugin } from "@luo/core/testing";
import { tempDir } from "./fixtures/machine-helpers.js";
import { dec, enc, rejects } from "./helpers/luo.js";

const run = promisify(execFile);
const DIST = join(dirname(fileURLToPath(import.meta.url)), "..", "dist");

const payload = (s: number, f: number): string => `session-${s}-file-${f}-${"y".repeat(97 * f + s)}`;
const SESSIONS = 3;
const FILES = 4;

/** A kernel with SESSIONS sessions of FILES test files each, plus an empty session. */
async function populated(plugin: Plugin): Promise<Kernel> {
  const k = await new Machine({ memory: "16 MiB" }).boot({ plugins: [plugin] });
  const p = k.spawn("vmm");
  const dev = await p.openLiveUpdate();
  for (let s = 0; s < SESSIONS; s++) {
    const session = await dev.createSession(`vm-${s}`);
    for (let f = 0; f < FILES; f++) {
      const fd = createTestFile(p, `s${s}f${f}`, enc(payload(s, f)));
      await session.preserveFd(fd, BigInt(100 * s + f));
      p.close(fd);
    }
  }
  await dev.createSession("empty");
  return k;
}

/** Everything a boot could change: KHO root, allocations, preserved marks, every byte of RAM. */
function fingerprint(m: Machine): string {
  const h = createHash("sha256");
  h.update(`${m.khoRoot}|${JSON.stringify(m.stats())}|`);
  for (const b of m.blocks()) h.update(`${b.phys}:${b.order}:${m.isPreservedRange(b.phys, 1 << b.order)};`);
  h.update(m.peek(m.base, m.memoryBytes));
  return h.digest("hex");
}

/**
 * A plugin that does what a real one might before failing: allocates and writes a page, claims a
 * handed-over folio and scribbles over it, frees another handed-over folio, then throws.
 */
function vandal(name = "vandal"): Plugin {
  return definePlugin({
    name,
    register(ctx) {
      const machine = ctx.container.resolve(MACHINE);
      const incoming = ctx.container.resolve(KHO_INCOMING);
      const fresh = machine.allocPages(2);
      machine.write(fresh, new Uint8Array(4 * 4096).fill(0x5a));
      const handed = machine.blocks().filter((b) => incoming.covers(b.phys, 1));
      incoming.restore(handed[0]!.phys).view.fill(0xaa);
      incoming.restoreFree(handed[1]!.phys);
      machine.allocPages(0); // may land on the folio just freed
      throw new Error("register exploded");
    },
  });
}

/** Boots `machine` with `plugin` and checks every session, byte and the FLB came back. */
async function recoverAll(machine: Machine, plugin: ReturnType<typeof testHandlerPlugin>): Promise<void> {
  await checkAll(await machine.boot({ plugins: [plugin] }), plugin);
}

/** Checks that kernel `k` received every session, byte and the FLB of {@link populated}. */
async function checkAll(k: Kernel, plugin: ReturnType<typeof testHandlerPlugin>): Promise<void> {
  expect(k.liveupdate.liveupdateNumber).toBe(1n);
  const p = k.spawn("vmm");
  const dev = await p.openLiveUpdate();
  for (const flb of plugin.testFlbs) {
    expect((await k.liveupdate.flbs.getIncoming(flb)).magic).toBe(TEST_FLB_MAGIC);
  }
  for (let s = 0; s < SESSIONS; s++) {
    const session = await dev.retrieveSession(`vm-${s}`);
    for (let f = 0; f < FILES; f++) {
      const fd = await session.retrieveFd(BigInt(100 * s + f));
      expect(dec(p.pread(fd, 1 << 16, 0))).toBe(payload(s, f));
    }
    await session.finish();
    await session.close();
  }
  await (await dev.retrieveSession("empty")).close();
  expect(k.incoming!.unrestoredPages).toBe(0);
}

describe("atomic boot", () => {
  it("kexec into a plugin whose register throws, then boot again: every session and byte", async () => {
    const plugin = testHandlerPlugin({ flbs: 1 });
    const k = await populated(plugin);
    const bad = definePlugin({
      name: "bad",
      register() {
        throw new TypeError("no such thing");
      },
    });
    const e = await rejects(k.kexec({ plugins: [plugin, bad] }), "EIO");
    expect(e.message).toBe('EIO: plugin "bad" register failed: no such thing');
    expect(k.halted).toBe(true);
    const m = k.machine;
    expect(m.khoRoot).not.toBe(0n);
    expect(m.isPreserved(m.khoRoot)).toBe(true);
    expect(m.stats().allocatedPages).toBe(m.stats().preservedPages);
    await recoverAll(m, plugin);
  });

  it("a failed boot leaves RAM, allocations, marks and the KHO root exactly as they were", async () => {
    const plugin = testHandlerPlugin({ flbs: 1 });
    const { dir, cleanup } = await tempDir("atomic");
    try {
      const k = await populated(plugin);
      await k.kexec({ saveTo: join(dir, "m.img") });
      const m = k.machine;
      const before = fingerprint(m);
      const e = await rejects(m.boot({ plugins: [plugin, vandal()] }), "EIO");
      expect(e.message).toBe('EIO: plugin "vandal" register failed: register exploded');
      expect(fingerprint(m)).toBe(before);
      // Twice in a row, and with a dependency error before anything is touched.
      await rejects(m.boot({ plugins: [vandal("v2"), plugin] }), "EIO");
      await rejects(
        m.boot({ plugins: [definePlugin({ name: "x", dependencies: ["y"], register() {} })] }),
        "ENOENT",
      );
      expect(fingerprint(m)).toBe(before);
      await recoverAll(m, plugin);
    } finally {
      await cleanup();
    }
  });

  it("a corrupt handover panics and still leaves the machine untouched", async () => {
    const plugin = testHandlerPlugin();
    const k = await populated(plugin);
    const { dir, cleanup } = await tempDir("atomic");
    try {
      await k.kexec({ saveTo: join(dir, "m.img") });
    } finally {
      await cleanup();
    }
    const m = k.machine;
    const root = m.khoRoot;
    m.khoRoot = root + 4096n * 3n; // not the root FDT
    const before = fingerprint(m);
    await rejects(m.boot({ plugins: [plugin] }), "EPANIC");
    expect(fingerprint(m)).toBe(before);
    m.khoRoot = root;
    const k2 = await m.boot({ plugins: [plugin] });
    expect(k2.liveupdate.stats().incomingSessions).toBe(0); // not deserialized before the first open
    const dev = await k2.spawn("vmm").openLiveUpdate();
    await expect(dev.retrieveSession("vm-0")).resolves.toBeDefined();
  });

  it("kexec with plugins that miss a dependency or are malformed fails before anything is frozen", async () => {
    const plugin = testHandlerPlugin({ flbs: 1 });
    const k = await populated(plugin);
    const orphan = definePlugin({ name: "orphan", dependencies: ["nowhere"], register() {} });
    const e = await rejects(k.kexec({ plugins: [plugin, orphan] }), "ENOENT");
    expect(e.message).toBe('ENOENT: plugin "orphan" depends on "nowhere", which is not loaded');
    await rejects(k.kexec({ plugins: [plugin, {}] as unknown as Plugin[] }), "EINVAL");
    expect(k.halted).toBe(false);
    expect(k.machine.khoRoot).toBe(0n);
    // The kernel is untouched: a kexec with its own plugins hands everything over.
    await checkAll((await k.kexec())!, plugin);
  });

  it("through a machine image in a fresh process: a failed boot, then a retry, recovers everything", async () => {
    const { dir, cleanup } = await tempDir("atomic-proc");
    try {
      const image = join(dir, "m.img");
      await (await populated(testHandlerPlugin({ flbs: 1 }))).kexec({ saveTo: image });
      const script = join(dir, "next-kernel.mjs");
      await writeFile(
        script,
        `import { createHash } from "node:crypto";
import { KHO_INCOMING, MACHINE, Machine, definePlugin } from ${JSON.stringify(join(DIST, "index.js"))};
import { testHandlerPlugin } from ${JSON.stringify(join(DIST, "testing", "index.js"))};
const fingerprint = (m) =>
  createHash("sha256").update(String(m.khoRoot)).update(JSON.stringify(m.blocks().map((b) => [String(b.phys), b.order])))
    .update(m.peek(m.base, m.memoryBytes)).digest("hex");
const vandal = definePlugin({
  name: "vandal",
  register(ctx) {
    const machine = ctx.container.resolve(MACHINE);
    const incoming = ctx.container.resolve(KHO_INCOMING);
    machine.write(machine.allocPages(1), new Uint8Array(8192).fill(0x5a));
    const handed = machine.blocks().filter((b) => incoming.covers(b.phys, 1));
    incoming.restore(handed[0].phys).view.fill(0xaa);
    incoming.restoreFree(handed[1].phys);
    throw new Error("register exploded");
  },
});
const plugin = testHandlerPlugin({ flbs: 1 });
const m = await Machine.load(process.argv[2]);
const before = fingerprint(m);
const out = {};
try {
  await m.boot({ plugins: [plugin, vandal] });
} catch (e) {
  out.error = e.message;
}
out.unchanged = fingerprint(m) === before;
const k = await m.boot({ plugins: [plugin] });
const p = k.spawn("vmm");
const dev = await p.openLiveUpdate();
out.flb = String((await k.liveupdate.flbs.getIncoming(plugin.testFlbs[0])).magic);
out.files = [];
for (let s = 0; s < ${SESSIONS}; s++) {
  const session = await dev.retrieveSession("vm-" + s);
  for (let f = 0; f < ${FILES}; f++) {
    const fd = await session.retrieveFd(BigInt(100 * s + f));
    out.files.push(new TextDecoder().decode(p.pread(fd, 1 << 16, 0)));
  }
  await session.finish();
  await session.close();
}
await (await dev.retrieveSession("empty")).close();
out.unrestored = k.incoming.unrestoredPages;
console.log(JSON.stringify(out));
`,
      );
      const { stdout } = await run(process.execPath, [script, image]);
      const out = JSON.parse(stdout) as Record<string, unknown>;
      expect(out).toEqual({
        error: 'EIO: plugin "vandal" register failed: register exploded',
        unchanged: true,
        flb: String(TEST_FLB_MAGIC),
        files: Array.from({ length: SESSIONS * FILES }, (_, i) => payload(Math.floor(i / FILES), i % FILES)),
        unrestored: 0,
      });
    } finally {
      await cleanup();
    }
  });
});
