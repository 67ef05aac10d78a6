// Corrupt-handover fuzzing helpers: build valid handovers once, snapshot their preserved pages,
// restore them between mutants without reloading an image, mutate the bytes (structure-aware
// and blind), boot and drive every mutant through the first /dev/liveupdate open, retrieval and
// finish, and check that it only fails the documented ways and never reads memory that was not
// handed over.
import { join } from "node:path";
import {
  BLOCK_HEADER_SIZE,
  FILE_BLOCKS,
  FILE_SER,
  FLB_AREA,
  FLB_SER,
  KernelPanicError,
  LiveUpdateError,
  MAP_ENTRIES_PER_PAGE,
  MAP_ENTRY_SIZE,
  MAP_HEADER_SIZE,
  Machine,
  PAGE_SIZE,
  SESSION_BLOCKS,
  SESSION_SER,
  decodeFdt,
  encodeFdt,
  fdtNode,
  fdtString,
  fdtU64,
  getProp,
  readFdtU64,
  type Kernel,
  type MemorySize,
} from "@luo/core";
import { createTestFile, testHandlerPlugin, type TestPlugin } from "@luo/core/testing";
import { tempDir } from "../fixtures/machine-helpers.js";
import { dec, enc } from "./luo.js";
import { Rng } from "./rng.js";

// ---------------------------------------------------------------------------------- FDT layout

/** Where a node or property of a blob sits (byte offsets inside the blob). */
export interface FdtLayout {
  readonly totalSize: number;
  readonly offStruct: number;
  readonly structEnd: number;
  readonly nodes: ReadonlyArray<{ path: string; name: string; nameOffset: number }>;
  readonly props: ReadonlyArray<{
    path: string;
    name: string;
    lenOffset: number;
    nameoffOffset: number;
    valueOffset: number;
    len: number;
  }>;
  /** Offsets (inside the strings block) of every property name. */
  readonly names: ReadonlyMap<string, number>;
}

const align4 = (n: number): number => (n + 3) & ~3;

/** Walks a valid blob (one the project wrote) and records where everything is. */
export function fdtLayout(blob: Uint8Array): FdtLayout {
  const dv = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  const totalSize = dv.getUint32(4);
  const offStruct = dv.getUint32(8);
  const offStrings = dv.getUint32(12);
  const nodes: Array<FdtLayout["nodes"][number]> = [];
  const props: Array<FdtLayout["props"][number]> = [];
  const names = new Map<string, number>();
  const stack: string[] = [];
  const pathOf = (): string => "/" + stack.slice(1).join("/");
  let off = offStruct;
  for (;;) {
    const token = dv.getUint32(off);
    if (token === 1) {
      const end = blob.indexOf(0, off + 4);
      const name = dec(blob.subarray(off + 4, end));
      stack.push(name);
      nodes.push({ path: pathOf(), name, nameOffset: off + 4 });
      off = align4(end + 1);
    } else if (token === 2) {
      stack.pop();
      off += 4;
    } else if (token === 3) {
      const len = dv.getUint32(off + 4);
      const nameoff = dv.getUint32(off + 8);
      const nend = blob.indexOf(0, offStrings + nameoff);
      const name = dec(blob.subarray(offStrings + nameoff, nend));
      names.set(name, nameoff);
      props.push({
        path: pathOf(),
        name,
        lenOffset: off + 4,
        nameoffOffset: off + 8,
        valueOffset: off + 12,
        len,
      });
      off = align4(off + 12 + len);
    } else if (token === 4) {
      off += 4;
    } else if (token === 9) {
      off += 4;
      break;
    } else {
      throw new Error(`unexpected FDT token ${token} at ${off}`);
    }
  }
  return { totalSize, offStruct, structEnd: off, nodes, props, names };
}

// ---------------------------------------------------------------------------------- base handovers

/** A structure of the handover, for targeted mutations. */
export type RegionKind =
  "kho-root" | "map" | "luo-fdt" | "session-block" | "file-block" | "flb" | "file-data";

/** One structure of a handover and the bytes of it that are in use. */
export interface Region {
  readonly kind: RegionKind;
  readonly phys: bigint;
  /** Bytes in use (header + entries, or the FDT's totalsize). */
  readonly used: number;
}

/** A session record in the handover. */
export interface SessionLayout {
  readonly name: string;
  /** Physical address of the 80-byte record. */
  readonly record: bigint;
  readonly fileBlocks: readonly bigint[];
  /** Physical addresses of the 64-byte file records, in order. */
  readonly fileRecords: readonly bigint[];
}

/** What a handover looks like, found by walking it once (trusting it: it is valid). */
export interface HandoverLayout {
  readonly root: bigint;
  readonly mapPages: readonly bigint[];
  readonly luoFdt: bigint;
  readonly flbPage: bigint;
  readonly flbCount: number;
  readonly sessionBlocks: readonly bigint[];
  readonly sessions: readonly SessionLayout[];
  readonly fileData: readonly bigint[];
  readonly rootFdt: FdtLayout;
  readonly luoFdtLayout: FdtLayout;
}

/** How to build a base handover. */
export interface BaseSpec {
  readonly name: string;
  readonly memory: MemorySize;
  /** Test FLBs linked to the test handler. */
  readonly flbs: number;
  /** Sessions in creation order, with their number of files. */
  readonly sessions: ReadonlyArray<{ name: string; files: number }>;
  /**
   * Extra single pages the old kernel preserves without telling LUO (so the preserved-memory map
   * spans several pages); the next kernel never restores them.
   */
  readonly extraPages?: number;
  /**
   * Runs in the old kernel after the sessions are created and before the kexec (e.g. to allocate
   * extra preserved memory that a test links in afterwards).
   */
  readonly beforeKexec?: (kernel: Kernel) => void;
}

