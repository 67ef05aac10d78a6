// The core character devices /dev/null and /dev/zero: Linux read/write/seek semantics, one inode
// per device, present in every kernel (cold boot and after kexec), and refused by LUO (ENOENT).
import { describe, expect, it } from "vitest";
import {
  DEV_NULL_PATH,
  DEV_ZERO_PATH,
  FALLOC_FL_KEEP_SIZE,
  Machine,
  NullDevice,
  SEEK_CUR,
  SEEK_END,
  SEEK_SET,
  ZeroDevice,
} from "@luo/core";
import { createTestFile } from "@luo/core/testing";
import { bootTest, enc, kexecOpen, rejects, throws } from "./helpers/luo.js";

describe("/dev/null", () => {
  it("reads end of file and swallows writes, with or without an offset", async () => {
    const k = await new Machine({ memory: "16 MiB" }).boot();
    const p = k.spawn("shell");
    const fd = await p.open(DEV_NULL_PATH);
    expect(p.file(fd)).toBeInstanceOf(NullDevice);
    expect(p.write(fd, enc("discarded"))).toBe(9);
    expect(p.pwrite(fd, enc("also"), 1 << 20)).toBe(4);
    expect(p.read(fd, 100)).toEqual(new Uint8Array(0));
    expect(p.pread(fd, 100, 0)).toEqual(new Uint8Array(0));
    expect(p.pread(fd, 100, 12345)).toEqual(new Uint8Array(0));
    expect(p.lseek(fd, 0, SEEK_CUR)).toBe(0);
  });

  it("lseek returns 0 whatever the offset and whence", async () => {
    const k = await new Machine({ memory: "16 MiB" }).boot();
    const p = k.spawn("shell");
    for (const path of [DEV_NULL_PATH, DEV_ZERO_PATH]) {
      const fd = await p.open(path);
      p.write(fd, enc("moves nothing"));
      expect(p.lseek(fd, 4096, SEEK_SET)).toBe(0);
      expect(p.lseek(fd, 10, SEEK_CUR)).toBe(0);
      expect(p.lseek(fd, -10, SEEK_END)).toBe(0);
      expect(p.lseek(fd, 7, 99)).toBe(0);
    }
  });

  it("has no size, no fallocate, no ioctl and no seals; bad fds stay EBADF", async () => {
    const k = await new Machine({ memory: "16 MiB" }).boot();
    const p = k.spawn("shell");
    const fd = await p.open(DEV_NULL_PATH);
    throws(() => p.ftruncate(fd, 0), "EINVAL");
    throws(() => p.fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 4096), "ENODEV");
    throws(() => p.fcntl(fd, 1034), "EINVAL");
    await rejects(p.ioctl(fd, 0x1234), "ENOTTY");
    throws(() => p.pread(fd, -1, 0), "EINVAL");
    p.close(fd);
    throws(() => p.read(fd, 1), "EBADF");
  });

  it("opens share one inode per device; each open is its own file", async () => {
    const k = await new Machine({ memory: "16 MiB" }).boot();
    const p = k.spawn("shell");
    const a = p.file(await p.open(DEV_NULL_PATH));
    const b = p.file(await p.open(DEV_NULL_PATH));
    const z = p.file(await p.open(DEV_ZERO_PATH));
    expect(a).not.toBe(b);
    expect(a.inode).toBe(b.inode);
    expect(z.inode).not.toBe(a.inode);
  });

  it("PRESERVE_FD of /dev/null is ENOENT (no handler accepts it) and changes nothing", async () => {
    const w = await bootTest();
    const s = await w.dev.createSession("vm");
    const kept = createTestFile(w.proc, "kept", enc("kept"));
    await s.preserveFd(kept, 1n);
    const before = { stats: w.machine.stats(), luo: w.kernel.liveupdate.stats() };
    for (const path of [DEV_NULL_PATH, DEV_ZERO_PATH]) {
      const fd = await w.proc.open(path);
      const e = await rejects(s.preserveFd(fd, 2n), "ENOENT");
      expect(e.message).toContain(path);
      expect(w.proc.file(fd).refCount, "the fd keeps its only reference").toBe(1);
    }
    expect(w.machine.stats()).toEqual(before.stats);
    expect(w.kernel.liveupdate.stats()).toEqual(before.luo);
    await s.preserveFd(createTestFile(w.proc, "next"), 2n); // token 2 is still free
  });
});

describe("/dev/zero", () => {
  it("reads zeros of the asked length and swallows writes", async () => {
    const k = await new Machine({ memory: "16 MiB" }).boot();
    const p = k.spawn("shell");
    const fd = await p.open(DEV_ZERO_PATH);
    expect(p.file(fd)).toBeInstanceOf(ZeroDevice);
    expect(p.write(fd, enc("gone"))).toBe(4);
    expect(p.pwrite(fd, enc("gone"), 8)).toBe(4);
    expect(p.read(fd, 5)).toEqual(new Uint8Array(5));
    expect(p.pread(fd, 3, 1 << 30)).toEqual(new Uint8Array(3));
    expect(p.read(fd, 0)).toEqual(new Uint8Array(0));
  });

  it("every kernel has both devices, also the one booted by kexec", async () => {
    const w = await bootTest();
    const next = await kexecOpen(w.kernel);
    const fd = await next.proc.open(DEV_ZERO_PATH);
    expect(next.proc.read(fd, 2)).toEqual(new Uint8Array(2));
    expect(next.proc.read(await next.proc.open(DEV_NULL_PATH), 2)).toEqual(new Uint8Array(0));
  });
});
