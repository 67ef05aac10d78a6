// The "memfd-v2" handler across real kexecs: content captured at reboot, position and seals,
// zero copy, the frozen size while preserved, unpreserve, double preservation, hugetlb, retrieve
// validation, and page accounting (no preserved or orphaned pages after FINISH).
import { describe, expect, it } from "vitest";
import {
  F_ADD_SEALS,
  F_GET_SEALS,
  FALLOC_FL_KEEP_SIZE,
  FILE_BLOCKS,
  FALLOC_FL_PUNCH_HOLE,
  MAX_FILE_OFFSET,
  Machine,
  PAGE_SIZE,
  SESSION_BLOCKS,
  SEEK_CUR,
  SEEK_END,
  SEEK_SET,
  type Kernel,
  type Process,
} from "@luo/core";
import {
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  MEMFD_FS,
  MEMFD_LUO_COMPATIBLE,
  MEMFD_LUO_SER,
  MemfdFile,
  MemfdInode,
  memfd,
  memfdCreate,
  memfdFile,
  memfdFsOf,
  memfdMmap,
  memfdPages,
  memfdReopen,
} from "@luo/memfd-handler";
import { boot, bootAndPreserve, bytes, firstDifference, kexec, text, type Booted } from "./helpers/boot.js";
import { code, rejection, rejects } from "./helpers/errno.js";

const MiB = 1024 * 1024;
const size = (p: Process, fd: number): number => memfdFile(p, fd).size();
const pos = (p: Process, fd: number): number => p.lseek(fd, 0, SEEK_CUR);

/** Machine page accounting of a freshly booted second kernel with nothing handed over. */
async function freshBaseline(): Promise<ReturnType<Machine["stats"]>> {
  return (await kexec(await boot())).machine.stats();
}

