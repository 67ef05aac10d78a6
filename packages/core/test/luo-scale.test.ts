// Scale and block boundaries across kexec: 2000 sessions × 500 files
// each, and sessions/files straddling the linked-block boundaries of docs/abi.md, with the machine's
// page accounting checked at every step and everything coming back in the order it was created.
// Block geometry: a 16-page session block holds (65536 − 16) / 80 = 819 records, a 2-page file block (8192 − 16) / 64 = 127. So 818 and 819 sessions are
// both one block and 820 is the first session that needs a second one; 127/128 files straddle.
// The value handler (helpers/luo.ts) carries each file's u64 in the record's `data`, so a file
// costs exactly its 64-byte record and the page counts below are the ABI's alone.
import { describe, expect, it } from "vitest";
import { FILE_BLOCKS, Machine, PAGE_SIZE, SESSION_BLOCKS, type Kernel } from "@luo/core";
import { ValueFile, kexec, preservedPages, valuePlugin, VALUE_COMPATIBLE } from "./helpers/luo.js";

const SESSION_BLOCK_PAGES = SESSION_BLOCKS.pages;
const FILE_BLOCK_PAGES = FILE_BLOCKS.pages;
const sessionBlocks = (n: number) => Math.ceil(n / SESSION_BLOCKS.perBlock);
const fileBlocks = (n: number) => Math.ceil(n / FILE_BLOCKS.perBlock);
/** Pages the ABI preserves for `sessions` sessions with `files[i]` files each. */
const abiPages = (files: readonly number[]) =>
  sessionBlocks(files.length) * SESSION_BLOCK_PAGES +
  files.reduce((n, f) => n + fileBlocks(f) * FILE_BLOCK_PAGES, 0);

const value = (s: number, f: number) => (BigInt(s) << 32n) | (BigInt(f) * 7919n + 0xabcn);
const sname = (s: number) => `scale-${s}`;

describe("geometry assumed by these tests", () => {
  it("819 sessions per 16-page block, 127 files per 2-page block", () => {
    expect(SESSION_BLOCKS.perBlock).toBe(Math.floor((16 * PAGE_SIZE - 16) / 80));
    expect(SESSION_BLOCKS.perBlock).toBe(819);
    expect(SESSION_BLOCK_PAGES * PAGE_SIZE).toBe(65536);
    expect(FILE_BLOCKS.perBlock).toBe(127);
    expect(FILE_BLOCK_PAGES * PAGE_SIZE).toBe(8192);
  });
});

/**
 * Creates `files.length` sessions (session i with files[i] value files, fds closed right after
 * preserve), checking the preserved-page count grows exactly by the ABI blocks; kexecs; checks
 * order and contents in the next kernel, retrieving files in reverse order; finishes everything
 * and checks that every handed-over page came back.
 */
async function roundTrip(files: readonly number[], memory: string): Promise<Kernel> {
  const machine = new Machine({ memory });
  const k1 = await machine.boot({ plugins: [valuePlugin] });
  const p = k1.spawn("vmm");
  const dev = await p.openLiveUpdate();
  const baseline = preservedPages(machine);
  for (let s = 0; s < files.length; s++) {
    const h = await dev.createSession(sname(s));
    for (let f = 0; f < files[s]!; f++) {
      const fd = p.installFile(new ValueFile(value(s, f)));
      await h.preserveFd(fd, f);
      p.close(fd);
    }
  }
  expect(preservedPages(machine) - baseline).toBe(abiPages(files));
  expect(k1.liveupdate.stats()).toMatchObject({
    outgoingSessions: files.length,
    ownedFiles: files.reduce((a, b) => a + b, 0),
  });

  const k2 = await kexec(k1);
  // Before the first open: the session blocks and every file block are still handed over.
  const before = k2.incoming!.unrestoredPages;
  const q = k2.spawn("vmm");
  const dev2 = await q.openLiveUpdate();
  // Deserialization frees the session blocks (and only them).
  expect(before - k2.incoming!.unrestoredPages).toBe(sessionBlocks(files.length) * SESSION_BLOCK_PAGES);
  // Handover order = creation order, sessions and files alike.
  const incoming = [...k2.liveupdate.incomingSessions.values()];
  expect(incoming.map((s) => s.name)).toEqual(files.map((_, s) => sname(s)));
  for (let s = 0; s < files.length; s++) {
    const list = incoming[s]!.fileCount === 0 ? [] : incoming[s]!.files.list();
    expect(list.length).toBe(files[s]);
    for (let f = 0; f < list.length; f++) {
      if (list[f]!.token !== BigInt(f) || list[f]!.compatible !== VALUE_COMPATIBLE) {
        expect.fail(`session ${s} file ${f}: token ${list[f]!.token} (${list[f]!.compatible})`);
      }
    }
  }
  let unrestored = k2.incoming!.unrestoredPages;
  for (let s = 0; s < files.length; s++) {
    const h = await dev2.retrieveSession(sname(s));
    for (let f = files[s]! - 1; f >= 0; f--) {
      const fd = await h.retrieveFd(f);
      const got = (q.file(fd) as ValueFile).value;
      if (got !== value(s, f)) expect.fail(`session ${s} token ${f}: value ${got} != ${value(s, f)}`);
      q.close(fd);
    }
    await h.finish();
    // FINISH frees exactly this session's file blocks.
    expect(unrestored - k2.incoming!.unrestoredPages).toBe(fileBlocks(files[s]!) * FILE_BLOCK_PAGES);
    unrestored = k2.incoming!.unrestoredPages;
    await h.close();
  }
  expect(k2.incoming!.unrestoredPages).toBe(0);
  expect(k2.liveupdate.stats()).toEqual({ outgoingSessions: 0, incomingSessions: 0, ownedFiles: 0 });
  return k2;
}