/** A machine with a pending handover, as {@link driveMutant} needs it. */
export interface FuzzTarget {
  readonly machine: Machine;
  /** Per page frame: 1 when preserved in the pristine handover. */
  readonly preserved: Uint8Array;
  /** Test FLBs the next kernel registers. */
  readonly flbs: number;
}

/** A valid handover, ready to be restored and mutated. */
export interface BaseHandover extends FuzzTarget {
  readonly spec: BaseSpec;
  readonly khoRoot: bigint;
  /** Every preserved block and its bytes, as the next kernel would find them. */
  readonly blocks: ReadonlyArray<{ phys: bigint; order: number; bytes: Uint8Array }>;
  readonly layout: HandoverLayout;
  readonly regions: readonly Region[];
  /** Interesting u64 values: special numbers and addresses in, around and outside the handover. */
  readonly pointers: readonly bigint[];
  /** Every file token, for duplicate-token mutations. */
  readonly tokens: readonly bigint[];
}

const token = (i: number): bigint => (i === 1 ? 0xffff_ffff_ffff_ffffn : BigInt(i) * 7n);

function u64At(m: Machine, phys: bigint): bigint {
  return m.readU64(phys);
}

/** Reads the layout of a valid pending handover. */
export function walkHandover(m: Machine): HandoverLayout {
  const root = m.khoRoot;
  const rootSize = new DataView(m.peek(root, 8).buffer).getUint32(4);
  const rootBlob = m.peek(root, rootSize);
  const rootTree = decodeFdt(rootBlob);
  const mapPages: bigint[] = [];
  for (let p = readFdtU64(getProp(rootTree.root, "preserved-memory-map")); p !== 0n; p = u64At(m, p)) {
    mapPages.push(p);
  }
  const luoNode = rootTree.root.children.find((c) => c.name === "LUO")!;
  const luoFdt = readFdtU64(getProp(luoNode, "fdt"));
  const luoBlob = m.peek(luoFdt, PAGE_SIZE);
  const luo = decodeFdt(luoBlob);
  const child = (n: string) => luo.root.children.find((c) => c.name === n)!;
  const sessionHead = readFdtU64(getProp(child("luo-session"), "luo-session-header"));
  const flbPage = readFdtU64(getProp(child("luo-flb"), "luo-flb-header"));
  const sessionBlocks: bigint[] = [];
  const sessions: SessionLayout[] = [];
  const fileData: bigint[] = [];
  for (let b = sessionHead; b !== 0n; b = u64At(m, b)) {
    sessionBlocks.push(b);
    const count = Number(u64At(m, b + 8n));
    for (let i = 0; i < count; i++) {
      const record = b + BigInt(BLOCK_HEADER_SIZE + i * SESSION_SER.size);
      const nameBytes = m.peek(record, 64);
      const name = dec(nameBytes.subarray(0, nameBytes.indexOf(0)));
      const fileBlocks: bigint[] = [];
      const fileRecords: bigint[] = [];
      for (let f = u64At(m, record + BigInt(SESSION_SER.files)); f !== 0n; f = u64At(m, f)) {
        fileBlocks.push(f);
        const n = Number(u64At(m, f + 8n));
        for (let j = 0; j < n; j++) {
          const r = f + BigInt(BLOCK_HEADER_SIZE + j * FILE_SER.size);
          fileRecords.push(r);
          fileData.push(u64At(m, r + BigInt(FILE_SER.data)));
        }
      }
      sessions.push({ name, record, fileBlocks, fileRecords });
    }
  }
  return {
    root,
    mapPages,
    luoFdt,
    flbPage,
    flbCount: Number(u64At(m, flbPage + 8n)),
    sessionBlocks,
    sessions,
    fileData,
    rootFdt: fdtLayout(rootBlob),
    luoFdtLayout: fdtLayout(luoBlob),
  };
}

function regionsOf(m: Machine, l: HandoverLayout): Region[] {
  const count = (p: bigint): number => Number(u64At(m, p + 8n));
  const out: Region[] = [
    { kind: "kho-root", phys: l.root, used: l.rootFdt.totalSize },
    { kind: "luo-fdt", phys: l.luoFdt, used: l.luoFdtLayout.totalSize },
    { kind: "flb", phys: l.flbPage, used: FLB_AREA.headerSize + count(l.flbPage) * FLB_SER.size },
  ];
  for (const p of l.mapPages)
    out.push({ kind: "map", phys: p, used: MAP_HEADER_SIZE + count(p) * MAP_ENTRY_SIZE });
  for (const b of l.sessionBlocks) {
    out.push({ kind: "session-block", phys: b, used: BLOCK_HEADER_SIZE + count(b) * SESSION_SER.size });
  }
  for (const s of l.sessions) {
    for (const b of s.fileBlocks) {
      out.push({ kind: "file-block", phys: b, used: BLOCK_HEADER_SIZE + count(b) * FILE_SER.size });
    }
  }
  for (const d of l.fileData) out.push({ kind: "file-data", phys: d, used: 8 + m.readU32(d + 4n) });
  return out;
}

function pointerPool(m: Machine, l: HandoverLayout, preserved: Uint8Array): bigint[] {
  const P = BigInt(PAGE_SIZE);
  const pool = new Set<bigint>([
    0n,
    1n,
    8n,
    0xfffn,
    P,
    1n << 32n,
    1n << 52n,
    1n << 63n,
    (1n << 64n) - 1n,
    (1n << 64n) - P,
    m.base - P,
    m.base,
    m.base + 8n,
    m.end - P,
    m.end - 8n,
    m.end,
    m.end + P,
  ]);
  // A page inside RAM that was not handed over (never allocated, or scrubbed).
  const free = preserved.findIndex((x) => x === 0);
  if (free >= 0) {
    const p = m.base + BigInt(free) * P;
    pool.add(p);
    pool.add(p + 8n);
  }
  const structures = [
    l.root,
    l.luoFdt,
    l.flbPage,
    ...l.mapPages,
    ...l.sessionBlocks,
    ...l.sessions.flatMap((s) => s.fileBlocks),
    ...l.fileData.slice(0, 8),
  ];
  for (const s of structures) {
    for (const d of [0n, 1n, 8n, P, 2n * P, 16n * P]) pool.add(s + d);
    pool.add(s - P);
  }
  return [...pool].filter((v) => v >= 0n && v < 1n << 64n);
}

