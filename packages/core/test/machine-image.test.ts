import { spawn } from "node:child_process";
import { mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LiveUpdateError, MachineImageError } from "../src/errors.js";
import {
  crc32,
  Machine,
  MACHINE_IMAGE_MAGIC,
  MACHINE_IMAGE_VERSION,
  MAX_ORDER,
  PAGE_SIZE,
} from "../src/machine/index.js";
import { isPoison, pattern, tempDir } from "./fixtures/machine-helpers.js";

const P = BigInt(PAGE_SIZE);
const SRC = join(dirname(fileURLToPath(import.meta.url)), "..", "src");

let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => {
  ({ dir, cleanup } = await tempDir("machine-image"));
});
afterAll(async () => {
  await cleanup();
});

/** A machine with a mix of blocks: preserved, partly preserved, plain, plus freed stale data. */
function sampleMachine(): Machine {
  const m = new Machine({ memory: "16 MiB", base: 0x8000_0000n });
  const blocks: Array<[bigint, number]> = [];
  for (const order of [0, 3, MAX_ORDER, 1, 0, 5, 2]) blocks.push([m.allocPages(order), order]);
  blocks.forEach(([phys, order], i) => m.write(phys, pattern(PAGE_SIZE << order, i + 10)));
  m.markPreserved(blocks[1]![0], 3); // whole block
  m.markPreserved(blocks[5]![0] + 4n * P, 2); // part of an order-5 block
  m.markPreserved(blocks[5]![0] + 31n * P, 0);
  m.markPreserved(blocks[3]![0] + P, 0); // one page of an order-1 block
  const stale = m.allocPages(0);
  m.write(stale, pattern(PAGE_SIZE, 99));
  m.freePages(stale);
  m.khoRoot = blocks[1]![0];
  return m;
}

function pagesOf(m: Machine): Array<{ phys: bigint; preserved: boolean }> {
  const out: Array<{ phys: bigint; preserved: boolean }> = [];
  for (const b of m.blocks()) {
    for (let k = 0; k < 1 << b.order; k++) {
      const phys = b.phys + BigInt(k) * P;
      out.push({ phys, preserved: m.isPreserved(phys) });
    }
  }
  return out;
}

function expectSameMachine(a: Machine, b: Machine): void {
  expect(b.base).toBe(a.base);
  expect(b.memoryBytes).toBe(a.memoryBytes);
  expect(b.khoRoot).toBe(a.khoRoot);
  expect(b.stats()).toEqual(a.stats());
  expect(b.blocks()).toEqual(a.blocks());
  expect(pagesOf(b)).toEqual(pagesOf(a));
  for (const blk of a.blocks()) {
    const size = PAGE_SIZE << blk.order;
    expect(Buffer.from(b.read(blk.phys, size)).equals(a.read(blk.phys, size))).toBe(true);
  }
}

async function expectImageError(path: string, match?: RegExp): Promise<MachineImageError> {
  let err: unknown;
  try {
    await Machine.load(path);
  } catch (e) {
    err = e;
  }
  expect(err, `loading ${path} should fail`).toBeInstanceOf(MachineImageError);
  if (match) expect((err as Error).message).toMatch(match);
  return err as MachineImageError;
}

describe("crc32", () => {
  it("matches the IEEE CRC-32 check values, also incrementally", () => {
    const enc = new TextEncoder();
    expect(crc32(new Uint8Array(0))).toBe(0);
    expect(crc32(enc.encode("123456789"))).toBe(0xcbf43926);
    expect(crc32(enc.encode("56789"), crc32(enc.encode("1234")))).toBe(0xcbf43926);
    expect(crc32(enc.encode("The quick brown fox jumps over the lazy dog"))).toBe(0x414fa339);
  });
});

