// eventfd semantics (Linux fs/eventfd.c): creation flags and initval, 8-byte reads and writes,
// EINVAL for short buffers and 2^64-1, semaphore reads, EAGAIN on non-blocking files, waiting
// reads and writes through readAsync/writeAsync (woken by writes, reads and kernel signals, in
// arrival order; EINTR on abort, ESHUTDOWN at halt), the overflow rule, and the in-kernel API.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  EFD_SEMAPHORE,
  EVENTFD_COUNT_MAX,
  EventFdFile,
  Machine,
  SEEK_CUR,
  SEEK_SET,
  eventfd,
  eventfdCtxFdget,
  eventfdFile,
  type Kernel,
  type Process,
} from "@luo/core";
import { createTestFile } from "@luo/core/testing";
import { rejects, throws } from "./helpers/luo.js";

const u64 = (v: bigint, length = 8): Uint8Array => {
  const out = new Uint8Array(length);
  new DataView(out.buffer).setBigUint64(0, v, true);
  return out;
};
const val = (b: Uint8Array): bigint => {
  expect(b.length).toBe(8);
  return new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true);
};
/** Lets every settled promise's continuation run. */
const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 0));

let kernel: Kernel;
let proc: Process;

beforeEach(async () => {
  kernel = await new Machine({ memory: "16 MiB" }).boot();
  proc = kernel.spawn("efd");
});
afterEach(() => kernel.shutdown());

describe("eventfd creation", () => {
  it("keeps initval and flags", () => {
    const fd = eventfd(proc, 7, EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC);
    const f = eventfdFile(proc, fd);
    expect(f.count).toBe(7n);
    expect(f.flags).toBe(EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC);
    expect(f.semaphore).toBe(true);
    expect(f.nonblocking).toBe(true);
    expect(eventfdFile(proc, eventfd(proc)).count).toBe(0n);
    expect(eventfdFile(proc, eventfd(proc, 0xffff_ffff)).count).toBe(0xffff_ffffn);
  });

  it("rejects bad flags and initval with EINVAL", () => {
    throws(() => eventfd(proc, 0, 0x2), "EINVAL");
    throws(() => eventfd(proc, 0, -1), "EINVAL");
    throws(() => eventfd(proc, 2 ** 32), "EINVAL");
    throws(() => eventfd(proc, -1), "EINVAL");
    throws(() => eventfd(proc, 1.5), "EINVAL");
    throws(() => eventfd(proc, "1" as unknown as number), "EINVAL");
    throws(() => eventfd(proc, 0, "1" as unknown as number), "EINVAL");
    throws(() => EventFdFile.restore(EVENTFD_COUNT_MAX + 1n, 0), "EINVAL");
    throws(() => EventFdFile.restore(-1n, 0), "EINVAL");
    throws(() => EventFdFile.restore(1 as unknown as bigint, 0), "EINVAL");
    throws(() => EventFdFile.restore(0n, 0x2), "EINVAL");
  });

  it("restore keeps any u64 count, including 2^64-1", () => {
    const f = EventFdFile.restore(EVENTFD_COUNT_MAX, EFD_NONBLOCK);
    const fd = proc.installFile(f);
    expect(val(proc.read(fd, 8))).toBe(EVENTFD_COUNT_MAX);
    expect(f.count).toBe(0n);
  });

  it("has no position (lseek is a no-op, pread/pwrite ESPIPE); other files are not eventfds", () => {
    const fd = eventfd(proc, 1);
    proc.write(fd, u64(2n));
    expect(proc.lseek(fd, 100, SEEK_SET)).toBe(0);
    expect(proc.lseek(fd, 0, 99)).toBe(0);
    throws(() => proc.pread(fd, 8, 0), "ESPIPE");
    throws(() => proc.pwrite(fd, u64(1n), 0), "ESPIPE");
    expect(val(proc.read(fd, 8))).toBe(3n);
    expect(proc.lseek(fd, 0, SEEK_CUR)).toBe(0);
    throws(() => eventfdFile(proc, createTestFile(proc, "t")), "EINVAL");
    throws(() => eventfdFile(proc, 99), "EBADF");
    throws(() => eventfdCtxFdget(proc, 99), "EBADF");
  });

  it("fails with ESHUTDOWN after the kernel halted", () => {
    kernel.shutdown();
    throws(() => eventfd(proc), "ESHUTDOWN");
  });
});

