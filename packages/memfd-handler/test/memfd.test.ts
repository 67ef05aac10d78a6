// The memfd file type on a real kernel: contents in physical pages, holes, truncate,
// fallocate (allocate, keep-size, punch-hole), references, reopen, hugetlb, mappings.
import { describe, expect, it } from "vitest";
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  Machine,
  PAGE_SIZE,
  SEEK_CUR,
  SEEK_END,
  SEEK_SET,
} from "@luo/core";
import {
  MEMFD_FS,
  MFD_NAME_MAX_LEN,
  memfdCreate,
  memfdFile,
  memfdMmap,
  memfdPages,
  memfdReopen,
} from "@luo/memfd-handler";
import { boot, bytes, text } from "./helpers/boot.js";
import { code } from "./helpers/errno.js";

describe("memfd file type", () => {
  it("reads and writes through the generic syscalls, allocating pages lazily", async () => {
    const { machine, kernel, proc } = await boot();
    const fs = kernel.container.resolve(MEMFD_FS);
    const before = machine.stats().allocatedPages;
    const fd = memfdCreate(proc, "data");
    expect(memfdFile(proc, fd).description).toBe("memfd:data");
    expect(proc.lseek(fd, 0, SEEK_END)).toBe(0);
    expect(machine.stats().allocatedPages).toBe(before); // nothing allocated yet

    expect(proc.write(fd, text("hello "))).toBe(6);
    expect(proc.write(fd, text("world"))).toBe(5);
    expect(proc.lseek(fd, 0, SEEK_CUR)).toBe(11);
    expect(proc.pread(fd, 100, 0)).toEqual(text("hello world"));
    proc.lseek(fd, 6, SEEK_SET);
    expect(proc.read(fd, 3)).toEqual(text("wor"));
    expect(proc.read(fd, 100)).toEqual(text("ld"));
    expect(proc.read(fd, 100)).toEqual(new Uint8Array(0)); // at the end
    expect(fs.pagesInUse).toBe(1);
    expect(machine.stats().allocatedPages).toBe(before + 1);

    // The bytes are in the machine's RAM at the page the memfd owns.
    const [[index, phys]] = [...memfdPages(memfdFile(proc, fd))];
    expect(index).toBe(0);
    expect(machine.read(phys!, 11)).toEqual(text("hello world"));

    proc.close(fd);
    expect(fs.pagesInUse).toBe(0);
    expect(machine.stats().allocatedPages).toBe(before);
  });

  it("leaves holes unallocated and reads them as zeros", async () => {
    const { proc } = await boot();
    const fd = memfdCreate(proc, "sparse");
    proc.pwrite(fd, text("end"), 10 * PAGE_SIZE + 5);
    expect(proc.lseek(fd, 0, SEEK_END)).toBe(10 * PAGE_SIZE + 8);
    expect([...memfdPages(memfdFile(proc, fd)).keys()]).toEqual([10]);
    const all = proc.pread(fd, 11 * PAGE_SIZE, 0);
    expect(all.length).toBe(10 * PAGE_SIZE + 8);
    expect(all.subarray(0, 10 * PAGE_SIZE + 5).every((b) => b === 0)).toBe(true);
    expect(all.subarray(10 * PAGE_SIZE + 5)).toEqual(text("end"));

    proc.ftruncate(fd, 64 * PAGE_SIZE); // growing adds a hole
    expect(memfdPages(memfdFile(proc, fd)).size).toBe(1);
    expect(proc.pread(fd, 16, 40 * PAGE_SIZE)).toEqual(new Uint8Array(16));
  });

  it("writes spanning many pages round-trip byte for byte", async () => {
    const { proc } = await boot();
    const fd = memfdCreate(proc, "big");
    const data = bytes(5 * PAGE_SIZE + 123, 7);
    proc.pwrite(fd, data, 1000); // unaligned start and end
    expect(proc.pread(fd, data.length, 1000)).toEqual(data);
    expect(memfdPages(memfdFile(proc, fd)).size).toBe(6);
  });

  it("truncating down frees pages past the end and zeroes the tail of the last one", async () => {
    const { kernel, proc } = await boot();
    const fs = kernel.container.resolve(MEMFD_FS);
    const fd = memfdCreate(proc, "t");
    proc.pwrite(fd, bytes(4 * PAGE_SIZE, 3), 0);
    expect(fs.pagesInUse).toBe(4);
    proc.ftruncate(fd, PAGE_SIZE + 10);
    expect(fs.pagesInUse).toBe(2);
    proc.ftruncate(fd, 3 * PAGE_SIZE); // grow again: the old tail reads as zeros
    const back = proc.pread(fd, 3 * PAGE_SIZE, 0);
    expect(back.subarray(0, PAGE_SIZE + 10)).toEqual(bytes(4 * PAGE_SIZE, 3).subarray(0, PAGE_SIZE + 10));
    expect(back.subarray(PAGE_SIZE + 10).every((b) => b === 0)).toBe(true);
    proc.ftruncate(fd, 0);
    expect(fs.pagesInUse).toBe(0);
  });

  it("fallocate allocates, keeps the size with KEEP_SIZE, and punches holes", async () => {
    const { kernel, proc } = await boot();
    const fs = kernel.container.resolve(MEMFD_FS);
    const fd = memfdCreate(proc, "f");
    proc.fallocate(fd, 0, 0, 3 * PAGE_SIZE);
    expect(proc.lseek(fd, 0, SEEK_END)).toBe(3 * PAGE_SIZE);
    expect(fs.pagesInUse).toBe(3);

    proc.fallocate(fd, FALLOC_FL_KEEP_SIZE, 3 * PAGE_SIZE, 2 * PAGE_SIZE);
    expect(proc.lseek(fd, 0, SEEK_END)).toBe(3 * PAGE_SIZE); // size unchanged
    expect(fs.pagesInUse).toBe(5); // pages past the end are allocated

    proc.pwrite(fd, new Uint8Array(3 * PAGE_SIZE).fill(0xaa), 0);
    proc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 100, PAGE_SIZE + 200);
    // [100, 4396) covers no whole page: both pages stay, the range is zeroed.
    expect(fs.pagesInUse).toBe(5);
    const after = proc.pread(fd, 3 * PAGE_SIZE, 0);
    expect(after.subarray(0, 100).every((b) => b === 0xaa)).toBe(true);
    expect(after.subarray(100, PAGE_SIZE + 300).every((b) => b === 0)).toBe(true);
    expect(after.subarray(PAGE_SIZE + 300).every((b) => b === 0xaa)).toBe(true);

    proc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, PAGE_SIZE, 4 * PAGE_SIZE);
    expect([...memfdPages(memfdFile(proc, fd)).keys()]).toEqual([0]); // pages 1..4 freed
    expect(proc.lseek(fd, 0, SEEK_END)).toBe(3 * PAGE_SIZE);
    expect(proc.pread(fd, PAGE_SIZE, PAGE_SIZE).every((b) => b === 0)).toBe(true);

    // The core's argument checks.
    expect(code(() => proc.fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, PAGE_SIZE))).toBe("EOPNOTSUPP");
    expect(code(() => proc.fallocate(fd, 0, 0, 0))).toBe("EINVAL");
  });

  it("truncating to a size that does not grow drops pages fallocated past the end", async () => {
    const { kernel, proc } = await boot();
    const fs = kernel.container.resolve(MEMFD_FS);
    const fd = memfdCreate(proc, "k");
    proc.ftruncate(fd, PAGE_SIZE);
    proc.fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 4 * PAGE_SIZE);
    expect(fs.pagesInUse).toBe(4);
    proc.ftruncate(fd, PAGE_SIZE); // same size: like shmem_setattr, truncates past it
    expect(fs.pagesInUse).toBe(1);
  });

  it("frees its pages only when the last reference goes (dup, reopen, mapping)", async () => {
    const { machine, proc } = await boot();
    const baseline = machine.stats();
    const fd = memfdCreate(proc, "shared", { allowSealing: true });
    proc.pwrite(fd, text("shared bytes"), 0);
    const dupFd = proc.dup(fd);
    const reopened = memfdReopen(proc, fd);
    expect(memfdFile(proc, reopened)).not.toBe(memfdFile(proc, fd)); // a second file object
    expect(memfdFile(proc, reopened).inode).toBe(memfdFile(proc, fd).inode); // same inode
    proc.lseek(fd, 3, SEEK_SET);
    expect(proc.lseek(dupFd, 0, SEEK_CUR)).toBe(3); // dup shares the position
    expect(proc.lseek(reopened, 0, SEEK_CUR)).toBe(0); // reopen has its own
    proc.pwrite(reopened, text("SH"), 0);
    expect(proc.pread(fd, 12, 0)).toEqual(text("SHared bytes")); // shared contents
    proc.fcntl(reopened, 1033 /* F_ADD_SEALS */, 0x4 /* F_SEAL_GROW */);
    expect(proc.fcntl(fd, 1034 /* F_GET_SEALS */)).toBe(0x4); // shared seals

    const map = memfdMmap(proc, fd, { length: PAGE_SIZE, write: true });
    proc.close(fd);
    proc.close(dupFd);
    proc.close(reopened);
    expect(machine.stats().allocatedPages).toBe(baseline.allocatedPages + 1); // the mapping holds it
    expect(map.read(0, 12)).toEqual(text("SHared bytes"));
    map.unmap();
    expect(machine.stats()).toEqual(baseline);
  });

  it("checks names and needs the plugin", async () => {
    const { proc } = await boot();
    expect(code(() => memfdCreate(proc, "x".repeat(MFD_NAME_MAX_LEN)))).toBeUndefined();
    expect(code(() => memfdCreate(proc, "x".repeat(MFD_NAME_MAX_LEN + 1)))).toBe("EINVAL");
    expect(code(() => memfdCreate(proc, "a\0b"))).toBe("EINVAL");
    expect(code(() => memfdFile(proc, 99))).toBe("EBADF");

    const bare = await new Machine({ memory: "8 MiB" }).boot();
    expect(code(() => memfdCreate(bare.spawn("p"), "x"))).toBe("EOPNOTSUPP");
  });

  it("models hugetlb memfds: 2 MiB folios, no write(), aligned sizes, stores through a mapping", async () => {
    const { kernel, proc } = await boot();
    const fs = kernel.container.resolve(MEMFD_FS);
    const fd = memfdCreate(proc, "huge", { hugetlb: true });
    const huge = 2 * 1024 * 1024;
    expect(code(() => proc.write(fd, text("x")))).toBe("EINVAL");
    expect(code(() => proc.ftruncate(fd, PAGE_SIZE))).toBe("EINVAL");
    proc.ftruncate(fd, 2 * huge);
    const map = memfdMmap(proc, fd, { length: 2 * huge, write: true });
    map.write(huge + 5, text("in the second huge page"));
    expect(fs.pagesInUse).toBe(512); // one 2 MiB folio
    expect([...memfdPages(memfdFile(proc, fd)).keys()]).toEqual([512]);
    expect(proc.pread(fd, 23, huge + 5)).toEqual(text("in the second huge page"));
    expect(code(() => memfdMmap(proc, fd, { offset: PAGE_SIZE, length: PAGE_SIZE }))).toBe("EINVAL");
    map.unmap();
    proc.close(fd);
    expect(fs.pagesInUse).toBe(0);
  });

  it("mappings: stores fault holes in, accesses past the end fault, read-only mappings refuse stores", async () => {
    const { proc } = await boot();
    const fd = memfdCreate(proc, "m");
    proc.ftruncate(fd, 2 * PAGE_SIZE);
    const rw = memfdMmap(proc, fd, { offset: PAGE_SIZE, length: 4 * PAGE_SIZE, write: true });
    expect(memfdPages(memfdFile(proc, fd)).size).toBe(0);
    rw.write(10, text("via mapping"));
    expect([...memfdPages(memfdFile(proc, fd)).keys()]).toEqual([1]);
    expect(proc.pread(fd, 11, PAGE_SIZE + 10)).toEqual(text("via mapping"));
    expect(code(() => rw.read(PAGE_SIZE, 1))).toBe("EFAULT"); // past the end of the file
    expect(code(() => rw.write(0, new Uint8Array(5 * PAGE_SIZE)))).toBe("EFAULT"); // past the mapping
    const ro = memfdMmap(proc, fd, { length: PAGE_SIZE });
    expect(code(() => ro.write(0, text("x")))).toBe("EFAULT");
    expect(ro.read(0, 4)).toEqual(new Uint8Array(4));
    ro.unmap();
    rw.unmap();
    rw.unmap(); // idempotent
    expect(code(() => rw.read(0, 1))).toBe("EFAULT");
    const testFile = proc.dup(fd);
    expect(code(() => memfdMmap(proc, testFile, { length: 0 }))).toBe("EINVAL");
  });
});
