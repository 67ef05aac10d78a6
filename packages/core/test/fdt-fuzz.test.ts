// Mutation fuzzing of the reader with a seeded PRNG (helpers/rng.ts, deterministic): blobs
// derived from valid encoded trees by bit flips, byte sets, truncation, corruption of each header
// field, structure and strings block words, splices, extension and pure garbage. Every decode must
// succeed or throw FdtError; a success must yield a tree the writer accepts and that round-trips,
// mutants that only add bytes must decode to the original tree, and libfdt must accept and read
// every changed blob the reader accepts exactly as the reader does.
import { describe, expect, it } from "vitest";
import { FdtError } from "../src/errors.js";
import {
  decodeFdt,
  encodeFdt,
  fdtNode,
  fdtString,
  fdtStringList,
  fdtTree,
  fdtU32,
  fdtU64,
  peekFdtHeader,
  type FdtTree,
} from "../src/fdt/index.js";
import { FDT_HEADER_FIELD } from "../src/fdt/format.js";
import { sameBytes } from "./fixtures/machine-helpers.js";
import { assertExternalTools, flattenFdt, libfdtDump, sampleTrees } from "./helpers/external-fdt.js";
import { Rng } from "./helpers/rng.js";

const MUTANTS = 12_000;
const SEED = 0x0fd7_2026;
const DIFFERENTIAL_SAMPLE = 300;

const FIELDS = Object.values(FDT_HEADER_FIELD);

const be32 = (b: Uint8Array, at: number): number => new DataView(b.buffer, b.byteOffset).getUint32(at);
const setBe32 = (b: Uint8Array, at: number, v: number): void =>
  new DataView(b.buffer, b.byteOffset).setUint32(at, v >>> 0);

function interesting(rng: Rng, b: Uint8Array, old: number): number {
  const len = b.length;
  return rng.pickBelow([
    0,
    1,
    3,
    4,
    8,
    16,
    36,
    39,
    40,
    41,
    len - 1,
    len,
    len + 1,
    len - 4,
    len + 4,
    old - 1,
    old + 1,
    old - 4,
    old + 4,
    old - 8,
    old + 8,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffc,
    0xffff_ffff,
    be32(b, rng.pickBelow(FIELDS)),
    rng.u32(),
    rng.below(len + 8),
  ]);
}

/** A word-aligned offset inside the structure (or strings) block of a base blob. */
function blockOffset(rng: Rng, base: Uint8Array, block: "struct" | "strings"): number {
  const h = peekFdtHeader(base);
  const [start, size] =
    block === "struct" ? [h.offDtStruct, h.sizeDtStruct] : [h.offDtStrings, h.sizeDtStrings];
  return block === "struct" ? start + 4 * rng.below(size / 4) : start + rng.below(size);
}

/** Mutates `b`; `base` is the valid blob it came from (its header locates the blocks). */
type Mutator = (rng: Rng, b: Uint8Array, base: Uint8Array, bases: readonly Uint8Array[]) => Uint8Array;

const MUTATORS: Record<string, Mutator> = {
  bitFlip(rng, input) {
    const b = input.slice();
    for (let k = 1 + rng.below(4); k > 0; k--) {
      const at = rng.below(b.length);
      b[at] = (b[at] as number) ^ (1 << rng.below(8));
    }
    return b;
  },
  byteSet(rng, input) {
    const b = input.slice();
    for (let k = 1 + rng.below(4); k > 0; k--)
      b[rng.below(b.length)] = rng.pickBelow([0, 0xff, 1, 0x7f, 0x80, rng.below(256)]);
    return b;
  },
  truncate(rng, input) {
    return input.slice(0, rng.below(input.length));
  },
  headerField(rng, input) {
    const b = input.slice();
    const at = rng.pickBelow(FIELDS);
    setBe32(b, at, interesting(rng, b, be32(b, at)));
    return b;
  },
  structWord(rng, input, base) {
    const b = input.slice();
    const at = blockOffset(rng, base, "struct");
    setBe32(
      b,
      at,
      rng.pickBelow([1, 2, 3, 4, 9, 0, 5, 8, 0xffff_ffff, rng.below(64), interesting(rng, b, be32(b, at))]),
    );
    return b;
  },
  stringsByte(rng, input, base) {
    const b = input.slice();
    if (peekFdtHeader(base).sizeDtStrings === 0) return b;
    b[blockOffset(rng, base, "strings")] = rng.pickBelow([0, 0x20, 0x40, 0x2f, 0xc3, 0xff, rng.below(256)]);
    return b;
  },
  splice(rng, input, _base, bases) {
    const other = rng.pickBelow(bases);
    const from = rng.below(other.length);
    const chunk = other.subarray(from, from + 1 + rng.below(32));
    const b = input.slice();
    b.set(chunk.subarray(0, Math.max(0, b.length - 1)), rng.below(Math.max(1, b.length - chunk.length)));
    return b;
  },
  garbage(rng, _input, base) {
    const b = new Uint8Array(rng.below(257));
    for (let i = 0; i < b.length; i++) b[i] = rng.below(256);
    if (b.length >= 40 && rng.below(2) === 0) b.set(base.subarray(0, 40)); // a plausible header
    return b;
  },
  extend(rng, input) {
    const extra = new Uint8Array(1 + rng.below(64));
    for (let i = 0; i < extra.length; i++) extra[i] = rng.below(256);
    const b = new Uint8Array(input.length + extra.length);
    b.set(input);
    b.set(extra, input.length);
    if (rng.below(2) === 0) setBe32(b, FDT_HEADER_FIELD.totalSize, b.length); // a gap after the blocks
    return b;
  },
  combined(rng, input, base, bases) {
    let b = input;
    for (let k = 2 + rng.below(2); k > 0; k--) {
      const name = rng.pickBelow([
        "bitFlip",
        "byteSet",
        "headerField",
        "structWord",
        "stringsByte",
        "splice",
      ]);
      b = (MUTATORS[name] as Mutator)(rng, b, base, bases);
    }
    return b;
  },
};