/** A kernel with the value handler and `n` empty outgoing sessions; `baseline` is before them. */
async function withSessions(n: number) {
  const machine = new Machine({ memory: "16 MiB" });
  const k1 = await machine.boot({ plugins: [valuePlugin] });
  const p = k1.spawn("vmm");
  const dev = await p.openLiveUpdate();
  const baseline = preservedPages(machine);
  const handles = [];
  for (let s = 0; s < n; s++) handles.push(await dev.createSession(sname(s)));
  return { machine, k1, p, dev, baseline, handles };
}

describe("block boundaries across kexec", () => {
  it("818 and 819 empty sessions fit one session block; 820 need a second one", async () => {
    for (const n of [818, 819, 820]) await roundTrip(new Array<number>(n).fill(0), "16 MiB");
  });

  it("127 files fill one file block exactly; 128 need a second one (also in 820 sessions)", async () => {
    await roundTrip([127, 128, 0, 1, 254, 255], "16 MiB");
    // 820 sessions: full and overflowing file chains on both sides of the session-block boundary
    // (the last session lives in the second session block).
    const files = Array.from({ length: 820 }, (_, i) =>
      i === 0 || i === 818 ? 127 : i === 1 || i === 819 ? 128 : i % 100 === 0 ? 1 : 0,
    );
    await roundTrip(files, "16 MiB");
  });

  it("shrinks the chains back when sessions and files go away, never leaving an empty block", async () => {
    const { machine, k1, p, baseline, handles } = await withSessions(820);
    expect(preservedPages(machine) - baseline).toBe(2 * SESSION_BLOCK_PAGES);
    const last = handles.pop()!;
    await last.close();
    expect(preservedPages(machine) - baseline).toBe(SESSION_BLOCK_PAGES);
    // Files: 128 in session 0 → 2 blocks; closing the session frees both.
    for (let f = 0; f < 128; f++) {
      const fd = p.installFile(new ValueFile(BigInt(f)));
      await handles[0]!.preserveFd(fd, f);
      p.close(fd);
    }
    expect(preservedPages(machine) - baseline).toBe(SESSION_BLOCK_PAGES + 2 * FILE_BLOCK_PAGES);
    await handles[0]!.close();
    expect(preservedPages(machine) - baseline).toBe(SESSION_BLOCK_PAGES);
    // The 818 left fit one block; the handover carries exactly those.
    const k2 = await kexec(k1);
    const dev2 = await k2.spawn("vmm").openLiveUpdate();
    expect(k2.liveupdate.stats().incomingSessions).toBe(818);
    expect(k2.liveupdate.incomingSessions.get(sname(0))).toBeUndefined();
    expect(k2.liveupdate.incomingSessions.get(sname(819))).toBeUndefined();
    expect(k2.liveupdate.incomingSessions.get(sname(818))).toBeDefined();
    dev2.close();
  });

  it("closes in the middle of the list leave holes that the reboot closes: creation order, no empty block", async () => {
    const { machine, k1, p, dev, baseline, handles } = await withSessions(1000);
    // Files in sessions on both sides of the hole, so their records move with compaction.
    for (const s of [5, 950]) {
      const fd = p.installFile(new ValueFile(value(s, 0)));
      await handles[s]!.preserveFd(fd, 0);
      p.close(fd);
    }
    for (let s = 100; s < 400; s++) await handles[s]!.close();
    const live = handles.map((_, s) => s).filter((s) => s < 100 || s >= 400);
    // New sessions go after the hole, in creation order.
    await dev.createSession(sname(1000));
    live.push(1000);
    // Until the reboot the holes keep their block (300 holes are under half of 1001 slots).
    expect(preservedPages(machine) - baseline).toBe(2 * SESSION_BLOCK_PAGES + 2 * FILE_BLOCK_PAGES);
    const k2 = await kexec(k1);
    const before = k2.incoming!.unrestoredPages;
    const q = k2.spawn("vmm");
    const dev2 = await q.openLiveUpdate();
    // 701 sessions: one session block is handed over (the second was emptied by compaction).
    expect(before - k2.incoming!.unrestoredPages).toBe(SESSION_BLOCK_PAGES);
    expect([...k2.liveupdate.incomingSessions.values()].map((s) => s.name)).toEqual(live.map(sname));
    for (const s of [5, 950]) {
      const h = await dev2.retrieveSession(sname(s));
      expect((q.file(await h.retrieveFd(0)) as ValueFile).value).toBe(value(s, 0));
    }
  });
});

describe("scale across kexec", () => {
  it("2000 sessions × 500 files each survive kexec and come back in order", async () => {
    const files = new Array<number>(2000).fill(500);
    const t0 = performance.now();
    await roundTrip(files, "160 MiB");
    const ms = performance.now() - t0;
    console.log(`2000 sessions × 500 files round trip: ${ms.toFixed(0)} ms`);
  });
});