describe("eventfd read and write", () => {
  it("a plain read returns the counter and zeroes it", () => {
    const fd = eventfd(proc, 5);
    expect(proc.write(fd, u64(10n))).toBe(8);
    expect(val(proc.read(fd, 8))).toBe(15n);
    expect(eventfdFile(proc, fd).count).toBe(0n);
  });

  it("a semaphore read returns 1 and decrements", () => {
    const fd = eventfd(proc, 3, EFD_SEMAPHORE | EFD_NONBLOCK);
    expect([0, 1, 2].map(() => val(proc.read(fd, 8)))).toEqual([1n, 1n, 1n]);
    throws(() => proc.read(fd, 8), "EAGAIN");
  });

  it("reads and writes of fewer than 8 bytes are EINVAL and change nothing", () => {
    const fd = eventfd(proc, 4);
    throws(() => proc.read(fd, 7), "EINVAL");
    throws(() => proc.write(fd, u64(1n).subarray(0, 7)), "EINVAL");
    throws(() => proc.write(fd, "12345678" as unknown as Uint8Array), "EINVAL");
    expect(eventfdFile(proc, fd).count).toBe(4n);
  });

  it("longer buffers move exactly 8 bytes", () => {
    const fd = eventfd(proc);
    expect(proc.write(fd, u64(9n, 16))).toBe(8);
    expect(val(proc.read(fd, 4096))).toBe(9n);
  });

  it("writing 2^64-1 is EINVAL", () => {
    const fd = eventfd(proc, 1, EFD_NONBLOCK);
    throws(() => proc.write(fd, u64(EVENTFD_COUNT_MAX)), "EINVAL");
    expect(eventfdFile(proc, fd).count).toBe(1n);
  });

  it("a write may reach 2^64-2 but not beyond (EAGAIN when non-blocking)", () => {
    const fd = eventfd(proc, 0, EFD_NONBLOCK);
    expect(proc.write(fd, u64(EVENTFD_COUNT_MAX - 1n))).toBe(8);
    throws(() => proc.write(fd, u64(1n)), "EAGAIN");
    expect(proc.write(fd, u64(0n))).toBe(8);
    expect(eventfdFile(proc, fd).count).toBe(EVENTFD_COUNT_MAX - 1n);
    expect(val(proc.read(fd, 8))).toBe(EVENTFD_COUNT_MAX - 1n);
  });

  it("a read at 0 is EAGAIN when non-blocking, also through readAsync", async () => {
    const fd = eventfd(proc, 0, EFD_NONBLOCK);
    throws(() => proc.read(fd, 8), "EAGAIN");
    await rejects(proc.readAsync(fd, 8), "EAGAIN");
    expect(eventfdFile(proc, fd).waiting).toBe(0);
  });

  it("the synchronous read of a blocking eventfd at 0 is EAGAIN naming readAsync", () => {
    const fd = eventfd(proc);
    expect(throws(() => proc.read(fd, 8), "EAGAIN").message).toMatch(/readAsync/);
  });

  it("readAsync and writeAsync do not wait when they can proceed", async () => {
    const fd = eventfd(proc, 2);
    expect(await proc.writeAsync(fd, u64(3n))).toBe(8);
    expect(val(await proc.readAsync(fd, 8))).toBe(5n);
    await rejects(proc.readAsync(fd, 4), "EINVAL");
    await rejects(proc.readAsync(fd, 8, { signal: "x" as unknown as AbortSignal }), "EINVAL");
    await rejects(proc.writeAsync(fd, u64(1n), 5 as unknown as { signal?: AbortSignal }), "EINVAL");
    await rejects(proc.writeAsync(fd, u64(EVENTFD_COUNT_MAX)), "EINVAL");
  });
});

