// 2 MiB folios in shmem memfds (huge: "always" / "within_size"): which folios a file gets,
// contents and holes, punch-hole and truncate splitting a 2 MiB folio, seals, the THP fallback,
// and live update handing each 2 MiB folio over as one order-9 block at the same physical
// address (zero copy), with page accounting back to a fresh boot after FINISH.
import { describe, expect, it } from "vitest";
import {
  F_ADD_SEALS,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  MAX_ORDER,
  MAX_ORDER_PAGES,
  Machine,
  PAGE_SIZE,
  type Process,
} from "@luo/core";
import {
  F_SEAL_GROW,
  F_SEAL_WRITE,
  MEMFD_FS,
  MEMFD_LUO_SER,
  memfd,
  memfdCreate,
  memfdFile,
  memfdMmap,
  memfdPages,
  type ShmemHuge,
} from "@luo/memfd-handler";
import { boot, bytes, firstDifference, kexec } from "./helpers/boot.js";
import { code, rejects } from "./helpers/errno.js";

const MiB = 1024 * 1024;
const HUGE = 2 * MiB;

/** The folios of `fd` as [page index, order] pairs, in file order. */
function layout(p: Process, fd: number): Array<[number, number]> {
  return memfdFile(p, fd)
    .memfd.folios()
    .map((f) => [f.index, f.order]);
}

function create(p: Process, huge: ShmemHuge, name = "guest"): number {
  return memfdCreate(p, name, { huge, allowSealing: true });
}