/**
 * Builds a handover from `spec` on a fresh machine with the test handler, kexecs with `saveTo`
 * (so no next kernel consumes it) and snapshots every preserved block.
 */
export async function buildBase(spec: BaseSpec): Promise<BaseHandover> {
  const machine = new Machine({ memory: spec.memory });
  const plugin = testHandlerPlugin({ flbs: spec.flbs });
  const kernel = await machine.boot({ plugins: [plugin] });
  const proc = kernel.spawn("builder");
  const dev = await proc.openLiveUpdate();
  let n = 0;
  const tokens: bigint[] = [];
  for (const s of spec.sessions) {
    const h = await dev.createSession(s.name);
    for (let i = 0; i < s.files; i++, n++) {
      const fd = createTestFile(proc, `f${n}`, enc(`file ${n} of ${s.name}`));
      await h.preserveFd(fd, token(i));
      tokens.push(token(i));
      proc.close(fd);
    }
  }
  for (let i = 0; i < (spec.extraPages ?? 0); i++) kernel.kho.allocPreserve(PAGE_SIZE);
  spec.beforeKexec?.(kernel);
  const { dir, cleanup } = await tempDir("fuzz");
  try {
    await kernel.kexec({ saveTo: join(dir, "base.img") });
  } finally {
    await cleanup();
  }
  // After the scrub every allocated block is preserved: exactly what the next kernel finds.
  const blocks = machine.blocks().map((b) => ({ ...b, bytes: machine.peek(b.phys, PAGE_SIZE << b.order) }));
  const preserved = new Uint8Array(machine.totalPages);
  for (const b of blocks) {
    const first = Number((b.phys - machine.base) / BigInt(PAGE_SIZE));
    preserved.fill(1, first, first + (1 << b.order));
  }
  const layout = walkHandover(machine);
  return {
    spec,
    machine,
    khoRoot: machine.khoRoot,
    blocks,
    preserved,
    flbs: spec.flbs,
    layout,
    regions: regionsOf(machine, layout),
    pointers: pointerPool(machine, layout, preserved),
    tokens,
  };
}

/** Puts the machine back into the pristine post-kexec state of `base`. */
export function restore(base: BaseHandover): void {
  const m = base.machine;
  m.resetAllocator(base.blocks);
  for (const b of base.blocks) m.markPreserved(b.phys, b.order);
  m.scrub(); // poisons whatever the previous mutant's kernel left in non-preserved pages
  for (const b of base.blocks) m.write(b.phys, b.bytes);
  m.khoRoot = base.khoRoot;
}

// ---------------------------------------------------------------------------------- access guard

type Reader = "peek" | "view" | "read" | "readU32" | "readU64";
const READERS: readonly Reader[] = ["peek", "view", "read", "readU32", "readU64"];
const READ_LENGTH: Partial<Record<Reader, number>> = { readU32: 4, readU64: 8 };

/**
 * Instruments a machine instance (own properties shadowing the prototype methods, test only):
 * while armed, every read must stay inside pages that were preserved before the boot or that the
 * new kernel allocated itself (fresh, zeroed pages). Violations are recorded, not thrown, so the
 * code under test behaves exactly as it would without the guard.
 */
export class AccessGuard {
  private armed = false;
  private allowed = new Uint8Array(0);
  readonly violations: string[] = [];

  constructor(readonly machine: Machine) {
    const m = machine as unknown as Record<string, unknown>;
    const proto = Machine.prototype as unknown as Record<string, (...args: unknown[]) => unknown>;
    for (const name of READERS) {
      const original = proto[name]!;
      m[name] = (phys: bigint, length?: number) => {
        if (this.armed) this.check(name, phys, READ_LENGTH[name] ?? length ?? 0);
        return original.call(machine, phys, length);
      };
    }
    const copy = proto.copy!;
    m.copy = (dst: bigint, src: bigint, length: number) => {
      if (this.armed) this.check("copy", src, length);
      return copy.call(machine, dst, src, length);
    };
    const allocPages = proto.allocPages!;
    m.allocPages = (order?: number) => {
      const phys = allocPages.call(machine, order) as bigint;
      if (this.armed) {
        const first = Number((phys - machine.base) / BigInt(PAGE_SIZE));
        this.allowed.fill(1, first, first + (1 << (order ?? 0)));
      }
      return phys;
    };
  }

  /** Starts checking against `preserved` (per page frame: 1 when handed over). */
  arm(preserved: Uint8Array): void {
    this.allowed = preserved.slice();
    this.violations.length = 0;
    this.armed = true;
  }

  /** Stops checking. */
  disarm(): void {
    this.armed = false;
  }

  private check(what: string, phys: bigint, length: number): void {
    const m = this.machine;
    if (typeof phys !== "bigint" || phys < m.base || phys + BigInt(Math.max(length, 1)) > m.end) {
      this.violations.push(`${what}(0x${String(phys.toString(16))}, ${length}) outside RAM`);
      return;
    }
    const first = Number((phys - m.base) / BigInt(PAGE_SIZE));
    const last = Number((phys + BigInt(Math.max(length, 1)) - 1n - m.base) / BigInt(PAGE_SIZE));
    for (let p = first; p <= last; p++) {
      if (this.allowed[p] !== 1) {
        this.violations.push(`${what}(0x${phys.toString(16)}, ${length}) touches page ${p}, not handed over`);
        return;
      }
    }
  }
}

// ---------------------------------------------------------------------------------- mutations

