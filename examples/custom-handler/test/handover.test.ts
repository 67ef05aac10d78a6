// "eventfd-v1" across real kexecs: six eventfds (empty, plain, semaphore, non-blocking, counter
// 2^32-1, one incremented after PRESERVE) come back with counter and flags, in this process and
// through a machine image loaded by another process; writes after PRESERVE and kernel signals
// are captured at reboot; the record's bytes; retrieve validation; no page left behind.
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(fileURLToPath(import.meta.url), "..", "..", "..", "..");
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  EFD_SEMAPHORE,
  EVENTFD_COUNT_MAX,
  LiveUpdateError,
  Machine,
  eventfd,
  eventfdCtxFdget,
  eventfdFile,
  type Kernel,
  type Process,
} from "@luo/core";
import { createTestFile } from "@luo/core/testing";
import { EVENTFD_LUO_SER, EVENTFD_LUO_SER_SIZE, decodeEventFdRecord, eventfdLuo } from "@luo/eventfd-handler";

/** The six eventfds: token, initval, flags, what a write after PRESERVE adds, expected count. */
const SIX = [
  { token: 1n, name: "empty", init: 0, flags: 0, later: 0n, count: 0n },
  { token: 2n, name: "plain", init: 5, flags: EFD_CLOEXEC, later: 0n, count: 5n },
  { token: 3n, name: "semaphore", init: 3, flags: EFD_SEMAPHORE, later: 0n, count: 3n },
  { token: 4n, name: "non-blocking", init: 9, flags: EFD_NONBLOCK, later: 0n, count: 9n },
  { token: 5n, name: "2^32-1", init: 0xffff_ffff, flags: 0, later: 0n, count: 0xffff_ffffn },
  { token: 6n, name: "incremented", init: 1, flags: EFD_NONBLOCK, later: 41n, count: 42n },
] as const;

const u64 = (v: bigint): Uint8Array => {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, v, true);
  return out;
};
const val = (b: Uint8Array): bigint => new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true);

async function boot(machine = new Machine({ memory: "32 MiB" })): Promise<{ kernel: Kernel; proc: Process }> {
  const kernel = await machine.boot({ plugins: [eventfdLuo()] });
  return { kernel, proc: kernel.spawn("vmm") };
}

/** Boots, preserves the six in session "irqs", then writes to the last one after PRESERVE. */
async function preserveSix(): Promise<{ kernel: Kernel; proc: Process; data: Map<bigint, bigint> }> {
  const { kernel, proc } = await boot();
  const dev = await proc.openLiveUpdate();
  const s = await dev.createSession("irqs");
  const fds = new Map<bigint, number>();
  for (const e of SIX) {
    const fd = eventfd(proc, e.init, e.flags);
    fds.set(e.token, fd);
    await s.preserveFd(fd, e.token);
  }
  for (const e of SIX) if (e.later > 0n) proc.write(fds.get(e.token)!, u64(e.later));
  const files = kernel.liveupdate.handingOver().sessions.find((x) => x.name === "irqs")!.files;
  return { kernel, proc, data: new Map(files.map((f) => [f.token, f.data])) };
}

