// Machine hardware: attach/detach rules, the machine clock and advance hooks, and the hardware
// section of the machine image (round trip through a loader, missing loader, corrupt section).
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MachineImageError } from "../src/errors.js";
import { Machine, type HardwareLoader, type MachineHardware, PAGE_SIZE } from "../src/machine/index.js";
import { expectErrno, pattern, tempDir } from "./fixtures/machine-helpers.js";

/** A counter device: counts nanoseconds it has seen and holds a few register bytes. */
class Ticker implements MachineHardware {
  readonly kind = "ticker";
  elapsed = 0n;
  constructor(
    readonly name: string,
    public reg = 0,
  ) {}
  save(): Uint8Array {
    const b = Buffer.alloc(12);
    b.writeBigUInt64LE(this.elapsed, 0);
    b.writeUInt32LE(this.reg, 8);
    return b;
  }
  advance(ns: bigint): void {
    this.elapsed += ns;
  }
}

const tickerLoader: HardwareLoader = {
  kind: "ticker",
  load(_machine, name, state) {
    if (state.length !== 12) throw new Error(`ticker state of ${state.length} bytes`);
    const b = Buffer.from(state);
    const t = new Ticker(name, b.readUInt32LE(8));
    t.elapsed = b.readBigUInt64LE(0);
    return t;
  },
};

let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => {
  ({ dir, cleanup } = await tempDir("machine-hardware"));
});
afterAll(async () => {
  await cleanup();
});

describe("machine hardware set", () => {
  it("attaches at construction and later, in order, each name once", () => {
    const m = new Machine({ memory: "4 MiB", hardware: [() => new Ticker("t0")] });
    const t1 = m.hardware.attach(new Ticker("t1"));
    expect(m.hardware.list().map((h) => h.name)).toEqual(["t0", "t1"]);
    expect(m.hardware.get("t1")).toBe(t1);
    expect(m.hardware.list("other")).toEqual([]);
    expectErrno(() => m.hardware.attach(new Ticker("t1")), "EEXIST");
    expectErrno(() => m.hardware.attach({ kind: "", name: "x", save: () => new Uint8Array() }), "EINVAL");
    expectErrno(() => m.hardware.attach({ kind: "k", name: "x" } as unknown as MachineHardware), "EINVAL");
    expectErrno(() => m.hardware.attach(null as unknown as MachineHardware), "EINVAL");
    const hooks = { kind: "k", name: "y", save: () => new Uint8Array() };
    expectErrno(() => m.hardware.attach({ ...hooks, advance: 1 } as unknown as MachineHardware), "EINVAL");
    expectErrno(() => m.hardware.attach({ ...hooks, checkpoint: 1 } as unknown as MachineHardware), "EINVAL");
    expect(m.hardware.size).toBe(2);
    expect(m.hardware.detach("t0").name).toBe("t0");
    expectErrno(() => m.hardware.detach("t0"), "ENOENT");
    expect(m.hardware.size).toBe(1);
  });

  it("the factory gets the machine being built", () => {
    let seen: Machine | undefined;
    const m = new Machine({
      memory: "4 MiB",
      hardware: [
        (mm) => {
          seen = mm;
          return new Ticker("t");
        },
      ],
    });
    expect(seen).toBe(m);
    expectErrno(() => new Machine({ memory: "4 MiB", hardware: [42 as never] }), "EINVAL");
  });

  it("advanceTime moves the clock and every device, and rejects bad times", () => {
    const m = new Machine({ memory: "4 MiB", hardware: [() => new Ticker("a"), () => new Ticker("b")] });
    m.advanceTime(1000);
    m.advanceTime(5n);
    expect(m.timeNs).toBe(1005n);
    expect((m.hardware.list() as Ticker[]).map((t) => t.elapsed)).toEqual([1005n, 1005n]);
    for (const bad of [-1, 1.5, "3", -1n, 1n << 64n])
      expectErrno(() => m.advanceTime(bad as never), "EINVAL");
    expect(m.timeNs).toBe(1005n);
  });
});

describe("hardware in the machine image", () => {
  it("round-trips through the loader of its kind, with RAM and the clock", async () => {
    const m = new Machine({ memory: "4 MiB", hardware: [() => new Ticker("t0", 7)] });
    m.hardware.attach(new Ticker("t1", 9));
    const page = m.allocPages(0);
    m.write(page, pattern(PAGE_SIZE, 3));
    m.advanceTime(77n);
    const path = join(dir, "hw.img");
    await m.save(path);
    const back = await Machine.load(path, { hardware: [tickerLoader] });
    expect(back.timeNs).toBe(77n);
    const ts = back.hardware.list() as Ticker[];
    expect(ts.map((t) => [t.name, t.reg, t.elapsed])).toEqual([
      ["t0", 7, 77n],
      ["t1", 9, 77n],
    ]);
    expect(Buffer.from(back.read(page, PAGE_SIZE)).equals(Buffer.from(pattern(PAGE_SIZE, 3)))).toBe(true);
  });

  it("an image with hardware of an unknown kind, or a loader that throws, does not load", async () => {
    const m = new Machine({ memory: "4 MiB", hardware: [() => new Ticker("t0")] });
    const path = join(dir, "unknown.img");
    await m.save(path);
    const e = await Machine.load(path).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(MachineImageError);
    expect((e as Error).message).toMatch(/no loader for hardware "t0" of kind "ticker"/);
    const bad: HardwareLoader = {
      kind: "ticker",
      load: () => {
        throw new Error("broken registers");
      },
    };
    const e2 = await Machine.load(path, { hardware: [bad] }).catch((x: unknown) => x);
    expect(e2).toBeInstanceOf(MachineImageError);
    expect((e2 as Error).message).toMatch(/broken registers/);
  });

  it("a machine without hardware writes no hardware section; a corrupt one is refused", async () => {
    const plain = new Machine({ memory: "4 MiB" });
    const p1 = join(dir, "plain.img");
    await plain.save(p1);
    expect((await readFile(p1)).readUInt32LE(20)).toBe(2);
    const m = new Machine({ memory: "4 MiB", hardware: [() => new Ticker("t0")] });
    const p2 = join(dir, "hw2.img");
    await m.save(p2);
    const img = await readFile(p2);
    expect(img.readUInt32LE(20)).toBe(3);
    // Flip a byte of the ticker's state (just before the section footer and the 24-byte trailer).
    img[img.length - 24 - 8 - 5]! ^= 0xff;
    await writeFile(p2, img);
    const e = await Machine.load(p2, { hardware: [tickerLoader] }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(MachineImageError);
    expect((e as Error).message).toMatch(/hardware section checksum/);
  });
});

describe("hardware and the boot checkpoint", () => {
  it("a failed boot puts hardware back through its checkpoint hook; a good boot keeps the changes", async () => {
    const { definePlugin, LiveUpdateError } = await import("../src/index.js");
    const t = new Ticker("t0", 1);
    const m = new Machine({
      memory: "16 MiB",
      hardware: [
        () =>
          Object.assign(t, {
            checkpoint: () => {
              const reg = t.reg;
              return () => {
                t.reg = reg;
              };
            },
          }),
      ],
    });
    const probe = (fail: boolean) =>
      definePlugin({
        name: "probe",
        register() {
          t.reg = 99; // the driver reprograms the device at boot
          if (fail) throw new LiveUpdateError("EIO", "probe failed");
        },
      });
    await expect(m.boot({ plugins: [probe(true)] })).rejects.toMatchObject({ code: "EIO" });
    expect(t.reg).toBe(1);
    await m.boot({ plugins: [probe(false)] });
    expect(t.reg).toBe(99);
  });
});