/** A named change to a restored handover. */
export interface Mutation {
  /** Mutation family, for the statistics. */
  readonly kind: string;
  /** What exactly was changed, for failure reports. */
  readonly detail: string;
  apply(m: Machine): void;
}

const hex = (v: bigint | number): string => `0x${v.toString(16)}`;

/** Writes a little-endian u64 (truncated to 64 bits) into handed-over memory. */
export function writeU64(m: Machine, phys: bigint, v: bigint): void {
  m.writeU64(phys, v & 0xffff_ffff_ffff_ffffn);
}
/** Writes bytes into handed-over memory. */
export function writeBytes(m: Machine, phys: bigint, bytes: ArrayLike<number>): void {
  m.write(phys, Uint8Array.from(bytes));
}
function writeBe32(m: Machine, phys: bigint, v: number): void {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0);
  m.write(phys, b);
}
function writeBe64(m: Machine, phys: bigint, v: bigint): void {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v);
  m.write(phys, b);
}

const CHAIN_KINDS = ["session-block", "file-block", "map"] as const;
type ChainKind = (typeof CHAIN_KINDS)[number];

const BLOCK_MAX: Record<RegionKind, number> = {
  "session-block": SESSION_BLOCKS.perBlock,
  "file-block": FILE_BLOCKS.perBlock,
  map: MAP_ENTRIES_PER_PAGE,
  flb: FLB_AREA.max,
  "kho-root": 0,
  "luo-fdt": 0,
  "file-data": 0,
};

/** Generates mutations of one base handover. */
export class Mutator {
  private readonly byKind = new Map<RegionKind, Region[]>();

  constructor(
    readonly base: BaseHandover,
    readonly rng: Rng,
  ) {
    for (const r of base.regions) {
      const list = this.byKind.get(r.kind) ?? [];
      list.push(r);
      this.byKind.set(r.kind, list);
    }
  }

  private regions(kind: RegionKind): Region[] {
    return this.byKind.get(kind) ?? [];
  }

  private pointer(): bigint {
    return this.rng.chance(0.1) ? this.rng.u64() : this.rng.pick(this.base.pointers);
  }

  private region(kinds: readonly RegionKind[]): Region | undefined {
    const present = kinds.filter((k) => this.regions(k).length > 0);
    if (present.length === 0) return undefined;
    return this.rng.pick(this.regions(this.rng.pick(present)));
  }