describe("machine image save/load", () => {
  it("round-trips allocated pages, orders, preserved marks, base, size and KHO root", async () => {
    const m = sampleMachine();
    const path = join(dir, "round.img");
    await m.save(path);
    const loaded = await Machine.load(path);
    expectSameMachine(m, loaded);
    // Pages that were not allocated are not stored: they read as poison.
    for (let pfn = 0; pfn < loaded.totalPages; pfn++) {
      const phys = loaded.base + BigInt(pfn) * P;
      if (!loaded.isAllocated(phys) && !isPoison(loaded.peek(phys, PAGE_SIZE))) {
        expect.fail(`free page 0x${phys.toString(16)} is not poison after load`);
      }
    }
    // The loaded machine is fully functional: scrub keeps preserved pages, frees the rest.
    loaded.scrub();
    const s = loaded.stats();
    expect(s.allocatedPages).toBe(s.preservedPages);
    expect(s.preservedPages).toBe(8 + 4 + 1 + 1);
    // Saving again after a scrub and loading gives the same thing.
    await loaded.save(path);
    expectSameMachine(loaded, await Machine.load(path));
  });

  it("preservedOnly saves the machine as it will look after scrub, without changing it", async () => {
    const m = sampleMachine();
    const before = { stats: m.stats(), blocks: m.blocks() };
    const path = join(dir, "preserved-only.img");
    await m.save(path, { preservedOnly: true });
    expect({ stats: m.stats(), blocks: m.blocks() }).toEqual(before);
    const loaded = await Machine.load(path);
    m.scrub();
    expectSameMachine(m, loaded);
    expect(loaded.stats()).toMatchObject({ allocatedPages: 14, preservedPages: 14 });
    for (let pfn = 0; pfn < loaded.totalPages; pfn++) {
      const phys = loaded.base + BigInt(pfn) * P;
      if (!loaded.isPreserved(phys) && !isPoison(loaded.peek(phys, PAGE_SIZE))) {
        expect.fail(`page 0x${phys.toString(16)} should be poison`);
      }
    }
  });

  it("round-trips an empty machine", async () => {
    const m = new Machine({ memory: "2 MiB" });
    const path = join(dir, "empty.img");
    await m.save(path);
    const l = await Machine.load(path);
    expectSameMachine(m, l);
    expect(isPoison(l.peek(l.base, l.memoryBytes))).toBe(true);
  });

  it("rejects a byte flipped anywhere outside page data, and sampled flips inside it", async () => {
    const m = new Machine({ memory: "4 MiB" });
    const a = m.allocPages(0);
    const b = m.allocPages(1);
    m.write(a, pattern(PAGE_SIZE, 1));
    m.write(b, pattern(2 * PAGE_SIZE, 2));
    m.markPreserved(b + P, 0);
    m.khoRoot = a;
    const good = join(dir, "flip-src.img");
    await m.save(good);
    const img = await readFile(good);
    const dataStart = 64 + 16 + (img.readUInt32LE(64 + 8) as number) + 8 + 16;
    const dataEnd = img.length - 24 - 8;
    expect(dataEnd - dataStart).toBe(3 * PAGE_SIZE);
    const positions: number[] = [];
    for (let i = 0; i < img.length; i++)
      if (i < dataStart || i >= dataEnd || (i - dataStart) % 397 === 0) positions.push(i);
    const bad = join(dir, "flip.img");
    for (const pos of positions) {
      const copy = Buffer.from(img);
      copy[pos] = copy[pos]! ^ (1 << (pos % 8));
      await writeFile(bad, copy);
      await expectImageError(bad);
    }
    expect(positions.length).toBeGreaterThan(200);
  });

  it("rejects truncated images", async () => {
    const m = sampleMachine();
    const good = join(dir, "trunc-src.img");
    await m.save(good);
    const img = await readFile(good);
    const bad = join(dir, "trunc.img");
    for (const len of [
      0,
      1,
      7,
      8,
      63,
      64,
      65,
      100,
      200,
      img.length >> 1,
      img.length - 25,
      img.length - 24,
      img.length - 1,
    ]) {
      await writeFile(bad, img.subarray(0, len));
      await expectImageError(bad, len >= 8 ? /truncated|trailer/ : /truncated|not a machine image/);
    }
    await writeFile(bad, Buffer.concat([img, Buffer.from([0])]));
    await expectImageError(bad, /unexpected bytes/);
  });

  it("rejects foreign files, other versions and other page sizes", async () => {
    const bad = join(dir, "foreign.img");
    await writeFile(bad, pattern(10_000, 5));
    await expectImageError(bad, /bad magic/);
    await writeFile(bad, "#!/bin/sh\necho not a machine\n");
    await expectImageError(bad, /bad magic/);

    const m = new Machine({ memory: "2 MiB" });
    m.allocPages(0);
    const good = join(dir, "version-src.img");
    await m.save(good);
    const img = await readFile(good);
    expect(img.toString("latin1", 0, 8)).toBe(MACHINE_IMAGE_MAGIC);
    const patch = async (edit: (b: Buffer) => void): Promise<void> => {
      const copy = Buffer.from(img);
      edit(copy);
      copy.writeUInt32LE(crc32(copy.subarray(0, 60)), 60); // keep the header checksum valid
      await writeFile(bad, copy);
    };
    await patch((b) => b.write("LUOMACH2", 0, "latin1"));
    await expectImageError(bad, /bad magic/);
    await patch((b) => b.writeUInt32LE(MACHINE_IMAGE_VERSION + 1, 8));
    await expectImageError(bad, /version 2/);
    await patch((b) => b.writeUInt32LE(0, 8));
    await expectImageError(bad, /version 0/);
    await patch((b) => b.writeUInt32LE(16384, 16));
    await expectImageError(bad, /page size 16384/);
    await patch((b) => b.writeBigUInt64LE(3n << 20n, 24));
    await expectImageError(bad, /bad RAM size/);
    await patch((b) => b.writeBigUInt64LE(0n, 32));
    await expectImageError(bad, /bad RAM base/);
  });

  it("reports a missing or unreadable file as MachineImageError with the cause", async () => {
    const e = await expectImageError(join(dir, "does-not-exist.img"), /cannot open/);
    expect((e.cause as NodeJS.ErrnoException).code).toBe("ENOENT");
    const d = join(dir, "a-directory.img");
    await mkdir(d, { recursive: true });
    const e2 = await expectImageError(d);
    expect(e2.cause).toBeDefined();
  });

  it("leaves the destination untouched when saving fails", async () => {
    const path = join(dir, "keep.img");
    const m = sampleMachine();
    await m.save(path);
    const before = await readFile(path);
    // The machine changes while being saved → EBUSY, old image kept, no temp file left.
    const err = await m
      .save(path, {
        onProgress: () => {
          m.allocPages(0);
        },
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LiveUpdateError);
    expect((err as LiveUpdateError).code).toBe("EBUSY");
    expect((await readFile(path)).equals(before)).toBe(true);
    expect((await readdir(dir)).filter((f) => f.startsWith(".keep.img."))).toEqual([]);
    // A failing progress callback aborts the same way.
    const boom = await m
      .save(path, { onProgress: () => Promise.reject(new RangeError("stop")) })
      .catch((e: unknown) => e);
    expect(boom).toBeInstanceOf(LiveUpdateError);
    expect(boom).toMatchObject({ code: "EIO", cause: new RangeError("stop") });
    expect((await readFile(path)).equals(before)).toBe(true);
    // Saving into a missing directory fails with the I/O error.
    const missing = await m.save(join(dir, "no", "such", "dir.img")).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(LiveUpdateError);
    expect(missing).toMatchObject({ code: "ENOENT", cause: { code: "ENOENT" } });
    const isDir = await m.save(dir).catch((e: unknown) => e);
    expect(isDir).toBeInstanceOf(LiveUpdateError);
    expect((await readdir(dir)).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });
});

/** Transpiles the machine sources (and errors.ts) to plain ESM under `out` for child processes. */
async function transpileMachine(out: string): Promise<string> {
  const files = ["errors.ts", ...(await readdir(join(SRC, "machine"))).map((f) => join("machine", f))];
  for (const rel of files.filter((f) => f.endsWith(".ts"))) {
    const source = await readFile(join(SRC, rel), "utf8");
    const js = ts.transpileModule(source, {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
      fileName: rel,
    }).outputText;
    const dest = join(out, rel.replace(/\.ts$/, ".js"));
    await mkdir(dirname(dest), { recursive: true });
    await writeFile(dest, js);
  }
  await writeFile(join(out, "package.json"), '{ "type": "module" }\n');
  return join(out, "machine", "index.js");
}

function runNode(
  script: string,
  args: string[],
  onLine?: (line: string, kill: () => void) => void,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
      for (const line of d.split("\n")) if (line) onLine?.(line, () => child.kill("SIGKILL"));
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

describe("machine image across processes", () => {
  let lib: string;
  let work: string;
  beforeAll(async () => {
    work = join(dir, "proc");
    await mkdir(work, { recursive: true });
    lib = await transpileMachine(join(work, "lib"));
  });

  it("a fresh process boots from the image: preserved bytes survive, everything else is poison", async () => {
    const m = new Machine({ memory: "32 MiB" });
    const keep = m.allocPages(4);
    const gone = m.allocPages(4);
    m.write(keep, pattern(16 * PAGE_SIZE, 7));
    m.write(gone, pattern(16 * PAGE_SIZE, 8));
    m.markPreserved(keep, 4);
    m.khoRoot = keep;
    m.scrub();
    const path = join(work, "kexec.img");
    await m.save(path);
    const script = join(work, "boot.mjs");
    await writeFile(
      script,
      `import { Machine, PAGE_SIZE, crc32 } from ${JSON.stringify(lib)};
const m = await Machine.load(process.argv[2]);
const root = m.khoRoot;
const bytes = m.read(root, 16 * PAGE_SIZE);
const gone = BigInt(process.argv[3]);
const stale = m.peek(gone, 16 * PAGE_SIZE).every((b) => b === 0x6b);
let readFault = "";
try { m.read(gone, 1); } catch (e) { readFault = e.code; }
console.log(JSON.stringify({ root: root.toString(), crc: crc32(bytes), preserved: m.isPreserved(root), stats: m.stats(), stale, readFault }));
`,
    );
    const r = await runNode(script, [path, gone.toString()]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      root: keep.toString(),
      crc: crc32(pattern(16 * PAGE_SIZE, 7)),
      preserved: true,
      stats: { totalPages: 8192, freePages: 8192 - 16, allocatedPages: 16, preservedPages: 16 },
      stale: true,
      readFault: "EFAULT",
    });
  });

  it("a writer killed mid-save leaves the previous image intact", async () => {
    const path = join(work, "victim.img");
    const a = sampleMachine();
    await a.save(path);
    const imageA = await readFile(path);

    const script = join(work, "writer.mjs");
    await writeFile(
      script,
      `import { Machine, MAX_ORDER } from ${JSON.stringify(lib)};
const m = new Machine({ memory: "256 MiB" });
for (let i = 0; i < 48; i++) m.view(m.allocPages(MAX_ORDER), 4096 << MAX_ORDER).fill(i + 1);
for (let i = 0; i < 4096; i++) m.writeU64(m.allocPages(0), BigInt(i));
let reported = false;
await m.save(process.argv[2], {
  async onProgress(written, total) {
    if (!reported && written > 16 * 1024 * 1024) {
      reported = true;
      console.log("writing " + written + " " + total);
      await new Promise((r) => setTimeout(r, 60_000)); // stall mid-write until killed
    }
  },
});
console.log("finished");
`,
    );
    let tempSeen = "";
    let tempSize = 0;
    const r = await runNode(script, [path], (line, kill) => {
      if (!line.startsWith("writing")) return;
      void (async () => {
        const temps = (await readdir(work)).filter((f) => f.startsWith(".victim.img.") && f.endsWith(".tmp"));
        tempSeen = temps[0] ?? "";
        if (tempSeen) tempSize = (await stat(join(work, tempSeen))).size;
        kill();
      })();
    });
    expect(r.signal).toBe("SIGKILL");
    expect(r.stdout).not.toContain("finished");
    expect(tempSeen).not.toBe("");
    expect(tempSize).toBeGreaterThan(16 * 1024 * 1024);

    // The destination still holds image A, byte for byte, and loads as A.
    expect((await readFile(path)).equals(imageA)).toBe(true);
    expectSameMachine(a, await Machine.load(path));

    // The leftover temp file does not get in the way of later saves.
    expect(await readdir(work)).toContain(tempSeen);
    const b = new Machine({ memory: "4 MiB" });
    b.write(b.allocPages(2), pattern(4 * PAGE_SIZE, 3));
    await b.save(path);
    expectSameMachine(b, await Machine.load(path));
  });
});
