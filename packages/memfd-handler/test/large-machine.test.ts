// A production-sized host: a 1 TiB machine whose guest memory (1 GiB in 512 folios of 2 MiB,
// spread over the whole physical range) lives in memfds, live-updated twice — once in this
// process, once through a machine image into a fresh Node process — with the host memory of
// each process bounded by the bytes touched, not by the size of RAM.
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { MAX_ORDER, MAX_ORDER_BYTES, Machine, PAGE_SIZE, type Process } from "@luo/core";
import { memfd, memfdCreate, memfdFile, memfdPages } from "@luo/memfd-handler";
import { kexec } from "./helpers/boot.js";

const run = promisify(execFile);
const HERE = dirname(fileURLToPath(import.meta.url));
const CORE = join(HERE, "..", "..", "core", "dist", "index.js");
const MEMFD = join(HERE, "..", "dist", "index.js");
const MiB = 2 ** 20;
const GiB = 2 ** 30;
const GUESTS = 4;
const FOLIOS_PER_GUEST = 128; // 256 MiB each, 1 GiB in all
const TOUCHED = GUESTS * FOLIOS_PER_GUEST * MAX_ORDER_BYTES;
/**
 * Host memory allowed beyond the bytes touched: the machine's metadata (section tables, the
 * 512 Ki order-9 blocks of the filler below, folio maps) and the test's own buffers. Without
 * sparse RAM the first `new Machine` alone would need 1 TiB.
 */
const SLACK = 384 * MiB;

/** Folio `f` of guest `g`: every 32-bit word is `g << 16 | f`, plus one distinct first word. */
function folioBytes(g: number, f: number): Uint8Array {
  const words = new Uint32Array(MAX_ORDER_BYTES / 4).fill(((g << 16) | f) >>> 0);
  words[0] = 0xfeed0000 + g;
  return new Uint8Array(words.buffer);
}

function verifyGuest(p: Process, fd: number, g: number): void {
  for (let f = 0; f < FOLIOS_PER_GUEST; f++) {
    const got = p.pread(fd, MAX_ORDER_BYTES, f * MAX_ORDER_BYTES);
    if (!Buffer.from(got.buffer, got.byteOffset, got.length).equals(folioBytes(g, f))) {
      throw new Error(`guest ${g} folio ${f} differs`);
    }
  }
}