  /** Every generator by name; a generator returns undefined when the base has nothing to hit. */
  readonly generators: Record<string, () => Mutation | undefined> = {
    bitflip: () => {
      const r = this.region(["kho-root", "map", "luo-fdt", "session-block", "file-block", "flb"]);
      if (!r) return undefined;
      const at = r.phys + BigInt(this.rng.int(r.used));
      const bits = 1 + (this.rng.chance(0.2) ? this.rng.int(3) : 0);
      const masks = Array.from({ length: bits }, () => 1 << this.rng.int(8));
      return {
        kind: `bitflip/${r.kind}`,
        detail: `flip ${masks.join("|")} at ${hex(at)} (${r.kind} ${hex(r.phys)})`,
        apply: (m) => {
          let b = m.peek(at, 1)[0]!;
          for (const mask of masks) b ^= mask;
          writeBytes(m, at, [b]);
        },
      };
    },
    byte: () => {
      const r = this.region(["kho-root", "map", "luo-fdt", "session-block", "file-block", "flb"]);
      if (!r) return undefined;
      const at = r.phys + BigInt(this.rng.int(r.used));
      const v = this.rng.pick([0, 0xff, 0x80, 0x7f, 1, this.rng.int(256)]);
      return {
        kind: `byte/${r.kind}`,
        detail: `byte ${hex(v)} at ${hex(at)} (${r.kind} ${hex(r.phys)})`,
        apply: (m) => writeBytes(m, at, [v]),
      };
    },
    u64: () => {
      const r = this.region(["map", "session-block", "file-block", "flb"]);
      if (!r) return undefined;
      const at = r.phys + BigInt(8 * this.rng.int(Math.floor(r.used / 8)));
      const v = this.pointer();
      return {
        kind: `u64/${r.kind}`,
        detail: `u64 ${hex(v)} at ${hex(at)} (${r.kind} ${hex(r.phys)})`,
        apply: (m) => writeU64(m, at, v),
      };
    },
    next: () => {
      // Half of the time cut a chain short (counts left behind): only multi-block chains qualify.
      const withSuccessor = CHAIN_KINDS.flatMap((k) =>
        this.regions(k).filter((r) => {
          const chain = this.chainOf(r);
          return chain.indexOf(r.phys) + 1 < chain.length;
        }),
      );
      if (withSuccessor.length > 0 && this.rng.chance(0.5)) {
        const r = this.rng.pick(withSuccessor);
        const chain = this.chainOf(r);
        return {
          kind: "next/truncate",
          detail: `${r.kind} ${hex(r.phys)} (block ${chain.indexOf(r.phys)} of ${chain.length}) next → 0`,
          apply: (m) => writeU64(m, r.phys, 0n),
        };
      }
      const r = this.region(CHAIN_KINDS);
      if (!r) return undefined;
      const chain = this.chainOf(r);
      const i = chain.indexOf(r.phys);
      const sameKind = this.regions(r.kind).map((x) => x.phys);
      const choices: Array<[string, bigint]> = [
        ["cycle-self", r.phys],
        ["cycle-head", chain[0]!],
        ["cycle-earlier", chain[this.rng.int(i + 1)]!],
        ["other-chain", this.rng.pick(sameKind)],
        ["pointer", this.pointer()],
      ];
      const [how, v] = this.rng.pick(choices);
      return {
        kind: `next/${how}`,
        detail: `${r.kind} ${hex(r.phys)} (block ${i} of ${chain.length}) next → ${hex(v)}`,
        apply: (m) => writeU64(m, r.phys, v),
      };
    },
    count: () => {
      const r = this.region([...CHAIN_KINDS, "flb"]);
      if (!r) return undefined;
      const max = BLOCK_MAX[r.kind];
      const cur = BigInt(Math.floor((r.used - 16) / this.entrySize(r.kind)));
      const choices: Array<[string, bigint]> = [
        ["zero", 0n],
        ["max", BigInt(max)],
        ["over-max", BigInt(max) + 1n],
        ["huge", (1n << 64n) - 1n],
        ["u32", 1n << 32n],
        ["plus-one", cur + 1n],
        ["minus-one", cur - 1n < 0n ? 0n : cur - 1n],
      ];
      const [how, v] = this.rng.pick(choices);
      const field = r.kind === "flb" && this.rng.chance(0.3) ? 0n : 8n; // FLB pgcnt sometimes
      return {
        kind: `count/${how}`,
        detail: `${r.kind} ${hex(r.phys)} ${field === 0n ? "pgcnt" : "count"} → ${v}`,
        apply: (m) => writeU64(m, r.phys + field, v),
      };
    },
    session: () => {
      const sessions = this.base.layout.sessions;
      if (sessions.length === 0) return undefined;
      const s = this.rng.pick(sessions);
      const others = sessions.filter((x) => x !== s && x.fileBlocks.length > 0);
      const choices: Array<[string, bigint, bigint]> = [
        [
          "nfiles",
          BigInt(SESSION_SER.nfiles),
          this.rng.pick([
            0n,
            1n,
            BigInt(s.fileRecords.length + 1),
            BigInt(Math.max(0, s.fileRecords.length - 1)),
            (1n << 64n) - 1n,
          ]),
        ],
        ["files-ptr", BigInt(SESSION_SER.files), this.pointer()],
        ["files-zero", BigInt(SESSION_SER.files), 0n],
      ];
      if (others.length > 0) {
        const o = this.rng.pick(others);
        choices.push(["files-shared", BigInt(SESSION_SER.files), this.rng.pick(o.fileBlocks)]);
      }
      const [how, field, v] = this.rng.pick(choices);
      return {
        kind: `session/${how}`,
        detail: `session ${JSON.stringify(s.name)} record ${hex(s.record)} +${field} → ${hex(v)}`,
        apply: (m) => writeU64(m, s.record + field, v),
      };
    },
    "files-shared-exact": () => {
      // Two sessions with the same file chain and matching counts: every chain alone is valid.
      const withFiles = this.base.layout.sessions.filter((x) => x.fileBlocks.length > 0);
      if (withFiles.length < 1 || this.base.layout.sessions.length < 2) return undefined;
      const src = this.rng.pick(withFiles);
      const dst = this.rng.pick(this.base.layout.sessions.filter((x) => x !== src));
      return {
        kind: "session/files-shared-exact",
        detail: `session ${JSON.stringify(dst.name)} takes the file chain of ${JSON.stringify(src.name)}`,
        apply: (m) => {
          writeU64(m, dst.record + BigInt(SESSION_SER.files), src.fileBlocks[0]!);
          writeU64(m, dst.record + BigInt(SESSION_SER.nfiles), BigInt(src.fileRecords.length));
        },
      };
    },
    string: () => {
      const targets: Array<[string, bigint, number]> = [];
      for (const s of this.base.layout.sessions.slice(0, 64)) targets.push(["session-name", s.record, 64]);
      for (const s of this.base.layout.sessions) {
        for (const f of s.fileRecords.slice(0, 4)) targets.push(["file-compatible", f, 48]);
      }
      for (let i = 0; i < this.base.layout.flbCount; i++) {
        targets.push(["flb-name", this.base.layout.flbPage + BigInt(16 + i * FLB_SER.size), 48]);
      }
      if (targets.length === 0) return undefined;
      const [what, at, size] = this.rng.pick(targets);
      const names = this.base.layout.sessions.map((s) => s.name);
      const variants: Array<[string, number[]]> = [
        ["no-nul", Array.from({ length: size }, () => 0x41)],
        ["invalid-utf8", [0xff, 0xfe, 0]],
        ["lone-continuation", [0x41, 0x80, 0]],
        ["truncated-utf8", [0x41, 0xe6, 0x97, 0]],
        ["empty", [0]],
        ["max-length", [...Array.from({ length: size - 1 }, () => 0x7a), 0]],
        ["unknown", [...enc("luo-test-v9"), 0]],
        ["duplicate", [...enc(this.rng.pick(names.length > 0 ? names : ["x"])), 0]],
      ];
      const [how, bytes] = this.rng.pick(variants);
      return {
        kind: `string/${how}`,
        detail: `${what} at ${hex(at)} → ${how}`,
        apply: (m) => writeBytes(m, at, bytes),
      };
    },
    file: () => {
      const files = this.base.layout.sessions.flatMap((s) => s.fileRecords.map((r) => [s, r] as const));
      if (files.length === 0) return undefined;
      const [s, r] = this.rng.pick(files);
      const choices: Array<[string, number, bigint]> = [
        ["data-ptr", FILE_SER.data, this.pointer()],
        ["data-other", FILE_SER.data, this.rng.pick(this.base.layout.fileData)],
        ["token-dup", FILE_SER.token, this.rng.pick(this.base.tokens)],
        ["token-any", FILE_SER.token, this.rng.u64()],
      ];
      const [how, field, v] = this.rng.pick(choices);
      return {
        kind: `file/${how}`,
        detail: `file record ${hex(r)} of ${JSON.stringify(s.name)} +${field} → ${hex(v)}`,
        apply: (m) => writeU64(m, r + BigInt(field), v),
      };
    },
    "file-content": () => {
      const r = this.region(["file-data"]);
      if (!r) return undefined;
      const field = this.rng.pick([0, 4]);
      const v = this.rng.pick([0, 0xffffffff, 4 * PAGE_SIZE - 8, 4 * PAGE_SIZE - 7, this.rng.u32()]);
      return {
        kind: "file-content",
        detail: `test file block ${hex(r.phys)} u32 +${field} → ${hex(v)}`,
        apply: (m) => m.writeU32(r.phys + BigInt(field), v),
      };
    },
    map: () => {
      const r = this.region(["map"]);
      if (!r) return undefined;
      const count = (r.used - MAP_HEADER_SIZE) / MAP_ENTRY_SIZE;
      const j = this.rng.int(count);
      const e = r.phys + BigInt(MAP_HEADER_SIZE + j * MAP_ENTRY_SIZE);
      const how = this.rng.pick(["phys", "order", "reserved", "remove", "duplicate", "grow-order"]);
      const detail = `map page ${hex(r.phys)} entry ${j}: ${how}`;
      const apply = (m: Machine): void => {
        switch (how) {
          case "phys":
            writeU64(m, e, this.pointer());
            break;
          case "order":
            m.writeU32(e + 8n, this.rng.pick([1, 2, 4, 9, 10, 31, 0xffffffff]));
            break;
          case "grow-order":
            m.writeU32(e + 8n, m.readU32(e + 8n) + 1);
            break;
          case "reserved":
            m.writeU32(e + 12n, this.rng.pick([1, 0x80000000]));
            break;
          case "remove": {
            const last = r.phys + BigInt(MAP_HEADER_SIZE + (count - 1) * MAP_ENTRY_SIZE);
            m.write(e, m.peek(last, MAP_ENTRY_SIZE));
            writeU64(m, r.phys + 8n, BigInt(count - 1));
            break;
          }
          case "duplicate": {
            if (count >= MAP_ENTRIES_PER_PAGE) {
              writeU64(m, r.phys + 8n, BigInt(count + 1));
              break;
            }
            const end = r.phys + BigInt(MAP_HEADER_SIZE + count * MAP_ENTRY_SIZE);
            m.write(end, m.peek(e, MAP_ENTRY_SIZE));
            writeU64(m, r.phys + 8n, BigInt(count + 1));
            break;
          }
        }
      };
      return { kind: `map/${how}`, detail, apply };
    },
    "fdt-compatible": () => {
      const [which, phys, layout] = this.fdt();
      const compat = layout.props.filter((p) => p.name === "compatible");
      const p = this.rng.pick(compat);
      const at = phys + BigInt(p.valueOffset);
      const how = this.rng.pick(["version", "no-nul", "empty", "invalid-utf8", "case", "swap"]);
      const apply = (m: Machine): void => {
        switch (how) {
          case "version": {
            const last = at + BigInt(p.len - 2);
            writeBytes(m, last, [m.peek(last, 1)[0]! + 1]);
            break;
          }
          case "no-nul":
            writeBytes(m, at + BigInt(p.len - 1), [0x78]);
            break;
          case "empty":
            writeBytes(m, at, [0]);
            break;
          case "invalid-utf8":
            writeBytes(m, at, [0xc0]);
            break;
          case "case": // "LUO-V1": same bytes, other case
            m.write(at, enc(this.fdtString(m, at, p.len).toUpperCase()));
            break;
          case "swap": {
            // The other tree's root compatible where it fits: "kho-v1" ↔ "luo-v1".
            const cur = this.fdtString(m, at, p.len);
            const swapped =
              cur === "kho-v1" ? "luo-v1" : cur === "luo-v1" ? "kho-v1" : cur.replace(/v\d+$/, "v0");
            m.write(at, enc(swapped));
            break;
          }
        }
      };
      return { kind: `fdt-compatible/${how}`, detail: `${which} FDT ${p.path} compatible: ${how}`, apply };
    },
    "fdt-missing": () => {
      const [which, phys, layout] = this.fdt();
      if (this.rng.chance(0.5)) {
        const nodes = layout.nodes.filter((n) => n.path !== "/");
        const n = this.rng.pick(nodes);
        return {
          kind: "fdt-missing/node",
          detail: `${which} FDT node ${n.path} renamed`,
          apply: (m) => writeBytes(m, phys + BigInt(n.nameOffset), [0x58]),
        };
      }
      const p = this.rng.pick(layout.props);
      const other = this.rng.pick([...layout.names.entries()].filter(([name]) => name !== p.name));
      return {
        kind: "fdt-missing/prop",
        detail: `${which} FDT ${p.path}:${p.name} renamed to ${other[0]}`,
        apply: (m) => writeBe32(m, phys + BigInt(p.nameoffOffset), other[1]),
      };
    },
    "fdt-pointer": () => {
      const [which, phys, layout] = this.fdt();
      const props = layout.props.filter((p) => p.len === 8);
      const p = this.rng.pick(props);
      const v = this.pointer();
      return {
        kind: `fdt-pointer/${p.name}`,
        detail: `${which} FDT ${p.path}:${p.name} → ${hex(v)}`,
        apply: (m) => writeBe64(m, phys + BigInt(p.valueOffset), v),
      };
    },
    "fdt-len": () => {
      const [which, phys, layout] = this.fdt();
      const p = this.rng.pick(layout.props);
      const v = this.rng.pick([0, 4, 7, 9, 16, p.len + 4, 0xffffffff, layout.totalSize, 0x7fffffff]);
      return {
        kind: "fdt-len",
        detail: `${which} FDT ${p.path}:${p.name} len ${p.len} → ${v}`,
        apply: (m) => writeBe32(m, phys + BigInt(p.lenOffset), v),
      };
    },
    "fdt-header": () => {
      const [which, phys, layout] = this.fdt();
      const field = this.rng.int(10) * 4;
      const v = this.rng.pick([
        0,
        1,
        16,
        17,
        18,
        0xffffffff,
        0x80000000,
        4096,
        4097,
        (1 << 21) + 1,
        layout.totalSize - 1,
        layout.totalSize + 4,
      ]);
      return {
        kind: "fdt-header",
        detail: `${which} FDT header +${field} → ${v}`,
        apply: (m) => writeBe32(m, phys + BigInt(field), v),
      };
    },
    "fdt-token": () => {
      const [which, phys, layout] = this.fdt();
      const off = layout.offStruct + 4 * this.rng.int((layout.structEnd - layout.offStruct) / 4);
      const v = this.rng.pick([0, 1, 2, 3, 4, 5, 9, 0xffffffff]);
      return {
        kind: "fdt-token",
        detail: `${which} FDT struct word +${off} → ${v}`,
        apply: (m) => writeBe32(m, phys + BigInt(off), v),
      };
    },
    "kho-root": () => {
      const v = this.pointer();
      return {
        kind: "kho-root-address",
        detail: `machine.khoRoot → ${hex(v)}`,
        apply: (m) => {
          m.khoRoot = v;
        },
      };
    },
  };

