// Writer and reader together: fast-check round trips of random trees, the exact layout the
// writer produces (header fields, block placement, alignment, string de-duplication), the
// writer's refusals, reading a blob from a larger buffer and the linear cost of encoding.
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { FdtError } from "../src/errors.js";
import {
  decodeFdt,
  encodeFdt,
  FDT_MAX_DEPTH,
  fdtNode,
  fdtString,
  fdtStringList,
  fdtTotalSize,
  fdtTree,
  fdtU32,
  fdtU64,
  peekFdtHeader,
  type FdtNode,
  type FdtTree,
} from "../src/fdt/index.js";
import { fdtTreeArb } from "./helpers/external-fdt.js";

/** The KHO root as docs/abi.md lays it out. */
function khoRoot(): FdtTree {
  return fdtTree(
    fdtNode("", { compatible: fdtString("kho-v1"), "preserved-memory-map": fdtU64(0x1234_5000n) }, [
      fdtNode("LUO", { fdt: fdtU64(0x7000n) }),
    ]),
  );
}

const be32 = (b: Uint8Array, at: number): number => new DataView(b.buffer, b.byteOffset).getUint32(at);
const ascii = (b: Uint8Array): string => Buffer.from(b).toString("latin1");

describe("fdt round trip", () => {
  it("decode(encode(tree)) deep-equals tree for random trees", () => {
    fc.assert(
      fc.property(fdtTreeArb, (tree) => {
        const blob = encodeFdt(tree);
        expect(decodeFdt(blob)).toEqual(tree);
        expect(fdtTotalSize(blob)).toBe(blob.length);
        expect(encodeFdt(decodeFdt(blob))).toEqual(blob); // encoding is canonical
      }),
      { numRuns: 300 },
    );
  });

  it("decodes from a larger buffer (a page) at an offset, ignoring bytes past totalsize", () => {
    const blob = encodeFdt(khoRoot());
    const page = new Uint8Array(4096 + 16).fill(0xa5);
    page.set(blob, 16);
    const view = page.subarray(16);
    expect(peekFdtHeader(view.subarray(0, 40)).totalSize).toBe(blob.length);
    expect(decodeFdt(view)).toEqual(khoRoot());
  });

  it("returns values that do not alias the blob", () => {
    const blob = encodeFdt(khoRoot());
    const tree = decodeFdt(blob);
    blob.fill(0);
    expect(tree).toEqual(khoRoot());
  });
});

describe("fdt writer layout", () => {
  it("writes the header, reservation block, structure and strings blocks in order", () => {
    const tree = khoRoot();
    tree.reservations.push({ address: 0x1000n, size: 0x2000n });
    tree.bootCpuid = 7;
    const blob = encodeFdt(tree);
    const h = peekFdtHeader(blob);
    expect(h).toMatchObject({
      magic: 0xd00dfeed,
      version: 17,
      lastCompVersion: 16,
      bootCpuidPhys: 7,
      offMemRsvmap: 40,
      offDtStruct: 40 + 2 * 16,
      totalSize: blob.length,
    });
    expect(h.offDtStrings).toBe(h.offDtStruct + h.sizeDtStruct);
    expect(h.offDtStrings + h.sizeDtStrings).toBe(h.totalSize);
    // reservation entry then the zero terminator
    expect([...blob.subarray(40, 72)]).toEqual([
      ...[0, 0, 0, 0, 0, 0, 0x10, 0],
      ...[0, 0, 0, 0, 0, 0, 0x20, 0],
      ...new Array<number>(16).fill(0),
    ]);
    // strings block: every name once, in order of first use
    expect(ascii(blob.subarray(h.offDtStrings))).toBe("compatible\0preserved-memory-map\0fdt\0");
    // structure block starts with the root's FDT_BEGIN_NODE, empty name padded to 4, then a prop
    expect(be32(blob, h.offDtStruct)).toBe(1);
    expect(be32(blob, h.offDtStruct + 4)).toBe(0);
    expect(be32(blob, h.offDtStruct + 8)).toBe(3);
    expect(be32(blob, h.offDtStruct + 12)).toBe(7); // len of "kho-v1\0"
    expect(be32(blob, h.offDtStruct + 16)).toBe(0); // nameoff of "compatible"
    // ends with END_NODE, END
    expect(be32(blob, h.offDtStrings - 8)).toBe(2);
    expect(be32(blob, h.offDtStrings - 4)).toBe(9);
  });

  it("stores a repeated property name once and points every use at it", () => {
    const tree = fdtTree(
      fdtNode("", { compatible: fdtString("r") }, [
        fdtNode("a", { compatible: fdtString("x"), reg: fdtU32(1) }),
        fdtNode("b", { reg: fdtU32(2), compatible: fdtString("y") }),
      ]),
    );
    const blob = encodeFdt(tree);
    const h = peekFdtHeader(blob);
    const strings = ascii(blob.subarray(h.offDtStrings, h.offDtStrings + h.sizeDtStrings));
    expect(strings).toBe("compatible\0reg\0");
    const all = ascii(blob);
    expect(all.split("compatible").length - 1).toBe(1);
    expect(all.split("reg\0").length - 1).toBe(1);
    expect(decodeFdt(blob)).toEqual(tree);
  });

  it("pads names and values to 4 bytes with zeros", () => {
    for (let len = 0; len <= 9; len++) {
      const name = "n".repeat(Math.max(1, len));
      const tree = fdtTree(fdtNode("", {}, [fdtNode(name, { v: new Uint8Array(len).fill(0xff) })]));
      const blob = encodeFdt(tree);
      const h = peekFdtHeader(blob);
      expect(h.sizeDtStruct % 4).toBe(0);
      expect(h.offDtStruct % 4).toBe(0);
      const nameStart = h.offDtStruct + 8 + 4;
      const paddedName = Math.ceil((name.length + 1) / 4) * 4;
      expect(blob.subarray(nameStart + name.length, nameStart + paddedName).every((b) => b === 0)).toBe(true);
      const valueStart = nameStart + paddedName + 12;
      expect(be32(blob, valueStart - 8)).toBe(len);
      const paddedValue = Math.ceil(len / 4) * 4;
      expect(blob.subarray(valueStart + len, valueStart + paddedValue).every((b) => b === 0)).toBe(true);
      expect(be32(blob, valueStart + paddedValue)).toBe(2); // END_NODE of the child
      expect(decodeFdt(blob)).toEqual(tree);
    }
  });

  it("writes a tree with no properties at all (empty strings block)", () => {
    const tree = fdtTree(fdtNode("", {}, [fdtNode("a", {}, [fdtNode("b")])]));
    const blob = encodeFdt(tree);
    expect(peekFdtHeader(blob).sizeDtStrings).toBe(0);
    expect(decodeFdt(blob)).toEqual(tree);
  });
});