describe("memfd-v2 live update", () => {
  it("captures contents at reboot: later writes, an empty memfd, 1 MiB of random data, position, seals", async () => {
    const k1 = await boot();
    const { proc: p } = k1;
    const s = await k1.dev.createSession("vm");

    const random = bytes(MiB, 42);
    const ram = memfdCreate(p, "guest-ram");
    p.pwrite(ram, random, 0);
    const empty = memfdCreate(p, "empty");
    const log = memfdCreate(p, "log", { allowSealing: true });
    p.write(log, text("boot ok\n"));
    p.fcntl(log, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
    p.ftruncate(ram, MiB); // same size, allowed before preserve

    await s.preserveFd(ram, 1n);
    await s.preserveFd(empty, 2n);
    await s.preserveFd(log, 3n);
    // After PRESERVE: writes inside the files and a new position still make it across.
    const patch = bytes(3 * PAGE_SIZE + 17, 99);
    p.pwrite(ram, patch, 200_000);
    random.set(patch, 200_000);
    p.lseek(log, 0, SEEK_SET);
    p.write(log, text("BOOT"));
    p.lseek(ram, 12_345, SEEK_SET);
    p.close(ram); // LUO keeps its own reference

    const k2 = await kexec(k1);
    const s2 = await k2.dev.retrieveSession("vm");
    const q = k2.proc;
    const ram2 = await s2.retrieveFd(1n);
    const empty2 = await s2.retrieveFd(2n);
    const log2 = await s2.retrieveFd(3n);
    expect(size(q, ram2)).toBe(MiB);
    expect(firstDifference(q.pread(ram2, MiB, 0), random)).toBe(-1);
    expect(pos(q, ram2)).toBe(12_345);
    expect(size(q, empty2)).toBe(0);
    expect(q.pread(empty2, 10, 0)).toEqual(new Uint8Array(0));
    expect(q.pread(log2, 100, 0)).toEqual(text("BOOT ok\n"));
    expect(pos(q, log2)).toBe(4);
    expect(q.fcntl(log2, F_GET_SEALS)).toBe(F_SEAL_SHRINK | F_SEAL_GROW);
    expect(code(() => q.ftruncate(log2, 100))).toBe("EPERM"); // the seals act
    // The retrieved memfds are ordinary files of the new kernel.
    expect(memfdFile(q, ram2).description).toBe("memfd:");
    expect(q.fcntl(empty2, F_GET_SEALS)).toBe(F_SEAL_SEAL); // created without allowSealing
    q.pwrite(empty2, text("new life"), 0);
    expect(q.pread(empty2, 8, 0)).toEqual(text("new life"));
    await s2.finish();
  });

  it("is zero copy: the retrieved memfd owns the very pages that were preserved", async () => {
    const { k1, fd } = await bootAndPreserve(bytes(64 * PAGE_SIZE, 5), { token: 7n });
    const before = memfdPages(memfdFile(k1.proc, fd));
    expect(before.size).toBe(64);

    const k2 = await kexec(k1);
    const s2 = await k2.dev.retrieveSession("vm");
    const fd2 = await s2.retrieveFd(7n);
    expect(memfdPages(memfdFile(k2.proc, fd2))).toEqual(before);
    expect(k2.kernel.container.resolve(MEMFD_FS).pagesInUse).toBe(64);
  });

  it("fills holes at preserve; they come back as zeros", async () => {
    const k1 = await boot();
    const s = await k1.dev.createSession("vm");
    const fd = memfdCreate(k1.proc, "sparse");
    k1.proc.ftruncate(fd, 3 * MiB); // 768 pages, 3 pages of folio records
    k1.proc.pwrite(fd, text("middle"), 384 * PAGE_SIZE + 8);
    expect(memfdPages(memfdFile(k1.proc, fd)).size).toBe(1);
    await s.preserveFd(fd, 1n);
    expect(memfdPages(memfdFile(k1.proc, fd)).size).toBe(768);

    const k2 = await kexec(k1);
    const fd2 = await (await k2.dev.retrieveSession("vm")).retrieveFd(1n);
    const back = k2.proc.pread(fd2, 3 * MiB, 0);
    expect(back.length).toBe(3 * MiB);
    expect(back.subarray(384 * PAGE_SIZE + 8, 384 * PAGE_SIZE + 14)).toEqual(text("middle"));
    expect(back.reduce((n, b) => n + (b !== 0 ? 1 : 0), 0)).toBe(6);
  });

  it("freezes the size while preserved: writes inside work, resizing and fallocate are EPERM", async () => {
    const k1 = await boot();
    const { proc: p } = k1;
    const s = await k1.dev.createSession("vm");
    const fd = memfdCreate(p, "ram", { allowSealing: true });
    p.pwrite(fd, new Uint8Array(2 * PAGE_SIZE).fill(7), 0);
    await s.preserveFd(fd, 1n);

    expect(p.pwrite(fd, text("inside"), 2 * PAGE_SIZE - 6)).toBe(6);
    expect(code(() => p.pwrite(fd, text("past"), 2 * PAGE_SIZE - 2))).toBe("EPERM");
    expect(code(() => p.pwrite(fd, text("far"), 10 * PAGE_SIZE))).toBe("EPERM");
    expect(code(() => p.ftruncate(fd, 4 * PAGE_SIZE))).toBe("EPERM");
    expect(code(() => p.ftruncate(fd, PAGE_SIZE))).toBe("EPERM");
    expect(code(() => p.ftruncate(fd, 0))).toBe("EPERM");
    expect(code(() => p.fallocate(fd, 0, 0, PAGE_SIZE))).toBe("EPERM");
    expect(code(() => p.fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 8 * PAGE_SIZE))).toBe("EPERM");
    expect(code(() => p.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, PAGE_SIZE))).toBe(
      "EPERM",
    );
    p.lseek(fd, 0, SEEK_END);
    expect(code(() => p.write(fd, text("append")))).toBe("EPERM");
    p.ftruncate(fd, 2 * PAGE_SIZE); // the same size is no resize
    expect(size(p, fd)).toBe(2 * PAGE_SIZE);
    // Pinned pages: F_SEAL_WRITE is EBUSY (other seals are fine); stores through a mapping work.
    expect(code(() => p.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE))).toBe("EBUSY");
    p.fcntl(fd, F_ADD_SEALS, F_SEAL_GROW);
    const map = memfdMmap(p, fd, { length: 2 * PAGE_SIZE, write: true });
    map.write(0, text("mapped"));
    expect(code(() => map.write(2 * PAGE_SIZE - 1, text("xx")))).toBe("EFAULT");
    map.unmap();
    // A reopened file object of the same memfd is frozen too.
    const other = memfdReopen(p, fd);
    expect(code(() => p.ftruncate(other, PAGE_SIZE))).toBe("EPERM");

    const k2 = await kexec(k1);
    const fd2 = await (await k2.dev.retrieveSession("vm")).retrieveFd(1n);
    const back = k2.proc.pread(fd2, 2 * PAGE_SIZE, 0);
    expect(back.subarray(0, 6)).toEqual(text("mapped"));
    expect(back.subarray(2 * PAGE_SIZE - 6)).toEqual(text("inside"));
    // The retrieved memfd is not frozen.
    k2.proc.fcntl(fd2, F_ADD_SEALS, 0); // allowed: sealing was allowed and F_SEAL_SEAL is not set
    expect(code(() => k2.proc.ftruncate(fd2, 8 * PAGE_SIZE))).toBe("EPERM"); // F_SEAL_GROW came over
    k2.proc.ftruncate(fd2, PAGE_SIZE);
  });

  it("closing the session unpreserves: the memfd keeps its bytes and is resizable again", async () => {
    const k1 = await boot();
    const { proc: p, machine } = k1;
    const preservedBefore = machine.stats().preservedPages;
    const s = await k1.dev.createSession("vm");
    const fd = memfdCreate(p, "ram", { allowSealing: true });
    const data = bytes(5 * PAGE_SIZE + 3, 11);
    p.pwrite(fd, data, 0);
    await s.preserveFd(fd, 1n);
    // Session block + file block + 6 folios + the record, one folio-record page and one chunk.
    const folios = Math.ceil(data.length / PAGE_SIZE);
    expect(machine.stats().preservedPages).toBe(
      preservedBefore + SESSION_BLOCKS.pages + FILE_BLOCKS.pages + folios + 3,
    );
    p.pwrite(fd, text("after"), 0);
    data.set(text("after"), 0);
    await s.close();
    expect(machine.stats().preservedPages).toBe(preservedBefore);
    expect(p.pread(fd, data.length, 0)).toEqual(data);
    p.ftruncate(fd, 10 * PAGE_SIZE);
    p.fallocate(fd, 0, 0, 12 * PAGE_SIZE);
    p.pwrite(fd, text("grown"), 12 * PAGE_SIZE);
    p.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE); // no pins left
    expect(size(p, fd)).toBe(12 * PAGE_SIZE + 5);
    // It can be preserved again, in a new session.
    const s2 = await k1.dev.createSession("again");
    await s2.preserveFd(fd, 1n);
  });

  it("repeated preserve/close cycles return page accounting to the baseline", async () => {
    const k1 = await boot();
    const { proc: p, machine } = k1;
    const baseline = machine.stats();
    for (let i = 0; i < 20; i++) {
      const s = await k1.dev.createSession(`cycle-${i}`);
      const fd = memfdCreate(p, `m${i}`);
      p.pwrite(fd, bytes(3 * PAGE_SIZE, i + 1), PAGE_SIZE * (i % 3)); // some with a hole
      await s.preserveFd(fd, BigInt(i));
      await s.close();
      p.close(fd);
      expect(machine.stats()).toEqual(baseline);
    }
    // And with the memfd kept open: only the hole-filling pages stay (allocated, not preserved).
    const fd = memfdCreate(p, "kept");
    p.pwrite(fd, text("x"), 4 * PAGE_SIZE);
    const withFile = machine.stats();
    for (let i = 0; i < 5; i++) {
      const s = await k1.dev.createSession(`kept-${i}`);
      await s.preserveFd(fd, 1n);
      await s.close();
    }
    expect(machine.stats()).toEqual({
      ...withFile,
      freePages: withFile.freePages - 4,
      allocatedPages: withFile.allocatedPages + 4,
    });
    expect(k1.kernel.liveupdate.stats().ownedFiles).toBe(0);
  });

  it("leaves no preserved or orphaned pages after FINISH, retrieved or not", async () => {
    const k1 = await boot();
    const { proc: p } = k1;
    const a = await k1.dev.createSession("a");
    const b = await k1.dev.createSession("b");
    for (let i = 0; i < 3; i++) {
      const fd = memfdCreate(p, `a${i}`);
      p.pwrite(fd, bytes(700 * PAGE_SIZE + i, i + 1), 0); // 701 folios: records span 3 pages
      await a.preserveFd(fd, BigInt(i));
      p.close(fd);
    }
    const fd = memfdCreate(p, "b0");
    p.pwrite(fd, bytes(10, 3), 0);
    await b.preserveFd(fd, 0n);
    await b.preserveFd(memfdCreate(p, "b1"), 1n); // empty

    const baseline = await freshBaseline();
    const k2 = await kexec(k1);
    const a2 = await k2.dev.retrieveSession("a");
    const kept = await a2.retrieveFd(1n); // only one of three
    const b2 = await k2.dev.retrieveSession("b"); // none of its files
    await a2.finish();
    await b2.close(); // implicit finish
    await a2.close();
    expect(k2.kernel.incoming!.unrestoredPages).toBe(0);
    expect(k2.kernel.liveupdate.stats().ownedFiles).toBe(0);
    // The retrieved memfd is an ordinary file now: 701 pages until it is closed.
    expect(k2.machine.stats().allocatedPages).toBe(baseline.allocatedPages + 701);
    expect(k2.kernel.container.resolve(MEMFD_FS).pagesInUse).toBe(701);
    k2.proc.close(kept);
    expect(k2.machine.stats()).toEqual(baseline);
  });

  it("cannot preserve one memfd twice (dup or reopen: EBUSY); hugetlb memfds are not claimed (ENOENT)", async () => {
    const k1 = await boot();
    const { proc: p } = k1;
    const s = await k1.dev.createSession("a");
    const other = await k1.dev.createSession("b");
    const fd = memfdCreate(p, "ram");
    p.pwrite(fd, text("x"), 0);
    await s.preserveFd(fd, 1n);
    expect(await rejects(s.preserveFd(p.dup(fd), 2n))).toBe("EBUSY");
    expect(await rejects(other.preserveFd(memfdReopen(p, fd), 1n))).toBe("EBUSY");
    const huge = memfdCreate(p, "huge", { hugetlb: true });
    p.ftruncate(huge, 2 * MiB);
    expect(await rejects(s.preserveFd(huge, 3n))).toBe("ENOENT");
    // A memfd retrieved in the next kernel is owned by LUO until FINISH, then preservable again.
    const k2 = await kexec(k1);
    const s2 = await k2.dev.retrieveSession("a");
    const fd2 = await s2.retrieveFd(1n);
    const out = await k2.dev.createSession("a");
    expect(await rejects(out.preserveFd(fd2, 1n))).toBe("EBUSY");
    await s2.finish();
    await out.preserveFd(fd2, 1n);
  });

  it("refuses seals it cannot carry (EOPNOTSUPP) and undoes everything", async () => {
    class FutureSealInode extends MemfdInode {
      override get seals(): number {
        return super.seals | 0x40; // a seal from a newer kernel
      }
    }
    const k1 = await boot();
    const { proc: p, machine } = k1;
    const s = await k1.dev.createSession("a");
    const inode = new FutureSealInode(memfdFsOf(p), {
      name: "future",
      hugetlb: false,
      seals: 0,
      executable: true,
    });
    const fd = p.installFile(new MemfdFile(inode));
    p.pwrite(fd, text("data"), 0);
    const before = machine.stats();
    expect(await rejects(s.preserveFd(fd, 1n))).toBe("EOPNOTSUPP");
    expect(machine.stats()).toEqual(before);
    p.ftruncate(fd, 2 * PAGE_SIZE); // not frozen
  });

  it("refuses more than 2^32-1 pages (EFBIG) and undoes everything", async () => {
    const k1 = await boot();
    const { proc: p, machine } = k1;
    const s = await k1.dev.createSession("a");
    const fd = memfdCreate(p, "huge-sparse");
    p.ftruncate(fd, 2 ** 44); // 2^32 pages, all holes
    const before = machine.stats();
    const err = await rejection(s.preserveFd(fd, 1n));
    expect(err?.code).toBe("EFBIG");
    expect(err?.message).toContain("has more than 2^32-1 pages");
    expect(machine.stats()).toEqual(before);
    expect(k1.kernel.liveupdate.stats().ownedFiles).toBe(0);
    p.ftruncate(fd, PAGE_SIZE); // not frozen
    await s.preserveFd(fd, 1n);
  });

  it("writes the 48-byte record and 16-byte folio records; freeze refreshes the position", async () => {
    const k1 = await boot();
    const { proc: p, machine } = k1;
    const s = await k1.dev.createSession("a");
    const fd = memfdCreate(p, "rec", { allowSealing: true });
    p.pwrite(fd, bytes(2 * PAGE_SIZE + 1, 1), 0);
    p.fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL);
    p.lseek(fd, 5, SEEK_SET);
    await s.preserveFd(fd, 1n);
    const lf = k1.kernel.liveupdate.handingOver().sessions[0]!.files[0]!;
    expect(lf.compatible).toBe(MEMFD_LUO_COMPATIBLE);
    const ser = lf.data;
    expect(machine.readU64(ser + BigInt(MEMFD_LUO_SER.pos))).toBe(5n);
    expect(machine.readU64(ser + BigInt(MEMFD_LUO_SER.size))).toBe(BigInt(2 * PAGE_SIZE + 1));
    expect(machine.readU32(ser + BigInt(MEMFD_LUO_SER.seals))).toBe(F_SEAL_SEAL);
    expect(machine.readU32(ser + BigInt(MEMFD_LUO_SER.flags))).toBe(0);
    expect(machine.readU64(ser + BigInt(MEMFD_LUO_SER.nrFolios))).toBe(3n);
    // Folio records: pfn in the low 52 bits, DIRTY|UPTODATE in the high 12, then the page index.
    const chunk = machine.readU64(ser + BigInt(MEMFD_LUO_SER.folios));
    expect(machine.readU32(ser + BigInt(MEMFD_LUO_SER.folios) + 8n)).toBe(1); // total_pages
    const array = machine.readU64(chunk + 8n);
    expect(machine.readU64(chunk + 16n)).toBe(0n); // zero-terminated
    const pages = [...memfdPages(memfdFile(p, fd))];
    for (let i = 0; i < 3; i++) {
      expect(machine.readU64(array + BigInt(16 * i))).toBe((pages[i]![1] >> 12n) | (3n << 52n));
      expect(machine.readU64(array + BigInt(16 * i + 8))).toBe(BigInt(pages[i]![0]));
    }
    p.lseek(fd, 77, SEEK_SET);
    expect(machine.readU64(ser + BigInt(MEMFD_LUO_SER.pos))).toBe(5n); // not yet
    const k2 = await kexec(k1);
    expect(k2.machine.readU64(ser + BigInt(MEMFD_LUO_SER.pos))).toBe(77n); // refreshed by freeze
    const fd2 = await (await k2.dev.retrieveSession("a")).retrieveFd(1n);
    expect(pos(k2.proc, fd2)).toBe(77);
  });

  it("retrieve validates the record: corrupt flags or seals fail (sticky), FINISH still frees everything", async () => {
    for (const [field, value, errno] of [
      [MEMFD_LUO_SER.flags, 1, "EINVAL"],
      [MEMFD_LUO_SER.seals, 0x80, "EOPNOTSUPP"],
    ] as const) {
      const { k1, ser } = await bootAndPreserve(bytes(300 * PAGE_SIZE, 2), { session: "a", name: "m" });
      const baseline = await freshBaseline();
      const k2 = await kexec(k1);
      k2.machine.writeU32(ser + BigInt(field), value);
      const s2 = await k2.dev.retrieveSession("a");
      expect(await rejects(s2.retrieveFd(1n))).toBe(errno);
      expect(await rejects(s2.retrieveFd(1n))).toBe(errno); // sticky
      await s2.finish();
      expect(k2.kernel.incoming!.unrestoredPages).toBe(0);
      expect(k2.machine.stats()).toEqual(baseline);
    }
  });

  it("retrieve validates the folio records, the sizes and the array (exact errno), FINISH frees what it can find", async () => {
    const n = 4; // 4 folios: one folio-record page, one chunk
    /** Where the layout of the preserved memfd is, read in the new kernel. */
    const layout = (m: Machine, ser: bigint) => {
      const chunk = m.readU64(ser + BigInt(MEMFD_LUO_SER.folios));
      const array = m.readU64(chunk + 8n);
      return { chunk, array, rec: (i: number) => array + BigInt(16 * i) };
    };
    const cases: {
      what: string;
      corrupt: (m: Machine, ser: bigint) => void;
      errno: string;
      message: string | RegExp;
      /** Pages still handed over after FINISH (the damaged record no longer names them). */
      left: number;
    }[] = [
      {
        what: "a folio record repeats a phys",
        corrupt: (m, ser) => {
          const { rec } = layout(m, ser);
          m.writeU64(ser + BigInt(MEMFD_LUO_SER.size), BigInt((n + 1) * PAGE_SIZE));
          m.writeU64(ser + BigInt(MEMFD_LUO_SER.nrFolios), BigInt(n + 1));
          m.writeU64(rec(n), m.readU64(rec(0))); // folio 0's page again, as index 4
          m.writeU64(rec(n) + 8n, BigInt(n));
        },
        errno: "EIO",
        message: /cannot restore folio 4 at 0x[0-9a-f]+$/,
        left: 0,
      },
      {
        what: "a folio index beyond the file",
        corrupt: (m, ser) => m.writeU64(layout(m, ser).rec(3) + 8n, BigInt(n)),
        errno: "EINVAL",
        message: "folio index 4 is repeated or beyond 4 page(s)",
        left: 0,
      },
      {
        what: "a folio index repeated",
        corrupt: (m, ser) => m.writeU64(layout(m, ser).rec(3) + 8n, 2n),
        errno: "EINVAL",
        message: "folio index 2 is repeated or beyond 4 page(s)",
        left: 0,
      },
      {
        what: "size 2^53",
        corrupt: (m, ser) => m.writeU64(ser + BigInt(MEMFD_LUO_SER.size), 2n ** 53n),
        errno: "EINVAL",
        message: `size ${2n ** 53n} or position 0 out of range`,
        left: 0,
      },
      {
        what: "position beyond the largest offset",
        corrupt: (m, ser) => m.writeU64(ser + BigInt(MEMFD_LUO_SER.pos), BigInt(MAX_FILE_OFFSET) + 1n),
        errno: "EINVAL",
        message: `size ${n * PAGE_SIZE} or position ${MAX_FILE_OFFSET + 1} out of range`,
        left: 0,
      },
      {
        // FINISH cannot parse the record either: it frees the record page and nothing else.
        what: "the folio array overlaps the record",
        corrupt: (m, ser) => m.writeU64(layout(m, ser).chunk + 8n, ser),
        errno: "EINVAL",
        message: "its folio array overlaps the record",
        left: n + 2, // the folios, the folio-record page and the chunk
      },
      {
        what: "nr_folios above the capacity of the array",
        corrupt: (m, ser) => m.writeU64(ser + BigInt(MEMFD_LUO_SER.nrFolios), 257n),
        errno: "EINVAL",
        message: "257 folio records do not fit in 1 array block(s)",
        left: n + 2,
      },
    ];
    for (const c of cases) {
      const { k1, ser } = await bootAndPreserve(bytes(n * PAGE_SIZE, 2), { session: "a", name: "m" });
      const baseline = await freshBaseline();
      const k2 = await kexec(k1);
      c.corrupt(k2.machine, ser);
      const before = k2.kernel.incoming!.unrestoredPages;
      const s2 = await k2.dev.retrieveSession("a");
      const err = await rejection(s2.retrieveFd(1n));
      expect(err?.code, c.what).toBe(c.errno);
      if (typeof c.message === "string") expect(err?.message, c.what).toContain(c.message);
      else expect(err?.message, c.what).toMatch(c.message);
      expect(await rejection(s2.retrieveFd(1n)), c.what).toEqual(err); // sticky
      expect(k2.kernel.incoming!.unrestoredPages, `${c.what}: nothing restored`).toBe(before);
      await s2.finish();
      expect(k2.kernel.incoming!.unrestoredPages, c.what).toBe(c.left);
      if (c.left === 0) expect(k2.machine.stats(), c.what).toEqual(baseline);
    }
  });

  it("retrieve refuses folios that were not handed over (EIO) without restoring anything", async () => {
    const { k1, ser } = await bootAndPreserve(bytes(4 * PAGE_SIZE, 2), { session: "a", name: "m" });
    const k2 = await kexec(k1);
    // Point the third folio record at the record page itself.
    const chunk = k2.machine.readU64(ser + BigInt(MEMFD_LUO_SER.folios));
    const array = k2.machine.readU64(chunk + 8n);
    k2.machine.writeU64(array + 2n * 16n, (ser >> 12n) | (3n << 52n));
    const before = k2.kernel.incoming!.unrestoredPages;
    const s2 = await k2.dev.retrieveSession("a");
    expect(await rejects(s2.retrieveFd(1n))).toBe("EIO");
    expect(k2.kernel.incoming!.unrestoredPages).toBe(before);
    await s2.finish();
    // The damaged record cannot name the third folio any more: that one page stays handed over.
    expect(k2.kernel.incoming!.unrestoredPages).toBe(1);
  });

  it("works across processes: kexec to a machine image, load it, boot, retrieve the same pages", async () => {
    const { mkdtemp, rm } = await import("node:fs/promises");
    const { tmpdir } = await import("node:os");
    const { join } = await import("node:path");
    const dir = await mkdtemp(join(tmpdir(), "memfd-img-"));
    try {
      const data = bytes(MiB, 9);
      const { k1, fd } = await bootAndPreserve(data);
      const before = memfdPages(memfdFile(k1.proc, fd));
      const path = join(dir, "m.img");
      expect(await k1.kernel.kexec({ saveTo: path })).toBeUndefined();
      const k2: Kernel = await (await Machine.load(path)).boot({ plugins: [memfd()] });
      const q = k2.spawn("vmm");
      const s2 = await (await q.openLiveUpdate()).retrieveSession("vm");
      const fd2 = await s2.retrieveFd(1n);
      expect(firstDifference(q.pread(fd2, MiB, 0), data)).toBe(-1);
      expect(memfdPages(memfdFile(q, fd2))).toEqual(before);
      await s2.finish();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("the old kernel's memfds go down with it", async () => {
    const k1: Booted = await boot();
    const fd = memfdCreate(k1.proc, "old");
    k1.proc.pwrite(fd, text("old"), 0);
    const file = memfdFile(k1.proc, fd).get();
    const map = memfdMmap(k1.proc, fd, { length: PAGE_SIZE });
    const k2 = await kexec(k1);
    expect(code(() => k1.proc.pread(fd, 3, 0))).toBe("ESHUTDOWN");
    expect(code(() => map.read(0, 3))).toBe("ESHUTDOWN");
    expect(code(() => memfdCreate(k1.proc, "x"))).toBe("ESHUTDOWN");
    const stats = k2.machine.stats();
    file.put(); // frees nothing: the page was scrubbed and belongs to nobody
    map.unmap();
    expect(k2.machine.stats()).toEqual(stats);
  });
});