  private fdtString(m: Machine, at: bigint, len: number): string {
    return dec(m.peek(at, len - 1));
  }

  private entrySize(kind: RegionKind): number {
    if (kind === "session-block") return SESSION_SER.size;
    if (kind === "file-block") return FILE_SER.size;
    if (kind === "flb") return FLB_SER.size;
    return MAP_ENTRY_SIZE;
  }

  private chainOf(r: Region): readonly bigint[] {
    const l = this.base.layout;
    const k = r.kind as ChainKind;
    if (k === "map") return l.mapPages;
    if (k === "session-block") return l.sessionBlocks;
    return l.sessions.find((s) => s.fileBlocks.includes(r.phys))!.fileBlocks;
  }

  private fdt(): [string, bigint, FdtLayout] {
    const l = this.base.layout;
    return this.rng.chance(0.5) ? ["KHO root", l.root, l.rootFdt] : ["luo", l.luoFdt, l.luoFdtLayout];
  }

  /** One mutation of family `name` (`havoc` combines 2..5 of the others). */
  make(name: string): Mutation | undefined {
    if (name !== "havoc") return this.generators[name]!();
    const parts: Mutation[] = [];
    const names = Object.keys(this.generators).filter((n) => n !== "kho-root");
    const n = 2 + this.rng.int(4);
    while (parts.length < n) {
      const m = this.generators[this.rng.pick(names)]!();
      if (m) parts.push(m);
    }
    return {
      kind: "havoc",
      detail: parts.map((p) => p.detail).join("; "),
      apply: (m) => parts.forEach((p) => p.apply(m)),
    };
  }
}