describe("fdt writer refusals", () => {
  const base = (): FdtTree => khoRoot();
  const cases: [string, (t: FdtTree) => void][] = [
    ["root with a name", (t) => (t.root.name = "root")],
    ["invalid child name", (t) => ((t.root.children[0] as FdtNode).name = "1LUO")],
    ["empty child name", (t) => ((t.root.children[0] as FdtNode).name = "")],
    ["duplicate child names", (t) => t.root.children.push(fdtNode("LUO"))],
    ["invalid property name", (t) => t.root.props.set("bad name", fdtU32(1))],
    ["32-char property name", (t) => t.root.props.set("p".repeat(32), fdtU32(1))],
    ["non-bytes value", (t) => t.root.props.set("x", [1, 2] as unknown as Uint8Array)],
    ["props not a Map", (t) => ((t.root as { props: unknown }).props = { a: fdtU32(1) })],
    ["zero reservation", (t) => t.reservations.push({ address: 0n, size: 0n })],
    ["zero-size reservation", (t) => t.reservations.push({ address: 0x1000n, size: 0n })],
    ["negative reservation", (t) => t.reservations.push({ address: -1n, size: 1n })],
    ["reservation above u64", (t) => t.reservations.push({ address: 1n, size: 1n << 64n })],
    ["bootCpuid above u32", (t) => (t.bootCpuid = 2 ** 32)],
    ["fractional bootCpuid", (t) => (t.bootCpuid = 0.5)],
  ];
  for (const [what, mutate] of cases) {
    it(`refuses ${what}`, () => {
      const t = base();
      mutate(t);
      expect(() => encodeFdt(t)).toThrow(FdtError);
    });
  }

  it("refuses nesting deeper than FDT_MAX_DEPTH and a cyclic tree, accepts exactly the limit", () => {
    const chain = (depth: number): FdtTree => {
      let node = fdtNode("n");
      for (let d = 1; d < depth; d++) node = fdtNode("n", {}, [node]);
      return fdtTree(fdtNode("", {}, [node]));
    };
    expect(decodeFdt(encodeFdt(chain(FDT_MAX_DEPTH)))).toEqual(chain(FDT_MAX_DEPTH));
    expect(() => encodeFdt(chain(FDT_MAX_DEPTH + 1))).toThrow(/nested deeper/);
    const loop = fdtNode("loop");
    loop.children.push(loop);
    expect(() => encodeFdt(fdtTree(fdtNode("", {}, [loop])))).toThrow(FdtError);
  });
});

describe("fdt encoding at scale", () => {
  // Encoding cost is a benchmark figure, not a unit-test assertion (wall-clock bounds are noise
  // on a loaded machine); this checks that a wide tree round-trips and that the blob grows by the
  // same number of bytes per node, so nothing per node depends on the tree's size.
  it("round-trips a 30 000-node tree whose size grows by a fixed amount per node", () => {
    const wide = (n: number): FdtTree =>
      fdtTree(
        fdtNode(
          "",
          {},
          Array.from({ length: n }, (_, i) =>
            fdtNode(`node@${String(i).padStart(5, "0")}`, {
              compatible: fdtStringList(["a", "b"]),
              value: fdtU64(BigInt(i)),
            }),
          ),
        ),
      );
    const large = wide(30_000);
    const blob = encodeFdt(large);
    expect(decodeFdt(blob)).toEqual(large);
    const perNode = (encodeFdt(wide(3000)).length - encodeFdt(wide(2000)).length) / 1000;
    expect(blob.length - encodeFdt(wide(3000)).length).toBe(perNode * 27_000);
  });
});
