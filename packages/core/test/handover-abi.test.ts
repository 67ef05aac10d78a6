// The handover ABI, byte for byte: golden bytes computed by hand from docs/abi.md, and the LUO FDT
// and KHO root read back by independent tools (dtc, libfdt).
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  Machine,
  decodeFdt,
  getProp,
  inspectHandover,
  readFdtString,
  readFdtU64,
  type Kernel,
} from "@luo/core";
import { createTestFile, testHandlerPlugin } from "@luo/core/testing";
import { tempDir } from "./fixtures/machine-helpers.js";
import { assertExternalTools, dtcDecompile, flattenFdt, libfdtDump } from "./helpers/external-fdt.js";
import { dec, enc } from "./helpers/luo.js";

let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => {
  ({ dir, cleanup } = await tempDir("abi"));
});
afterAll(() => cleanup());

/** A small handover: session "s" with files 7 and 9, empty session "e", 2 FLBs. */
async function smallHandover(): Promise<{ machine: Machine; image: string }> {
  const plugin = testHandlerPlugin({ flbs: 2 });
  const k = await new Machine({ memory: "32 MiB" }).boot({ plugins: [plugin] });
  const p = k.spawn("vmm");
  const dev = await p.openLiveUpdate();
  const s = await dev.createSession("s");
  await s.preserveFd(createTestFile(p, "a", enc("A")), 7n);
  await s.preserveFd(createTestFile(p, "b", enc("BB")), 9n);
  await dev.createSession("e");
  const image = join(dir, `small-${Date.now()}.img`);
  expect(await k.kexec({ saveTo: image })).toBeUndefined();
  return { machine: await Machine.load(image), image };
}

function u64(m: Machine, phys: bigint): bigint {
  return m.readU64(phys);
}
function cstr(m: Machine, phys: bigint, size: number): { text: string; rest: number[] } {
  const b = m.peek(phys, size);
  const nul = b.indexOf(0);
  return { text: dec(b.subarray(0, nul)), rest: [...b.subarray(nul)] };
}

describe("handover ABI golden bytes", () => {
  it("lays out the LUO FDT, session block, file block and FLB page exactly as docs/abi.md", async () => {
    const { machine: m } = await smallHandover();
    // KHO root → "LUO" subtree (read with our own FDT reader; dtc cross-checks below).
    const root = decodeFdt(m.peek(m.khoRoot, 4096).slice());
    expect(readFdtString(getProp(root.root, "compatible"))).toBe("kho-v1");
    const luoNode = root.root.children.find((c) => c.name === "LUO")!;
    const luoPhys = readFdtU64(getProp(luoNode, "fdt"));
    const luo = decodeFdt(m.peek(luoPhys, 4096).slice());
    expect(readFdtString(getProp(luo.root, "compatible"))).toBe("luo-v1");
    expect(readFdtU64(getProp(luo.root, "liveupdate-number"))).toBe(1n);
    const sess = luo.root.children.find((c) => c.name === "luo-session")!;
    expect(readFdtString(getProp(sess, "compatible"))).toBe("luo-session-v4");
    const sessionBlock = readFdtU64(getProp(sess, "luo-session-header"));
    const flbNode = luo.root.children.find((c) => c.name === "luo-flb")!;
    expect(readFdtString(getProp(flbNode, "compatible"))).toBe("luo-flb-v1");
    const flbPage = readFdtU64(getProp(flbNode, "luo-flb-header"));

    // Session block: {next = 0, count = 2}, then 80-byte records {name[64], files, nfiles}.
    expect(sessionBlock % 65536n).toBe(0n); // 16-page block, naturally aligned
    expect(u64(m, sessionBlock)).toBe(0n);
    expect(u64(m, sessionBlock + 8n)).toBe(2n);
    const rec0 = sessionBlock + 16n;
    const rec1 = rec0 + 80n;
    expect(cstr(m, rec0, 64).text).toBe("s");
    expect(cstr(m, rec0, 64).rest.every((x) => x === 0)).toBe(true);
    const fileBlock = u64(m, rec0 + 64n);
    expect(u64(m, rec0 + 72n)).toBe(2n);
    expect(cstr(m, rec1, 64).text).toBe("e");
    expect(u64(m, rec1 + 64n)).toBe(0n); // no files: no block
    expect(u64(m, rec1 + 72n)).toBe(0n);
    expect([...m.peek(rec1 + 80n, 80)].every((x) => x === 0)).toBe(true); // nothing after the count

    // File block: 2 pages, {next = 0, count = 2}, then 64-byte records {compatible[48], data, token}.
    expect(fileBlock % 8192n).toBe(0n);
    expect(u64(m, fileBlock)).toBe(0n);
    expect(u64(m, fileBlock + 8n)).toBe(2n);
    for (const [i, token] of [7n, 9n].entries()) {
      const r = fileBlock + 16n + BigInt(i) * 64n;
      const c = cstr(m, r, 48);
      expect(c.text).toBe("luo-test-v1");
      expect(c.rest.every((x) => x === 0)).toBe(true);
      const data = u64(m, r + 48n);
      expect(m.isPreserved(data)).toBe(true);
      expect(u64(m, r + 56n)).toBe(token);
    }

    // FLB page: {pgcnt = 1, count = 2}, then 64-byte records {name[48], data, count}.
    expect(u64(m, flbPage)).toBe(1n);
    expect(u64(m, flbPage + 8n)).toBe(2n);
    for (let i = 0; i < 2; i++) {
      const r = flbPage + 16n + BigInt(i) * 64n;
      expect(cstr(m, r, 48).text).toBe(`liveupdate-test-flb-v${i}`);
      expect(u64(m, r + 48n)).toBe(0xfeedf00dcafebee0n + BigInt(i));
      expect(u64(m, r + 56n)).toBe(2n); // two dependent files
    }
  });

  it("writes FDTs that dtc and libfdt read identically", async () => {
    assertExternalTools();
    const { machine } = await smallHandover();
    const report = inspectHandover(machine);
    const blobs = [report.blobs["kho-root"]!, report.blobs.luo!];
    const [rootDts, luoDts] = dtcDecompile(blobs);
    expect(rootDts).toContain('compatible = "kho-v1";');
    expect(rootDts).toMatch(/LUO \{/);
    expect(luoDts).toContain('compatible = "luo-v1";');
    expect(luoDts).toContain('compatible = "luo-session-v4";');
    expect(luoDts).toContain('compatible = "luo-flb-v1";');
    expect(luoDts).toMatch(
      /liveupdate-number = <0x00 0x01>;|liveupdate-number = \[00 00 00 00 00 00 00 01\];/,
    );
    const [root, luo] = libfdtDump(blobs);
    expect(root!.checkFull).toBe(0);
    expect(luo!.checkFull).toBe(0);
    expect(root!.nodes).toEqual(flattenFdt(decodeFdt(blobs[0]!)).nodes);
    expect(luo!.nodes).toEqual(flattenFdt(decodeFdt(blobs[1]!)).nodes);
    expect(luo!.nodes!.map((n) => n.path)).toEqual(["/", "/luo-session", "/luo-flb"]);
  });

  it("counts live updates in liveupdate-number", async () => {
    const plugin = testHandlerPlugin();
    let k: Kernel = await new Machine({ memory: "16 MiB" }).boot({ plugins: [plugin] });
    for (let n = 1n; n <= 3n; n++) {
      k = (await k.kexec())!;
      expect(k.liveupdate.liveupdateNumber).toBe(n);
    }
  });
});