describe("eventfd waiting", () => {
  it("a blocking read waits for a write", async () => {
    const fd = eventfd(proc);
    let got: bigint | undefined;
    const reading = proc.readAsync(fd, 8).then((b) => (got = val(b)));
    await settle();
    expect(got).toBeUndefined();
    expect(eventfdFile(proc, fd).waiting).toBe(1);
    proc.write(fd, u64(6n));
    await reading;
    expect(got).toBe(6n);
    expect(eventfdFile(proc, fd).count).toBe(0n);
  });

  it("semaphore readers are woken one per unit, in arrival order", async () => {
    const fd = eventfd(proc, 0, EFD_SEMAPHORE);
    const order: number[] = [];
    const readers = [0, 1, 2].map((i) => proc.readAsync(fd, 8).then(() => order.push(i)));
    await settle();
    proc.write(fd, u64(2n));
    await settle();
    expect(order).toEqual([0, 1]);
    expect(eventfdFile(proc, fd).count).toBe(0n);
    eventfdFile(proc, fd).signal();
    await Promise.all(readers);
    expect(order).toEqual([0, 1, 2]);
  });

  it("a blocking write waits for a read to make room", async () => {
    const fd = eventfd(proc);
    proc.write(fd, u64(EVENTFD_COUNT_MAX - 1n));
    let done = false;
    const writing = proc.writeAsync(fd, u64(5n)).then(() => (done = true));
    await settle();
    expect(done).toBe(false);
    expect(throws(() => proc.write(fd, u64(5n)), "EAGAIN").message).toMatch(/writeAsync/);
    expect(val(proc.read(fd, 8))).toBe(EVENTFD_COUNT_MAX - 1n);
    await writing;
    expect(eventfdFile(proc, fd).count).toBe(5n);
  });

  it("a waiting read holds the file after its fd is closed", async () => {
    const fd = eventfd(proc);
    const f = eventfdCtxFdget(proc, fd);
    const reading = proc.readAsync(fd, 8);
    await settle();
    proc.close(fd);
    expect(f.isReleased).toBe(false);
    f.signal(3n);
    expect(val(await reading)).toBe(3n);
    f.put();
    expect(f.isReleased).toBe(true);
  });

  it("an aborted wait is EINTR and consumes nothing", async () => {
    const fd = eventfd(proc);
    const ac = new AbortController();
    const reading = proc.readAsync(fd, 8, { signal: ac.signal });
    await settle();
    ac.abort();
    await rejects(reading, "EINTR");
    expect(eventfdFile(proc, fd).waiting).toBe(0);
    proc.write(fd, u64(2n));
    expect(eventfdFile(proc, fd).count).toBe(2n);
    await rejects(proc.readAsync(eventfd(proc), 8, { signal: ac.signal }), "EINTR");
    expect(eventfdFile(proc, fd).refCount).toBe(1);
  });

  it("waits end with ESHUTDOWN when the kernel halts", async () => {
    const fd = eventfd(proc);
    const full = eventfd(proc);
    proc.write(full, u64(EVENTFD_COUNT_MAX - 1n));
    const reading = proc.readAsync(fd, 8);
    const writing = proc.writeAsync(full, u64(1n));
    await settle();
    kernel.shutdown();
    await rejects(reading, "ESHUTDOWN");
    await rejects(writing, "ESHUTDOWN");
  });
});

describe("eventfd in-kernel signal", () => {
  it("signal adds, wakes a reader and saturates at 2^64-1", async () => {
    const fd = eventfd(proc);
    const f = eventfdCtxFdget(proc, fd);
    expect(f.refCount).toBe(2);
    const reading = proc.readAsync(fd, 8);
    expect(f.signal()).toBe(1n);
    expect(val(await reading)).toBe(1n);
    expect(f.signal(EVENTFD_COUNT_MAX - 1n)).toBe(EVENTFD_COUNT_MAX - 1n);
    expect(f.signal(5n)).toBe(1n);
    expect(f.count).toBe(EVENTFD_COUNT_MAX);
    expect(f.signal(5n)).toBe(0n);
    // At 2^64-1 even a write of 0 has no room.
    throws(() => proc.write(fd, u64(0n)), "EAGAIN");
    expect(val(proc.read(fd, 8))).toBe(EVENTFD_COUNT_MAX);
    throws(() => f.signal(-1n), "EINVAL");
    throws(() => f.signal(1 as unknown as bigint), "EINVAL");
    f.put();
    proc.close(fd);
    expect(f.isReleased).toBe(true);
    throws(() => f.signal(), "EBADF");
  });

  it("a signal wakes a writer once a read made room, and readers and writers interleave", async () => {
    const fd = eventfd(proc, 0, EFD_SEMAPHORE);
    const f = eventfdFile(proc, fd);
    f.signal(EVENTFD_COUNT_MAX - 1n);
    const writing = proc.writeAsync(fd, u64(1n));
    await settle();
    expect(f.waiting).toBe(1);
    expect(val(proc.read(fd, 8))).toBe(1n); // room for exactly 1: the writer goes in
    await writing;
    expect(f.count).toBe(EVENTFD_COUNT_MAX - 1n);
  });
});