describe("memfd with 2 MiB folios", () => {
  it("always: 2 MiB folios wherever a 2 MiB range has no 4 KiB folio, even past the end", async () => {
    const { proc: p, machine } = await boot();
    const fd = create(p, "always");
    const before = machine.stats().allocatedPages;
    p.pwrite(fd, bytes(100, 1), 0);
    expect(layout(p, fd)).toEqual([[0, MAX_ORDER]]);
    expect(machine.stats().allocatedPages - before).toBe(MAX_ORDER_PAGES);
    // Physically one naturally aligned order-9 block.
    const [phys] = memfdPages(memfdFile(p, fd)).values();
    expect(phys! % BigInt(HUGE)).toBe(0n);
    p.pwrite(fd, bytes(3 * MiB, 2), MiB);
    expect(layout(p, fd)).toEqual([
      [0, MAX_ORDER],
      [MAX_ORDER_PAGES, MAX_ORDER],
    ]);
    expect(memfdFile(p, fd).memfd.folioCount).toBe(2);
    expect(firstDifference(p.pread(fd, 3 * MiB, MiB), bytes(3 * MiB, 2))).toBe(-1);
    expect(firstDifference(p.pread(fd, 100, 0), bytes(100, 1))).toBe(-1);
  });

  it("within_size: 2 MiB folios only for ranges inside the size, 4 KiB at the tail", async () => {
    const { proc: p } = await boot();
    const fd = create(p, "within_size");
    p.pwrite(fd, bytes(HUGE + 3 * PAGE_SIZE, 3), 0);
    expect(layout(p, fd)).toEqual([
      [0, MAX_ORDER],
      [512, 0],
      [513, 0],
      [514, 0],
    ]);
    // Growing with ftruncate allocates nothing; fallocate fills by the new size.
    p.ftruncate(fd, 3 * HUGE);
    p.fallocate(fd, 0, 0, 3 * HUGE);
    const l = layout(p, fd);
    // Unit 1 keeps its 4 KiB folios (no collapse), unit 2 gets a 2 MiB folio.
    expect(l.filter(([, o]) => o === MAX_ORDER).map(([i]) => i)).toEqual([0, 1024]);
    expect(l.filter(([, o]) => o === 0).length).toBe(512);
    expect(firstDifference(p.pread(fd, HUGE + 3 * PAGE_SIZE, 0), bytes(HUGE + 3 * PAGE_SIZE, 3))).toBe(-1);
    // fallocate with KEEP_SIZE past the end: judged by the current size, so 4 KiB folios.
    p.fallocate(fd, FALLOC_FL_KEEP_SIZE, 3 * HUGE, HUGE);
    expect(
      layout(p, fd)
        .filter(([i]) => i >= 1536)
        .every(([, o]) => o === 0),
    ).toBe(true);
  });

  it("never (the default) keeps 4 KiB folios; the plugin option sets the kernel-wide default", async () => {
    const { proc: p } = await boot();
    const fd = memfdCreate(p, "plain");
    p.pwrite(fd, bytes(HUGE, 4), 0);
    expect(layout(p, fd).every(([, o]) => o === 0)).toBe(true);
    const k = await new Machine({ memory: "64 MiB" }).boot({ plugins: [memfd({ shmemHuge: "always" })] });
    const q = k.spawn("vmm");
    const fd2 = memfdCreate(q, "x");
    q.pwrite(fd2, bytes(10, 5), 0);
    expect(layout(q, fd2)).toEqual([[0, MAX_ORDER]]);
    expect(layout(q, memfdCreate(q, "y", { huge: "never" }))).toEqual([]);
    expect(code(() => memfdCreate(q, "z", { huge: "sometimes" as ShmemHuge }))).toBe("EINVAL");
    expect(() => memfd({ shmemHuge: "yes" as ShmemHuge })).toThrow(/EINVAL|shmemHuge/);
  });

  it("holes read as zeros; reads across 2 MiB and 4 KiB folios and holes are byte exact", async () => {
    const { proc: p } = await boot();
    const fd = create(p, "always");
    p.pwrite(fd, bytes(PAGE_SIZE, 6), 3 * HUGE + 5 * PAGE_SIZE); // unit 3: a 2 MiB folio
    expect(layout(p, fd)).toEqual([[3 * 512, MAX_ORDER]]);
    const all = p.pread(fd, 4 * HUGE, 0);
    expect(all.length).toBe(3 * HUGE + 6 * PAGE_SIZE);
    expect(all.subarray(0, 3 * HUGE + 5 * PAGE_SIZE).every((b) => b === 0)).toBe(true);
    expect(firstDifference(all.subarray(3 * HUGE + 5 * PAGE_SIZE), bytes(PAGE_SIZE, 6))).toBe(-1);
    // A mapping sees the same bytes and stores through to the same folio.
    const map = memfdMmap(p, fd, { length: 4 * HUGE, write: true });
    map.write(3 * HUGE, Uint8Array.of(7));
    expect(p.pread(fd, 1, 3 * HUGE)[0]).toBe(7);
    expect(layout(p, fd)).toEqual([[3 * 512, MAX_ORDER]]);
  });

  it("punching part of a 2 MiB folio splits it: only the pages in the hole are freed", async () => {
    const { proc: p, kernel } = await boot();
    const fs = kernel.container.resolve(MEMFD_FS);
    const fd = create(p, "always");
    const data = bytes(2 * HUGE, 8);
    p.pwrite(fd, data, 0);
    const [first] = memfdPages(memfdFile(p, fd)).values();
    expect(fs.pagesInUse).toBe(1024);
    // Punch [1 MiB + 100, 1 MiB + 3 pages + 100): two whole pages freed, two partly zeroed.
    const start = MiB + 100;
    const end = start + 3 * PAGE_SIZE;
    p.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, start, end - start);
    expect(fs.pagesInUse).toBe(1024 - 2);
    const l = layout(p, fd);
    expect(l.filter(([, o]) => o === MAX_ORDER)).toEqual([[512, MAX_ORDER]]);
    expect(l.filter(([, o]) => o === 0).length).toBe(510);
    // The split pages stay where they were (no copy).
    const pages = memfdPages(memfdFile(p, fd));
    expect(pages.get(0)).toBe(first);
    expect(pages.get(511)).toBe(first! + 511n * BigInt(PAGE_SIZE));
    expect(pages.has(257)).toBe(false);
    expect(pages.has(258)).toBe(false);
    const expected = data.slice();
    expected.fill(0, start, end);
    expect(firstDifference(p.pread(fd, 2 * HUGE, 0), expected)).toBe(-1);
    // Punching a whole 2 MiB folio frees it in one piece.
    p.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, HUGE, HUGE);
    expect(fs.pagesInUse).toBe(510);
    // Truncating into the split unit frees the pages past the end and zeroes the last one's tail.
    p.ftruncate(fd, 10 * PAGE_SIZE + 1);
    expect(fs.pagesInUse).toBe(11);
    p.ftruncate(fd, 0);
    expect(fs.pagesInUse).toBe(0);
  });

  it("truncating into a 2 MiB folio splits it; seals and the frozen size apply as for 4 KiB", async () => {
    const { proc: p, kernel, dev } = await boot();
    const fs = kernel.container.resolve(MEMFD_FS);
    const fd = create(p, "always");
    p.pwrite(fd, bytes(HUGE, 9), 0);
    p.ftruncate(fd, MiB);
    expect(fs.pagesInUse).toBe(256);
    expect(firstDifference(p.pread(fd, 2 * MiB, 0), bytes(MiB, 9))).toBe(-1);
    p.ftruncate(fd, 4 * MiB); // grow again: the old tail reads as zeros
    expect(p.pread(fd, MiB, MiB).every((b) => b === 0)).toBe(true);

    const sealed = create(p, "always", "sealed");
    p.pwrite(sealed, bytes(HUGE, 10), 0);
    p.fcntl(sealed, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW);
    expect(code(() => p.pwrite(sealed, Uint8Array.of(1), 0))).toBe("EPERM");
    expect(code(() => p.fallocate(sealed, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, PAGE_SIZE))).toBe(
      "EPERM",
    );
    expect(code(() => p.ftruncate(sealed, 2 * HUGE))).toBe("EPERM");
    expect(layout(p, sealed)).toEqual([[0, MAX_ORDER]]);

    const s = await dev.createSession("vm");
    await s.preserveFd(fd, 1n);
    expect(code(() => p.ftruncate(fd, HUGE))).toBe("EPERM");
    expect(code(() => p.fallocate(fd, 0, 0, 8 * MiB))).toBe("EPERM");
    expect(code(() => p.pwrite(fd, Uint8Array.of(1), 4 * MiB))).toBe("EPERM");
    p.pwrite(fd, Uint8Array.of(0x5a), 3 * MiB); // inside the file: lands in the preserved folio
    expect(p.pread(fd, 1, 3 * MiB)[0]).toBe(0x5a);
  });

  it("falls back to 4 KiB folios when no 2 MiB block is free (always), ENOMEM for hugetlb", async () => {
    const machine = new Machine({ memory: "8 MiB" });
    const { proc: p } = await boot(machine);
    // Take every free 2 MiB block, keeping the 4 KiB ones.
    const held: bigint[] = [];
    for (;;) {
      try {
        held.push(machine.allocPages(MAX_ORDER));
      } catch {
        break;
      }
    }
    expect(held.length).toBeGreaterThan(0);
    expect(machine.stats().freePages).toBeGreaterThan(0); // the boot left some 4 KiB pages
    const fd = create(p, "always");
    p.pwrite(fd, bytes(PAGE_SIZE, 11), 0);
    expect(layout(p, fd)).toEqual([[0, 0]]);
    const tlb = memfdCreate(p, "tlb", { hugetlb: true });
    p.ftruncate(tlb, HUGE);
    const map = memfdMmap(p, tlb, { length: HUGE, write: true });
    expect(code(() => map.write(0, Uint8Array.of(1)))).toBe("ENOMEM");
    for (const h of held) machine.freePages(h, MAX_ORDER);
  });

  it("live update hands each 2 MiB folio over as one order-9 block, restored in place (zero copy)", async () => {
    const k1 = await boot(new Machine({ memory: "64 MiB" }));
    const { proc: p } = k1;
    const s = await k1.dev.createSession("vm");
    const fd = create(p, "within_size");
    const data = bytes(3 * HUGE + 5 * PAGE_SIZE, 12);
    p.pwrite(fd, data, 0);
    p.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, HUGE + PAGE_SIZE, PAGE_SIZE); // split unit 1
    // Unit 3 holds the 4 KiB tail (filled with 4 KiB folios at preserve); unit 4 is a hole inside
    // the size, filled at preserve with a 2 MiB folio.
    p.ftruncate(fd, 5 * HUGE);
    p.lseek(fd, 77, 0);
    await s.preserveFd(fd, 1n);
    const sent = memfdPages(memfdFile(p, fd));
    const l1 = layout(p, fd);
    expect(l1.filter(([, o]) => o === MAX_ORDER).map(([i]) => i)).toEqual([0, 1024, 2048]);
    // Unit 1 was split (its punched page is refilled with a 4 KiB folio at preserve).
    expect(l1.filter(([, o]) => o === 0).length).toBe(512 + 512);
    // One folio record per folio: 3 + 1024, not 5 × 512.
    const ser = k1.kernel.liveupdate
      .handingOver()
      .sessions.find((x) => x.name === "vm")!
      .files.find((f) => f.token === 1n)!.data;
    expect(k1.machine.readU64(ser + BigInt(MEMFD_LUO_SER.nrFolios))).toBe(1027n);
    p.pwrite(fd, Uint8Array.of(0xee), 3 * HUGE + 1); // after preserve: captured at reboot

    const k2 = await kexec(k1);
    const s2 = await k2.dev.retrieveSession("vm");
    const fd2 = await s2.retrieveFd(1n);
    expect(memfdPages(memfdFile(k2.proc, fd2))).toEqual(sent);
    expect(layout(k2.proc, fd2)).toEqual(l1);
    const expected = new Uint8Array(5 * HUGE);
    expected.set(data);
    expected.fill(0, HUGE + PAGE_SIZE, HUGE + 2 * PAGE_SIZE);
    expected[3 * HUGE + 1] = 0xee;
    expect(firstDifference(k2.proc.pread(fd2, 5 * HUGE, 0), expected)).toBe(-1);
    expect(k2.proc.lseek(fd2, 0, 1)).toBe(77);
    await s2.finish();
    // The retrieved memfd is ordinary: punching part of a restored 2 MiB folio splits it.
    const fs2 = k2.kernel.container.resolve(MEMFD_FS);
    const held = fs2.pagesInUse;
    expect(held).toBe(5 * 512);
    k2.proc.fallocate(fd2, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, PAGE_SIZE, PAGE_SIZE);
    expect(fs2.pagesInUse).toBe(held - 1);
    k2.proc.close(fd2);
    expect(fs2.pagesInUse).toBe(0);
  });

  it("leaves no preserved or orphaned pages after FINISH, retrieved or not", async () => {
    const baseline = (await kexec(await boot())).machine.stats();
    const k1 = await boot();
    const { proc: p } = k1;
    const s = await k1.dev.createSession("vm");
    for (let i = 0; i < 3; i++) {
      const fd = create(p, "always", `g${i}`);
      p.pwrite(fd, bytes(HUGE + i * PAGE_SIZE, i + 20), 0);
      await s.preserveFd(fd, BigInt(i));
      p.close(fd);
    }
    const k2 = await kexec(k1);
    const s2 = await k2.dev.retrieveSession("vm");
    const kept = await s2.retrieveFd(1n);
    await s2.finish();
    await s2.close();
    expect(k2.kernel.incoming!.unrestoredPages).toBe(0);
    expect(k2.machine.stats().allocatedPages).toBe(baseline.allocatedPages + 2 * 512);
    k2.proc.close(kept);
    expect(k2.machine.stats()).toEqual(baseline);
  });

  it.each([
    ["a 2 MiB folio at an index that is not 512-aligned", 0, 3n],
    ["a 4 KiB folio inside a 2 MiB folio", 1, 5n],
  ])("retrieve rejects %s (EINVAL), restoring nothing; FINISH frees it all", async (_what, record, index) => {
    const k1 = await boot();
    const { proc: p } = k1;
    const s = await k1.dev.createSession("vm");
    const fd = create(p, "within_size");
    p.pwrite(fd, bytes(HUGE + PAGE_SIZE, 30), 0);
    await s.preserveFd(fd, 1n);
    // The folio records: [0] the 2 MiB folio at index 0, [1] the 4 KiB folio at index 512.
    expect(layout(p, fd)).toEqual([
      [0, MAX_ORDER],
      [512, 0],
    ]);
    const ser = k1.kernel.liveupdate
      .handingOver()
      .sessions.find((x) => x.name === "vm")!
      .files.find((f) => f.token === 1n)!.data;
    const chunk = k1.machine.readU64(ser + BigInt(MEMFD_LUO_SER.folios));
    const recordPage = k1.machine.readU64(chunk + 8n);
    k1.machine.writeU64(recordPage + BigInt(16 * record + 8), index);
    const k2 = await kexec(k1);
    const s2 = await k2.dev.retrieveSession("vm");
    const before = k2.kernel.incoming!.unrestoredPages;
    expect(await rejects(s2.retrieveFd(1n))).toBe("EINVAL");
    expect(k2.kernel.incoming!.unrestoredPages).toBe(before);
    await s2.finish();
    expect(k2.kernel.incoming!.unrestoredPages).toBe(0);
  });
});