function baseTrees(): FdtTree[] {
  return [
    ...sampleTrees(40, SEED),
    fdtTree(
      fdtNode("", { compatible: fdtString("kho-v1"), "preserved-memory-map": fdtU64(0x1234_5000n) }, [
        fdtNode("LUO", { fdt: fdtU64(0x7000n) }),
      ]),
      { reservations: [{ address: 0x1000n, size: 0x2000n }] },
    ),
    fdtTree(
      fdtNode("", { compatible: fdtString("luo-v1"), "liveupdate-number": fdtU64(3n) }, [
        fdtNode("luo-session", {
          compatible: fdtStringList(["luo-session-v4"]),
          "luo-session-header": fdtU64(0n),
        }),
        fdtNode("luo-flb", { compatible: fdtString("luo-flb-v1"), "luo-flb-header": fdtU32(0x9000) }),
      ]),
    ),
    fdtTree(fdtNode("")),
  ];
}

describe("fdt reader fuzz", () => {
  it(`survives ${MUTANTS} mutated blobs: success or FdtError, nothing else`, () => {
    assertExternalTools(); // the differential check below needs libfdt
    const trees = baseTrees();
    const bases = trees.map(encodeFdt);
    const rng = new Rng(SEED);
    const names = Object.keys(MUTATORS);
    const stats: Record<string, { accepted: number; rejected: number }> = {};
    const failures: string[] = [];
    const acceptedChanged: { blob: Uint8Array; tree: FdtTree }[] = [];
    const started = performance.now();
    for (let n = 0; n < MUTANTS; n++) {
      const name = names[n % names.length] as string;
      const baseIndex = rng.below(bases.length);
      const base = bases[baseIndex] as Uint8Array;
      const blob = (MUTATORS[name] as Mutator)(rng, base, base, bases);
      const s = (stats[name] ??= { accepted: 0, rejected: 0 });
      let tree: FdtTree;
      try {
        tree = decodeFdt(blob);
      } catch (e) {
        s.rejected++;
        if (!(e instanceof FdtError)) {
          failures.push(`#${n} ${name} on base ${baseIndex}: ${e instanceof Error ? e.stack : String(e)}`);
        } else if (typeof e.offset !== "number" || e.offset < 0 || e.offset > Math.max(blob.length, 40)) {
          failures.push(`#${n} ${name}: FdtError without a sensible offset: ${e.message}`);
        }
        continue;
      }
      s.accepted++;
      // Whatever the reader accepts, the writer writes back and the reader reads the same. The
      // encoding is canonical, so comparing bytes compares trees (and is much faster).
      try {
        const again = encodeFdt(tree);
        if (!sameBytes(encodeFdt(decodeFdt(again)), again))
          failures.push(`#${n} ${name}: re-encoding differs`);
        if (name === "extend" && !sameBytes(again, base)) failures.push(`#${n} extend changed the tree`);
      } catch (e) {
        failures.push(`#${n} ${name} on base ${baseIndex}: accepted blob fails to round-trip: ${String(e)}`);
      }
      if (!sameBytes(blob.subarray(0, base.length), base) && acceptedChanged.length < DIFFERENTIAL_SAMPLE) {
        acceptedChanged.push({ blob, tree });
      }
    }
    const elapsed = performance.now() - started;
    const accepted = Object.values(stats).reduce((a, s) => a + s.accepted, 0);
    console.log(
      `fdt fuzz: ${MUTANTS} mutants in ${elapsed.toFixed(0)} ms, ${accepted} accepted, ${MUTANTS - accepted} rejected with FdtError\n` +
        Object.entries(stats)
          .map(
            ([k, s]) =>
              `  ${k.padEnd(12)} accepted ${String(s.accepted).padStart(5)}  rejected ${s.rejected}`,
          )
          .join("\n"),
    );
    expect(failures.slice(0, 5)).toEqual([]);
    expect(Object.values(stats).reduce((a, s) => a + s.accepted + s.rejected, 0)).toBe(MUTANTS);
    expect(MUTANTS - accepted).toBeGreaterThan(MUTANTS / 2); // the mutations do reach the checks

    // Differential: libfdt accepts every changed blob the reader accepted and reads the same tree.
    expect(acceptedChanged.length).toBeGreaterThan(100);
    const dumps = libfdtDump(acceptedChanged.map((a) => a.blob));
    dumps.forEach((dump, i) => {
      const { blob, tree } = acceptedChanged[i] as { blob: Uint8Array; tree: FdtTree };
      expect(dump, `accepted mutant ${i}`).toMatchObject({
        checkFull: 0,
        bootCpuid: tree.bootCpuid,
        totalSize: peekFdtHeader(blob).totalSize,
        ...flattenFdt(tree),
      });
    });
  });
});
