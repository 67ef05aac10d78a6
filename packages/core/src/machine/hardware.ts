/**
 * Machine hardware: devices and units (IOMMUs, PCI functions, DMA engines …) that belong to the
 * machine rather than to a kernel. They keep their state while one kernel halts and the next one
 * boots, they see machine time pass, and they are saved in the machine image.
 *
 * A component has a `kind` (what it is, e.g. `"iommu"`) and a `name` unique in its machine (e.g.
 * `"dmar0"`). It must be able to `save()` its state to bytes; {@link Machine.load} rebuilds it from
 * those bytes with the {@link HardwareLoader} registered for its kind, so a package outside the
 * core supplies its own loader and the core never imports it:
 *
 * ```ts
 * const m = new Machine({ memory: "64 MiB", hardware: [(m) => new MyUnit(m, "unit0")] });
 * await m.save(path);
 * const back = await Machine.load(path, { hardware: [myUnitLoader] });
 * ```
 *
 * Happy path: attach (at construction or later) → the kernels use it → `advanceTime` lets it make
 * progress → `save` → `load` with the loader of its kind. Unhappy paths: a bad kind or name or a
 * component without `save` is `EINVAL`, a second component with the same name `EEXIST`, detaching
 * an unknown name `ENOENT`; an image naming a kind with no loader, or a loader that throws, fails
 * the load with a `MachineImageError` and no machine is returned.
 *
 * Image section (self-contained; everything little-endian):
 *
 *   count u32 | reserved u32 | machine time (ns) u64, then per component in attach order:
 *   kind length u16 | name length u16 | reserved u32 | state length u64 |
 *   kind (UTF-8) | name (UTF-8) | state | zero padding to a multiple of 8
 *
 * @module
 */
import { LiveUpdateError, MachineImageError } from "../errors.js";
import type { Machine } from "./machine.js";

/** One piece of machine hardware (see the module comment). */
export interface MachineHardware {
  /** What it is, e.g. `"iommu"`: selects the {@link HardwareLoader} when an image is loaded. */
  readonly kind: string;
  /** Unique name in its machine, e.g. `"dmar0"`. */
  readonly name: string;
  /** Its complete state as bytes, for the machine image (called once per {@link Machine.save}). */
  save(): Uint8Array;
  /** Called by {@link Machine.advanceTime} after the clock moved by `ns` nanoseconds. */
  advance?(ns: bigint): void;
  /**
   * Called when a kernel starts booting on the machine: returns a function that puts the
   * component back as it is now, called if that boot fails (the machine rolls back its memory
   * too). Omit it for hardware a booting kernel does not change.
   */
  checkpoint?(): () => void;
}

/** Rebuilds a component of one kind from the bytes its `save()` wrote. */
export interface HardwareLoader {
  /** The kind this loader rebuilds. */
  readonly kind: string;
  /**
   * Returns the component named `name` rebuilt from `state`, for `machine` (whose RAM is already
   * loaded). Throw (any error) when `state` is not valid; the load then fails.
   */
  load(machine: Machine, name: string, state: Uint8Array): MachineHardware;
}

/** Builds a component for a machine being constructed (see `MachineOptions.hardware`). */
export type HardwareFactory = (machine: Machine) => MachineHardware;

/** One component as stored in a machine image. */
export interface HardwareRecord {
  /** Its kind. */
  readonly kind: string;
  /** Its name. */
  readonly name: string;
  /** What its `save()` returned. */
  readonly state: Uint8Array;
}

const NAME_MAX = 255;
const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder("utf-8", { fatal: true });

function checkLabel(value: unknown, what: string): string {
  if (typeof value !== "string" || value.length === 0 || utf8.encode(value).length > NAME_MAX) {
    throw new LiveUpdateError("EINVAL", `machine hardware ${what} must be a string of 1..${NAME_MAX} bytes`);
  }
  return value;
}

/**
 * The hardware of one machine (`machine.hardware`): components in attach order, each name once.
 */
export class MachineHardwareSet {
  readonly #items = new Map<string, MachineHardware>();

  /**
   * Attaches a component.
   *
   * @throws {@link LiveUpdateError} `EINVAL` for a missing kind, name or `save`; `EEXIST` when
   *   another component has that name
   */
  attach<H extends MachineHardware>(hw: H): H {
    if (typeof hw !== "object" || hw === null || typeof hw.save !== "function") {
      throw new LiveUpdateError("EINVAL", "machine hardware needs kind, name and save()");
    }
    checkLabel(hw.kind, "kind");
    const name = checkLabel(hw.name, "name");
    for (const hook of ["advance", "checkpoint"] as const) {
      if (hw[hook] !== undefined && typeof hw[hook] !== "function") {
        throw new LiveUpdateError("EINVAL", `machine hardware "${name}": ${hook} is not a function`);
      }
    }
    if (this.#items.has(name)) {
      throw new LiveUpdateError("EEXIST", `machine hardware "${name}" is already attached`);
    }
    this.#items.set(name, hw);
    return hw;
  }