// ---------------------------------------------------------------------------------- long chains

/**
 * Turns the single-file session 0 of `base` into a file chain of `blocks` distinct 2-page blocks:
 * its own block followed by `extra` blocks (preserved by the old kernel, so the KHO map lists
 * them), one file record each with distinct tokens, and sets the session's `nfiles` to match.
 */
export function linkLongFileChain(base: BaseHandover, extra: readonly bigint[], blocks: number): void {
  const m = base.machine;
  const s = base.layout.sessions[0]!;
  const chain = [s.fileBlocks[0]!, ...extra.slice(0, blocks - 1)];
  if (chain.length !== blocks) throw new Error(`only ${chain.length} blocks available`);
  const compatible = enc("luo-test-v1");
  for (let i = 0; i < chain.length; i++) {
    const b = chain[i]!;
    writeU64(m, b, chain[i + 1] ?? 0n);
    if (i === 0) continue;
    writeU64(m, b + 8n, 1n);
    const rec = b + BigInt(BLOCK_HEADER_SIZE);
    m.write(rec + BigInt(FILE_SER.compatible), compatible);
    writeU64(m, rec + BigInt(FILE_SER.data), 0n);
    writeU64(m, rec + BigInt(FILE_SER.token), 1_000_000n + BigInt(i));
  }
  writeU64(m, s.record + BigInt(SESSION_SER.nfiles), BigInt(blocks));
}

/**
 * A hand-made handover on a fresh machine: a KHO root without subtrees and a preserved-memory
 * map of `pages` pages, each listing itself (the first also lists the root).
 */
export function craftMapChain(memory: MemorySize, pages: number): FuzzTarget {
  const m = new Machine({ memory });
  const root = m.allocPages(0);
  m.markPreserved(root);
  const map: bigint[] = [];
  for (let i = 0; i < pages; i++) {
    const p = m.allocPages(0);
    m.markPreserved(p);
    map.push(p);
  }
  const page = new Uint8Array(PAGE_SIZE);
  const dv = new DataView(page.buffer);
  map.forEach((p, i) => {
    page.fill(0);
    dv.setBigUint64(0, map[i + 1] ?? 0n, true);
    dv.setBigUint64(8, i === 0 ? 2n : 1n, true);
    dv.setBigUint64(MAP_HEADER_SIZE, p, true);
    if (i === 0) dv.setBigUint64(MAP_HEADER_SIZE + MAP_ENTRY_SIZE, root, true);
    m.write(p, page);
  });
  m.write(
    root,
    encodeFdt({
      root: fdtNode("", { compatible: fdtString("kho-v1"), "preserved-memory-map": fdtU64(map[0]!) }),
      reservations: [],
      bootCpuid: 0,
    }),
  );
  m.scrub();
  m.khoRoot = root;
  const preserved = new Uint8Array(m.totalPages);
  for (const p of [root, ...map]) preserved[Number((p - m.base) / BigInt(PAGE_SIZE))] = 1;
  return { machine: m, preserved, flbs: 0 };
}

// ---------------------------------------------------------------------------------- running

/** How a mutant ended. */
export type OutcomeKind = "clean" | "panic" | "eio" | "retrieve-error" | "failure";

/** The result of one mutant. */
export interface Outcome {
  readonly kind: OutcomeKind;
  /** Why a failure is one. */
  readonly reason?: string;
  /** The error of a panic / EIO / failure. */
  readonly error?: unknown;
  /** Sessions and files retrieved (clean and retrieve-error). */
  readonly sessions?: number;
  readonly files?: number;
  /** Handed-over pages nobody restored after everything finished (clean and retrieve-error). */
  readonly unrestored?: number;
  readonly ms: number;
}