/** Retrieves the six in `kernel`, checks counter and flags, finishes; returns the process. */
async function retrieveSix(kernel: Kernel): Promise<Process> {
  const proc = kernel.spawn("vmm");
  const s = await (await proc.openLiveUpdate()).retrieveSession("irqs");
  for (const e of SIX) {
    const f = eventfdFile(proc, await s.retrieveFd(e.token));
    expect({ name: e.name, count: f.count, flags: f.flags }).toEqual({
      name: e.name,
      count: e.count,
      flags: e.flags,
    });
  }
  await s.finish();
  return proc;
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "luo-eventfd-"));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe("eventfd-v1 live update", () => {
  it("six eventfds come back with counter and flags; nothing is left preserved", async () => {
    const { kernel } = await preserveSix();
    const k2 = await kernel.kexec();
    const proc = await retrieveSix(k2);
    expect(k2.incoming?.unrestoredPages).toBe(0);
    expect(k2.machine.stats()).toEqual(
      (await (await new Machine({ memory: "32 MiB" }).boot()).kexec()).machine.stats(),
    );
    // The retrieved eventfds are ordinary eventfds of the new kernel.
    const fd = eventfd(proc, 2, EFD_SEMAPHORE);
    expect(val(proc.read(fd, 8))).toBe(1n);
  });

  it("crosses a machine image loaded by another process", async () => {
    const { kernel } = await preserveSix();
    const image = join(dir, "six.img");
    await kernel.kexec({ saveTo: image });
    // A separate Node process loads the image, boots with the handler and reports what it found.
    const script = join(dir, "load.mjs");
    const dist = (pkg: string): string => JSON.stringify(join(ROOT, pkg, "dist", "index.js"));
    await writeFile(
      script,
      `import { Machine, eventfdFile } from ${dist("packages/core")};
import { eventfdLuo } from ${dist("examples/custom-handler")};
const k = await (await Machine.load(process.argv[2])).boot({ plugins: [eventfdLuo()] });
const p = k.spawn("vmm");
const s = await (await p.openLiveUpdate()).retrieveSession("irqs");
const out = [];
for (const t of [1n, 2n, 3n, 4n, 5n, 6n]) {
  const f = eventfdFile(p, await s.retrieveFd(t));
  out.push({ token: String(t), count: String(f.count), flags: f.flags });
}
await s.finish();
out.push({ unrestored: k.incoming.unrestoredPages });
console.log(JSON.stringify(out));
`,
    );
    const { stdout } = await promisify(execFile)(process.execPath, [script, image]);
    expect(JSON.parse(stdout)).toEqual([
      ...SIX.map((e) => ({ token: String(e.token), count: String(e.count), flags: e.flags })),
      { unrestored: 0 },
    ]);
    // And the same image in this process.
    await retrieveSix(await (await Machine.load(image)).boot({ plugins: [eventfdLuo()] }));
  });

  it("writes the record at preserve and again at reboot (a driver's signal after PRESERVE counts)", async () => {
    const { kernel, proc } = await boot();
    const s = await (await proc.openLiveUpdate()).createSession("irqs");
    const fd = eventfd(proc, 7, EFD_SEMAPHORE | EFD_NONBLOCK);
    await s.preserveFd(fd, 1n);
    const data = kernel.liveupdate.handingOver().sessions[0]!.files[0]!.data;
    const record = (): ReturnType<typeof decodeEventFdRecord> =>
      decodeEventFdRecord(kernel.machine.view(data, EVENTFD_LUO_SER_SIZE), "test");
    expect(record()).toEqual({ count: 7n, flags: EFD_SEMAPHORE | EFD_NONBLOCK });
    const driver = eventfdCtxFdget(proc, fd);
    driver.signal(EVENTFD_COUNT_MAX); // saturates: the record must carry 2^64-1 too
    expect(record().count).toBe(7n); // not captured before the reboot
    const image = join(dir, "signal.img");
    await kernel.kexec({ saveTo: image });
    const m = await Machine.load(image);
    expect(decodeEventFdRecord(m.view(data, EVENTFD_LUO_SER_SIZE), "image")).toEqual({
      count: EVENTFD_COUNT_MAX,
      flags: EFD_SEMAPHORE | EFD_NONBLOCK,
    });
    const k2 = await m.boot({ plugins: [eventfdLuo()] });
    const p2 = k2.spawn("vmm");
    const s2 = await (await p2.openLiveUpdate()).retrieveSession("irqs");
    const fd2 = await s2.retrieveFd(1n);
    expect(val(p2.read(fd2, 8))).toBe(1n);
    expect(eventfdFile(p2, fd2).count).toBe(EVENTFD_COUNT_MAX - 1n);
  });

  it("unpreserve frees the page; a file of another type is not claimed (ENOENT)", async () => {
    const { kernel, proc } = await boot();
    const pages = (): number => kernel.machine.stats().preservedPages;
    const idle = pages();
    const dev = await proc.openLiveUpdate();
    const s = await dev.createSession("irqs");
    const fd = eventfd(proc, 1);
    await s.preserveFd(eventfd(proc, 2), 1n); // the first file also makes the session's file block
    const oneFile = pages();
    await s.preserveFd(fd, 2n);
    expect(pages()).toBe(oneFile + 1); // one page per eventfd
    await s.close(); // unpreserves every file of the session
    expect(pages()).toBe(idle);
    expect(eventfdFile(proc, fd).refCount).toBe(1);
    const other = createTestFile(proc, "not-an-eventfd");
    const s2 = await dev.createSession("other");
    const e = await s2.preserveFd(other, 3n).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(e).toBeInstanceOf(LiveUpdateError);
    expect((e as LiveUpdateError).code).toBe("ENOENT");
  });

  it("a record with an unknown reserved word fails retrieve with EINVAL; finish frees its page", async () => {
    const { kernel, data } = await preserveSix();
    // The record is rewritten at freeze: corrupt it in the image.
    const image = join(dir, "corrupt.img");
    await kernel.kexec({ saveTo: image });
    const m = await Machine.load(image);
    m.writeU32(data.get(3n)! + BigInt(EVENTFD_LUO_SER.reserved), 1);
    const k2 = await m.boot({ plugins: [eventfdLuo()] });
    const p2 = k2.spawn("vmm");
    const s2 = await (await p2.openLiveUpdate()).retrieveSession("irqs");
    const e = await s2.retrieveFd(3n).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect((e as LiveUpdateError).code).toBe("EINVAL");
    expect((e as LiveUpdateError).message).toMatch(/reserved 0x1/);
    expect(eventfdFile(p2, await s2.retrieveFd(4n)).count).toBe(9n);
    await s2.finish();
    expect(k2.incoming?.unrestoredPages).toBe(0);
  });
});