  /**
   * Detaches the component named `name` and returns it.
   *
   * @throws {@link LiveUpdateError} `ENOENT` when there is none
   */
  detach(name: string): MachineHardware {
    const hw = this.#items.get(name);
    if (!hw) throw new LiveUpdateError("ENOENT", `no machine hardware named "${String(name)}"`);
    this.#items.delete(name);
    return hw;
  }

  /** The component named `name`, if attached. */
  get(name: string): MachineHardware | undefined {
    return this.#items.get(name);
  }

  /** Every component, in attach order; only those of `kind` when given. */
  list(kind?: string): MachineHardware[] {
    const all = [...this.#items.values()];
    return kind === undefined ? all : all.filter((h) => h.kind === kind);
  }

  /** Number of components. */
  get size(): number {
    return this.#items.size;
  }

  /** Calls every component's `advance(ns)`, in attach order. */
  advance(ns: bigint): void {
    for (const hw of this.#items.values()) hw.advance?.(ns);
  }

  /** The records {@link encodeHardwareSection} stores: each component's kind, name and state. */
  snapshot(): HardwareRecord[] {
    return [...this.#items.values()].map((hw) => {
      const state = hw.save();
      if (!(state instanceof Uint8Array)) {
        throw new LiveUpdateError("EINVAL", `machine hardware "${hw.name}": save() did not return bytes`);
      }
      return { kind: hw.kind, name: hw.name, state };
    });
  }
}

const pad8 = (n: number): number => (n + 7) & ~7;

/** Encodes the hardware section of a machine image (layout in the module comment). */
export function encodeHardwareSection(timeNs: bigint, records: readonly HardwareRecord[]): Buffer {
  const parts = records.map((r) => ({
    kind: utf8.encode(r.kind),
    name: utf8.encode(r.name),
    state: r.state,
  }));
  let len = 16;
  for (const p of parts) len += 16 + pad8(p.kind.length + p.name.length + p.state.length);
  const buf = Buffer.alloc(len);
  buf.writeUInt32LE(parts.length, 0);
  buf.writeBigUInt64LE(timeNs, 8);
  let off = 16;
  for (const p of parts) {
    buf.writeUInt16LE(p.kind.length, off);
    buf.writeUInt16LE(p.name.length, off + 2);
    buf.writeBigUInt64LE(BigInt(p.state.length), off + 8);
    off += 16;
    buf.set(p.kind, off);
    buf.set(p.name, off + p.kind.length);
    buf.set(p.state, off + p.kind.length + p.name.length);
    off += pad8(p.kind.length + p.name.length + p.state.length);
  }
  return buf;
}

/**
 * Decodes the hardware section of the image at `path`.
 *
 * @throws {@link MachineImageError} naming the first inconsistency
 */
export function decodeHardwareSection(
  buf: Buffer,
  path: string,
): { timeNs: bigint; records: HardwareRecord[] } {
  const fail = (message: string): MachineImageError => new MachineImageError(path, message);
  if (buf.length < 16) throw fail("hardware section too short");
  const count = buf.readUInt32LE(0);
  if (buf.readUInt32LE(4) !== 0) throw fail("hardware section: reserved field is not zero");
  const timeNs = buf.readBigUInt64LE(8);
  const records: HardwareRecord[] = [];
  const names = new Set<string>();
  let off = 16;
  for (let i = 0; i < count; i++) {
    if (off + 16 > buf.length) throw fail(`hardware record ${i} is truncated`);
    const kl = buf.readUInt16LE(off);
    const nl = buf.readUInt16LE(off + 2);
    const sl = buf.readBigUInt64LE(off + 8);
    if (buf.readUInt32LE(off + 4) !== 0) throw fail(`hardware record ${i}: reserved field is not zero`);
    off += 16;
    if (sl > BigInt(buf.length) || off + kl + nl + Number(sl) > buf.length) {
      throw fail(`hardware record ${i} runs past the end of the section`);
    }
    let kind: string;
    let name: string;
    try {
      kind = fromUtf8.decode(buf.subarray(off, off + kl));
      name = fromUtf8.decode(buf.subarray(off + kl, off + kl + nl));
    } catch {
      throw fail(`hardware record ${i}: kind or name is not UTF-8`);
    }
    if (kind.length === 0 || name.length === 0) throw fail(`hardware record ${i}: empty kind or name`);
    if (names.has(name)) throw fail(`hardware record ${i}: name "${name}" repeats`);
    names.add(name);
    const start = off + kl + nl;
    records.push({ kind, name, state: new Uint8Array(buf.subarray(start, start + Number(sl))) });
    off += pad8(kl + nl + Number(sl));
  }
  if (off !== buf.length) throw fail(`hardware section has ${buf.length - off} trailing bytes`);
  return { timeNs, records };
}