class Timeout {
  constructor(readonly what: string) {}
}

/** Settles like `p`, or rejects with a {@link Timeout} naming `stage()` after `ms`. */
async function withTimeout<T>(p: Promise<T>, ms: number, stage: () => string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Timeout(stage())), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** A LiveUpdateError itself, not a subclass (a raw FdtError or MachineImageError is a bug). */
function isPlain(e: unknown): e is LiveUpdateError {
  return e instanceof LiveUpdateError && e.constructor === LiveUpdateError;
}

/** A panic must say where: a physical address. */
export const LOCATION = /0x[0-9a-f]+/;

function explain(e: unknown): string {
  if (e instanceof Timeout) return `hang (${e.what})`;
  if (e instanceof Error) return `${e.constructor.name}: ${e.message}`;
  return `non-error ${String(e)}`;
}

/**
 * Boots the (restored and mutated) machine of `target` and drives the next kernel: first
 * /dev/liveupdate open, the FLBs, RETRIEVE of every session, RETRIEVE_FD of every file, FINISH
 * and close. Classifies the result; anything off the documented failure paths is a `failure`,
 * and so is a mutant that takes longer than `timeoutMs` (a hang) or reads memory that was not
 * handed over.
 */
export async function driveMutant(
  target: FuzzTarget,
  guard: AccessGuard,
  timeoutMs: number,
): Promise<Outcome> {
  const started = performance.now();
  const plugin: TestPlugin = testHandlerPlugin({ flbs: target.flbs });
  let stage = "boot";
  let kernel: Kernel | undefined;

  const run = async (): Promise<Omit<Outcome, "ms">> => {
    try {
      kernel = await target.machine.boot({ plugins: [plugin] });
    } catch (e) {
      if (!(e instanceof KernelPanicError))
        return { kind: "failure", reason: `boot: ${explain(e)}`, error: e };
      if (!LOCATION.test(e.message)) {
        return { kind: "failure", reason: `panic without a location: ${e.message}`, error: e };
      }
      return { kind: "panic", error: e };
    }
    const k = kernel;
    const proc = k.spawn("fuzz");
    let dev;
    stage = "open";
    try {
      dev = await proc.openLiveUpdate();
    } catch (e) {
      // Deserialization rejects what early boot cannot know: a compatible without a registered
      // handler (ENOENT), a duplicate session name or token (EEXIST) — naming the session.
      const cause = e instanceof LiveUpdateError ? e.cause : undefined;
      if (
        !isPlain(e) ||
        e.code !== "EIO" ||
        !isPlain(cause) ||
        (cause.code !== "ENOENT" && cause.code !== "EEXIST") ||
        !/session (named )?"/.test(e.message)
      ) {
        return { kind: "failure", reason: `open: ${explain(e)}`, error: e };
      }
      // The failure is cached: the next open fails the same way without loading anything.
      const again = await proc.openLiveUpdate().then(
        () => undefined,
        (e2: unknown) => e2,
      );
      if (!(again instanceof LiveUpdateError) || again.code !== "EIO" || again.cause !== e.cause) {
        return { kind: "failure", reason: `second open after EIO: ${explain(again)}`, error: again };
      }
      return { kind: "eio", error: e };
    }
    for (const flb of plugin.testFlbs) {
      stage = `FLB ${flb.compatible}`;
      try {
        await k.liveupdate.flbs.getIncoming(flb);
      } catch (e) {
        // ENOENT/ENODATA: not handed over; EINVAL: the test FLB's own check of its value.
        const ownCheck =
          isPlain(e) &&
          e.code === "EINVAL" &&
          /^\w+: FLB "liveupdate-test-flb-v\d+": incoming data /.test(e.message);
        if (!ownCheck && (!isPlain(e) || (e.code !== "ENOENT" && e.code !== "ENODATA"))) {
          return { kind: "failure", reason: `FLB retrieve: ${explain(e)}`, error: e };
        }
      }
    }
    let retrieveErrors = 0;
    let files = 0;
    const sessions = [...k.liveupdate.incomingSessions.values()];
    for (const s of sessions) {
      stage = `session ${JSON.stringify(s.name)}`;
      const tokens = s.files.list().map((f) => f.token);
      try {
        const h = await dev.retrieveSession(s.name);
        for (const t of tokens) {
          try {
            proc.close(await h.retrieveFd(t));
            files++;
          } catch (e) {
            // Only the test handler's own validation of its data may fail here.
            if (
              !isPlain(e) ||
              (e.code !== "EINVAL" && e.code !== "EIO") ||
              !/^\w+: test file /.test(e.message)
            ) {
              throw e;
            }
            retrieveErrors++;
          }
        }
        await h.finish();
        await h.close();
      } catch (e) {
        return { kind: "failure", reason: `${stage}: ${explain(e)}`, error: e };
      }
    }
    dev.close();
    return {
      kind: retrieveErrors > 0 ? "retrieve-error" : "clean",
      sessions: sessions.length,
      files,
      unrestored: k.incoming?.unrestoredPages,
    };
  };

  guard.arm(target.preserved);
  let result: Omit<Outcome, "ms">;
  let hung = false;
  try {
    result = await withTimeout(run(), timeoutMs, () => stage);
  } catch (e) {
    hung = e instanceof Timeout;
    result = { kind: "failure", reason: explain(e), error: e };
  } finally {
    guard.disarm();
  }
  // A hung kernel cannot be shut down; the caller stops at the first failure anyway.
  if (kernel && !hung) await kernel.shutdown();
  if (guard.violations.length > 0 && result.kind !== "failure") {
    result = { kind: "failure", reason: `read outside handed-over memory: ${guard.violations[0]}` };
  }
  return { ...result, ms: performance.now() - started };
}
