// Unit tests of the FDT value helpers (strings, string lists, u32, u64), the name rules and the
// in-memory tree helpers (fdtNode, fdtTree, findFdtNode, getProp).
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { FdtError } from "../src/errors.js";
import {
  fdtNode,
  fdtString,
  fdtStringList,
  fdtTree,
  fdtU32,
  fdtU64,
  findFdtNode,
  getProp,
  isValidFdtNodeName,
  isValidFdtPropertyName,
  readFdtString,
  readFdtStringList,
  readFdtU32,
  readFdtU64,
} from "../src/fdt/index.js";

const bytes = (...b: number[]): Uint8Array => new Uint8Array(b);

describe("fdt value helpers", () => {
  it("encodes strings as UTF-8 plus one NUL and reads them back", () => {
    expect(fdtString("kho-v1")).toEqual(bytes(0x6b, 0x68, 0x6f, 0x2d, 0x76, 0x31, 0));
    expect(fdtString("")).toEqual(bytes(0));
    expect(readFdtString(fdtString("é€😀"))).toBe("é€😀");
    expect(readFdtString(fdtString("\uFEFFbom"))).toBe("\uFEFFbom");
  });

  it("round-trips any well-formed string without NUL", () => {
    fc.assert(
      fc.property(
        fc.string({ unit: "grapheme" }).filter((s) => !s.includes("\0")),
        (s) => readFdtString(fdtString(s)) === s,
      ),
    );
  });

  it("refuses strings the format cannot hold", () => {
    expect(() => fdtString("a\0b")).toThrow(FdtError);
    expect(() => fdtString("lone \uD800 surrogate")).toThrow(FdtError);
    expect(() => fdtString("\uDC00")).toThrow(FdtError);
    expect(() => fdtStringList(["ok", "b\0"])).toThrow(FdtError);
  });

  it("rejects string values without NUL, with an inner NUL or with invalid UTF-8", () => {
    expect(() => readFdtString(bytes())).toThrow(FdtError);
    expect(() => readFdtString(bytes(0x61))).toThrow(/not NUL-terminated/);
    expect(() => readFdtString(bytes(0x61, 0, 0x62, 0))).toThrow(/NUL at byte 1/);
    expect(() => readFdtString(bytes(0xff, 0))).toThrow(/invalid UTF-8/);
    expect(() => readFdtString(bytes(0xc3, 0))).toThrow(FdtError); // truncated sequence
    expect(() => readFdtString(bytes(0xed, 0xa0, 0x80, 0))).toThrow(FdtError); // encoded surrogate
  });

  it("reports a missing property (undefined) as FdtError naming it", () => {
    expect(() => readFdtString(undefined, "/compatible")).toThrow(/\/compatible: property is missing/);
    expect(() => readFdtStringList(undefined)).toThrow(FdtError);
    expect(() => readFdtU32(undefined)).toThrow(FdtError);
    expect(() => readFdtU64(undefined, "/LUO/fdt")).toThrow(/\/LUO\/fdt/);
  });

  it("encodes string lists back to back and reads them back", () => {
    expect(fdtStringList(["a", "bc"])).toEqual(bytes(0x61, 0, 0x62, 0x63, 0));
    expect(fdtStringList([])).toEqual(bytes());
    expect(readFdtStringList(bytes())).toEqual([]);
    expect(readFdtStringList(fdtStringList(["", "x", ""]))).toEqual(["", "x", ""]);
    expect(() => readFdtStringList(bytes(0x61, 0, 0x62))).toThrow(FdtError);
    expect(() => readFdtStringList(bytes(0x61, 0, 0xfe, 0))).toThrow(/item 1: invalid UTF-8/);
    fc.assert(
      fc.property(fc.array(fc.string({ unit: "grapheme" }).filter((s) => !s.includes("\0"))), (list) => {
        expect(readFdtStringList(fdtStringList(list))).toEqual(list);
      }),
    );
  });

  it("encodes u32 and u64 big-endian and checks ranges and sizes", () => {
    expect(fdtU32(0x01020304)).toEqual(bytes(1, 2, 3, 4));
    expect(fdtU64(0x0102030405060708n)).toEqual(bytes(1, 2, 3, 4, 5, 6, 7, 8));
    expect(readFdtU32(fdtU32(0xffff_ffff))).toBe(0xffff_ffff);
    expect(readFdtU64(fdtU64((1n << 64n) - 1n))).toBe((1n << 64n) - 1n);
    for (const bad of [-1, 2 ** 32, 1.5, Number.NaN]) expect(() => fdtU32(bad)).toThrow(FdtError);
    for (const bad of [-1n, 1n << 64n]) expect(() => fdtU64(bad)).toThrow(FdtError);
    expect(() => readFdtU32(bytes(1, 2, 3))).toThrow(/expected 4 bytes, got 3/);
    expect(() => readFdtU64(fdtU32(1))).toThrow(/expected 8 bytes, got 4/);
    // a view into a larger buffer reads its own bytes
    const big = bytes(9, 9, 0, 0, 0, 0, 0, 0, 0, 7, 9);
    expect(readFdtU64(big.subarray(2, 10))).toBe(7n);
    fc.assert(fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (n) => readFdtU64(fdtU64(n)) === n));
  });
});