function rssGrowth(baseline: number): number {
  return process.memoryUsage().rss - baseline;
}

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe("a 1 TiB machine", () => {
  it("live-updates 1 GiB of guest memory spread over 1 TiB, in process and through an image, within host memory ~ bytes touched", async () => {
    globalThis.gc?.();
    const baseline = process.memoryUsage().rss;
    const machine = new Machine({ memory: "1 TiB" });
    expect(machine.memoryBytes).toBe(2 ** 40);
    const k1 = await (async () => {
      const kernel = await machine.boot({ plugins: [memfd({ shmemHuge: "always" })] });
      const proc = kernel.spawn("vmm");
      return { machine, kernel, proc, dev: await proc.openLiveUpdate() };
    })();
    expect(rssGrowth(baseline)).toBeLessThan(64 * MiB);

    // Spread the guests over the whole range: take every free 2 MiB block (the host's other
    // users), then give back evenly spaced ones, which the guests' folios get next.
    const filler: bigint[] = [];
    for (;;) {
      try {
        filler.push(machine.allocPages(MAX_ORDER));
      } catch {
        break;
      }
    }
    expect(filler.length).toBeGreaterThan(machine.totalPages / 512 - 16);
    const stride = Math.floor(filler.length / (GUESTS * FOLIOS_PER_GUEST));
    for (let i = 0; i < GUESTS * FOLIOS_PER_GUEST; i++) machine.freePages(filler[i * stride]!, MAX_ORDER);
    expect(rssGrowth(baseline)).toBeLessThan(SLACK);

    const s = await k1.dev.createSession("guests");
    const fds: number[] = [];
    for (let g = 0; g < GUESTS; g++) {
      const fd = memfdCreate(k1.proc, `guest-${g}`);
      for (let f = 0; f < FOLIOS_PER_GUEST; f++) k1.proc.pwrite(fd, folioBytes(g, f), f * MAX_ORDER_BYTES);
      await s.preserveFd(fd, BigInt(g));
      fds.push(fd);
    }
    const sent = fds.map((fd) => memfdPages(memfdFile(k1.proc, fd)));
    const physs = sent.flatMap((m) => [...m.values()]);
    expect(physs.length).toBe(GUESTS * FOLIOS_PER_GUEST);
    const lowest = physs.reduce((a, b) => (a < b ? a : b));
    const highest = physs.reduce((a, b) => (a > b ? a : b));
    expect(lowest - machine.base).toBeLessThan(BigInt(GiB)); // from the bottom of RAM …
    expect(machine.end - highest).toBeLessThan(BigInt(4 * GiB)); // … to the top
    expect(rssGrowth(baseline)).toBeLessThan(TOUCHED + SLACK);

    // Live update in this process: the filler is scrubbed, the folios come back in place.
    const k2 = await kexec(k1);
    const s2 = await k2.dev.retrieveSession("guests");
    const got: number[] = [];
    for (let g = 0; g < GUESTS; g++) {
      const fd = await s2.retrieveFd(BigInt(g));
      expect(memfdPages(memfdFile(k2.proc, fd))).toEqual(sent[g]);
      expect(
        memfdFile(k2.proc, fd)
          .memfd.folios()
          .every((f) => f.order === MAX_ORDER),
      ).toBe(true);
      verifyGuest(k2.proc, fd, g);
      got.push(fd);
    }
    await s2.finish();
    expect(k2.machine.stats().allocatedPages).toBeLessThan(TOUCHED / PAGE_SIZE + 4096);
    expect(rssGrowth(baseline)).toBeLessThan(TOUCHED + SLACK);

    // Second live update, through an image, into a fresh Node process.
    const s3 = await k2.dev.createSession("guests-again");
    for (let g = 0; g < GUESTS; g++) await s3.preserveFd(got[g]!, BigInt(g));
    const dir = await mkdtemp(join(tmpdir(), "luo-1tib-"));
    dirs.push(dir);
    const image = join(dir, "host.img");
    await k2.kernel.kexec({ saveTo: image });
    const script = join(dir, "next.mjs");
    await writeFile(
      script,
      `import { Machine, MAX_ORDER_BYTES } from ${JSON.stringify(CORE)};
import { memfd, memfdFile, memfdPages } from ${JSON.stringify(MEMFD)};
const before = process.memoryUsage().rss;
const m = await Machine.load(process.argv[2]);
const k = await m.boot({ plugins: [memfd()] });
const p = k.spawn("vmm");
const dev = await p.openLiveUpdate();
const s = await dev.retrieveSession("guests-again");
const out = { memory: m.memoryBytes, pages: [], bad: [] };
for (let g = 0; g < ${GUESTS}; g++) {
  const fd = await s.retrieveFd(BigInt(g));
  out.pages.push([...memfdPages(memfdFile(p, fd))].map(([i, a]) => [i, a.toString()]));
  for (let f = 0; f < ${FOLIOS_PER_GUEST}; f++) {
    const words = new Uint32Array(MAX_ORDER_BYTES / 4).fill(((g << 16) | f) >>> 0);
    words[0] = 0xfeed0000 + g;
    const got = p.pread(fd, MAX_ORDER_BYTES, f * MAX_ORDER_BYTES);
    if (!Buffer.from(got.buffer, got.byteOffset, got.length).equals(new Uint8Array(words.buffer))) out.bad.push([g, f]);
  }
}
await s.finish();
out.unrestored = k.incoming.unrestoredPages;
out.rssGrowth = process.memoryUsage().rss - before;
console.log(JSON.stringify(out));
`,
    );
    const { stdout } = await run(process.execPath, [script, image], { maxBuffer: 64 * MiB });
    const out = JSON.parse(stdout) as {
      memory: number;
      pages: Array<Array<[number, string]>>;
      bad: unknown[];
      unrestored: number;
      rssGrowth: number;
    };
    expect(out.memory).toBe(2 ** 40);
    expect(out.bad).toEqual([]);
    expect(out.unrestored).toBe(0);
    expect(out.pages.map((g) => new Map(g.map(([i, a]) => [i, BigInt(a)])))).toEqual(sent);
    expect(out.rssGrowth).toBeLessThan(TOUCHED + SLACK);
  }, 180_000);
});