describe("fdt names", () => {
  it("accepts spec node names and rejects others", () => {
    for (const ok of [
      "LUO",
      "luo-session",
      "memory@1000",
      "a",
      "a".repeat(31),
      "x@" + "1".repeat(60),
      "i2c@1,2",
    ]) {
      expect(isValidFdtNodeName(ok), ok).toBe(true);
    }
    for (const bad of ["", "1abc", "-a", "a".repeat(32), "a@", "a@b@c", "a b", "a/b", "é", "@1", "a\0"]) {
      expect(isValidFdtNodeName(bad), bad).toBe(false);
    }
  });
  it("accepts spec property names and rejects others", () => {
    for (const ok of ["compatible", "#address-cells", "linux,initrd-start", "a?", "0", "p".repeat(31)]) {
      expect(isValidFdtPropertyName(ok), ok).toBe(true);
    }
    for (const bad of ["", "p".repeat(32), "a@b", "a b", "ä", "a/b", "*"]) {
      expect(isValidFdtPropertyName(bad), bad).toBe(false);
    }
  });
});

describe("fdt tree helpers", () => {
  const tree = fdtTree(
    fdtNode("", { compatible: fdtString("kho-v1") }, [
      fdtNode("LUO", [["fdt", fdtU64(0x5000n)]], [fdtNode("inner@1", { x: fdtU32(1) })]),
      fdtNode("other"),
    ]),
    { reservations: [{ address: 0x1000n, size: 0x2000n }], bootCpuid: 3 },
  );

  it("builds nodes with props in order and finds them by path", () => {
    expect(tree.bootCpuid).toBe(3);
    expect(findFdtNode(tree, "/")).toBe(tree.root);
    expect(findFdtNode(tree, "/LUO")?.name).toBe("LUO");
    expect(findFdtNode(tree, "/LUO/inner@1")?.props.get("x")).toEqual(fdtU32(1));
    expect(findFdtNode(tree, "/LUO/inner")).toBeUndefined();
    expect(findFdtNode(tree, "/nope/x")).toBeUndefined();
    const luo = findFdtNode(tree, "/LUO");
    expect(luo && findFdtNode(luo, "/inner@1")).toBeDefined();
    expect(() => findFdtNode(tree, "LUO")).toThrow(FdtError);
    expect(readFdtU64(getProp(findFdtNode(tree, "/LUO") ?? tree.root, "fdt"))).toBe(0x5000n);
    expect(getProp(tree.root, "missing")).toBeUndefined();
  });

  it("keeps pair order, including integer-like names", () => {
    const n = fdtNode("n", [
      ["b", fdtU32(1)],
      ["0", fdtU32(2)],
    ]);
    expect([...n.props.keys()]).toEqual(["b", "0"]);
  });

  it("refuses invalid and duplicate names", () => {
    expect(() => fdtNode("bad name")).toThrow(FdtError);
    expect(() => fdtNode("n", { "bad name": fdtU32(1) })).toThrow(FdtError);
    expect(() =>
      fdtNode("n", [
        ["a", fdtU32(1)],
        ["a", fdtU32(2)],
      ]),
    ).toThrow(/duplicate property/);
    expect(() => fdtNode("n", {}, [fdtNode("c"), fdtNode("c")])).toThrow(/duplicate child/);
    expect(() => fdtNode("n", { a: "text" as unknown as Uint8Array })).toThrow(FdtError);
    expect(() => fdtTree(fdtNode("notroot"))).toThrow(FdtError);
  });
});
