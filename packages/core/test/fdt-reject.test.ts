// The reader's validation, case by case: hand-assembled blobs with one specific defect each
// (header fields, block layout and alignment, tokens, names, strings, nesting) must be rejected
// with an FdtError carrying the byte offset of the defect; legal variations (NOPs, version 16,
// suffix-shared names, gaps between blocks) must be accepted.
import { describe, expect, it } from "vitest";
import { FdtError } from "../src/errors.js";
import {
  decodeFdt,
  encodeFdt,
  fdtNode,
  fdtString,
  fdtTree,
  fdtU32,
  peekFdtHeader,
} from "../src/fdt/index.js";
import { FDT_HEADER_FIELD, FDT_MAX_DEPTH } from "../src/fdt/format.js";

type Field = keyof typeof FDT_HEADER_FIELD;

const BEGIN = 1;
const END_NODE = 2;
const PROP = 3;
const NOP = 4;
const END = 9;

const cat = (...parts: Uint8Array[]): Uint8Array => new Uint8Array(Buffer.concat(parts));
const words = (...ws: number[]): Uint8Array => {
  const b = new Uint8Array(ws.length * 4);
  ws.forEach((w, i) => new DataView(b.buffer).setUint32(i * 4, w));
  return b;
};
const padded = (s: string): Uint8Array => {
  const b = new Uint8Array(Math.ceil((s.length + 1) / 4) * 4);
  b.set(Buffer.from(s, "latin1"));
  return b;
};
const begin = (name: string): Uint8Array => cat(words(BEGIN), padded(name));
const prop = (nameoff: number, value: Uint8Array, len = value.length): Uint8Array =>
  cat(words(PROP, len, nameoff), value, new Uint8Array((4 - (value.length % 4)) % 4));
const text = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, "latin1"));

interface Parts {
  rsvmap?: Uint8Array;
  struct: Uint8Array;
  strings?: Uint8Array;
  header?: Partial<Record<Field, number>>;
  /** Bytes appended after the strings block (inside totalsize). */
  tail?: Uint8Array;
}

/** Assembles header | rsvmap | struct | strings | tail, then applies header overrides. */
function assemble(p: Parts): Uint8Array {
  const rsvmap = p.rsvmap ?? new Uint8Array(16);
  const strings = p.strings ?? new Uint8Array(0);
  const tail = p.tail ?? new Uint8Array(0);
  const offMemRsvmap = 40;
  const offDtStruct = offMemRsvmap + rsvmap.length;
  const offDtStrings = offDtStruct + p.struct.length;
  const totalSize = offDtStrings + strings.length + tail.length;
  const fields: Record<Field, number> = {
    magic: 0xd00dfeed,
    totalSize,
    offDtStruct,
    offDtStrings,
    offMemRsvmap,
    version: 17,
    lastCompVersion: 16,
    bootCpuidPhys: 0,
    sizeDtStrings: strings.length,
    sizeDtStruct: p.struct.length,
    ...p.header,
  };
  const header = new Uint8Array(40);
  for (const [k, at] of Object.entries(FDT_HEADER_FIELD))
    new DataView(header.buffer).setUint32(at, fields[k as Field]);
  return cat(header, rsvmap, p.struct, strings, tail);
}

/** A minimal valid tree: / { a = <1>; c { }; } with strings "a\0". */
const goodStruct = (): Uint8Array =>
  cat(begin(""), prop(0, words(1)), begin("c"), words(END_NODE), words(END_NODE), words(END));
const good = (over: Partial<Parts> = {}): Uint8Array =>
  assemble({ struct: goodStruct(), strings: text("a\0"), ...over });

function rejects(blob: Uint8Array, message: RegExp, offset?: number): void {
  let caught: unknown;
  try {
    decodeFdt(blob);
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(FdtError);
  const err = caught as FdtError;
  expect(err.message).toMatch(message);
  expect(err.code).toBe("EINVAL");
  if (offset !== undefined) expect(err.offset).toBe(offset);
  else expect(typeof err.offset).toBe("number");
}

const expectedGood = fdtTree(fdtNode("", { a: fdtU32(1) }, [fdtNode("c")]));

describe("fdt reader accepts", () => {
  it("the hand-assembled reference blob", () => {
    expect(decodeFdt(good())).toEqual(expectedGood);
  });

  it("NOP tokens before the root, between items and before FDT_END", () => {
    const struct = cat(
      words(NOP),
      begin(""),
      words(NOP),
      prop(0, words(1)),
      words(NOP, NOP),
      begin("c"),
      words(NOP, END_NODE, NOP, END_NODE, NOP, END),
    );
    expect(decodeFdt(assemble({ struct, strings: text("a\0") }))).toEqual(expectedGood);
  });

  it("version 16 (no size_dt_struct), a newer version compatible with 16, and gaps between blocks", () => {
    expect(decodeFdt(good({ header: { version: 16, sizeDtStruct: 0xdeadbeef } }))).toEqual(expectedGood);
    expect(decodeFdt(good({ header: { version: 20, lastCompVersion: 16 } }))).toEqual(expectedGood);
    expect(decodeFdt(good({ tail: new Uint8Array(64).fill(0xee) }))).toEqual(expectedGood);
  });

  it("property names that share a suffix inside the strings block (as dtc and libfdt write)", () => {
    const struct = cat(begin(""), prop(0, words(1)), prop(5, words(2)), words(END_NODE, END));
    const tree = decodeFdt(assemble({ struct, strings: text("size-cells\0") }));
    expect([...tree.root.props.keys()]).toEqual(["size-cells", "cells"]);
  });

  it("exactly FDT_MAX_DEPTH levels of nesting", () => {
    const struct = cat(
      begin(""),
      ...Array.from({ length: FDT_MAX_DEPTH }, () => begin("n")),
      words(...new Array<number>(FDT_MAX_DEPTH + 1).fill(END_NODE), END),
    );
    expect(() => decodeFdt(assemble({ struct }))).not.toThrow();
  });
});

describe("fdt reader rejects header defects", () => {
  it("a blob shorter than the header", () =>
    rejects(good().subarray(0, 39), /shorter than the 40-byte header/, 0));
  it("bad magic", () => rejects(good({ header: { magic: 0xd00dfeee } }), /bad magic 0xd00dfeee/, 0));
  it("version older than 16", () => rejects(good({ header: { version: 15 } }), /version 15/, 20));
  it("last_comp_version newer than 17", () =>
    rejects(good({ header: { version: 18, lastCompVersion: 18 } }), /last_comp_version 18/, 24));
  it("last_comp_version above version", () =>
    rejects(good({ header: { version: 16, lastCompVersion: 17 } }), /last_comp_version 17/, 24));
  it("totalsize larger than the blob", () => {
    const blob = good();
    rejects(good({ header: { totalSize: blob.length + 1 } }), /totalsize \d+ exceeds/, 4);
  });
  it("totalsize smaller than the header", () =>
    rejects(good({ header: { totalSize: 39 } }), /smaller than the header/, 4));
  it("misaligned structure block offset", () =>
    rejects(good({ header: { offDtStruct: 58 } }), /structure block offset 58 is not 4-aligned/, 8));
  it("misaligned reservation block offset", () =>
    rejects(good({ header: { offMemRsvmap: 44 } }), /reservation block offset 44 is not 8-aligned/, 16));
  it("structure size not a multiple of 4", () =>
    rejects(good({ header: { sizeDtStruct: 42 } }), /size 42 is not a multiple of 4/, 36));
  it("structure block past totalsize", () =>
    rejects(good({ header: { sizeDtStruct: 0x1000 } }), /structure block .* is outside/, 8));
  it("structure block offset wrapping the u32 range", () =>
    rejects(good({ header: { offDtStruct: 0xfffffffc } }), /structure block .* is outside/, 8));
  it("strings block past totalsize", () =>
    rejects(good({ header: { sizeDtStrings: 0xffffffff } }), /strings block .* is outside/, 12));
  it("a block inside the header", () => rejects(good({ header: { offDtStrings: 8 } }), /strings block/, 12));
  it("reservation block past totalsize", () =>
    rejects(good({ header: { offMemRsvmap: 0xfffffff8 } }), /reservation block .* is outside/, 16));
  it("structure and strings blocks overlapping", () => {
    const blob = good();
    const h = peekFdtHeader(blob);
    rejects(good({ header: { offDtStrings: h.offDtStrings - 4, sizeDtStrings: 6 } }), /overlaps/);
  });
  it("reservation block overlapping the strings block", () => {
    // strings "a\0" + 14 zero bytes at an 8-aligned offset: the reservation terminator found there
    const struct = goodStruct();
    const blob = assemble({ struct, strings: cat(text("a\0"), new Uint8Array(22)) });
    const offStrings = peekFdtHeader(blob).offDtStrings;
    const zeroAt = Math.ceil((offStrings + 2) / 8) * 8;
    rejects(
      assemble({ struct, strings: cat(text("a\0"), new Uint8Array(22)), header: { offMemRsvmap: zeroAt } }),
      /memory reservation block .* overlaps strings block/,
    );
  });
  it("a zero-size reservation entry at a non-zero address", () => {
    const rsvmap = cat(words(0, 0x1000, 0, 0), new Uint8Array(16));
    rejects(assemble({ rsvmap, struct: goodStruct(), strings: text("a\0") }), /at 0x1000 has size 0/, 48);
  });
  it("reservation block without a terminator within totalsize", () => {
    const rsvmap = new Uint8Array(16).fill(1);
    rejects(
      assemble({ rsvmap, struct: goodStruct(), strings: text("a\0"), header: { offMemRsvmap: 40 } }),
      /terminating/,
    );
    const blob = good();
    rejects(good({ header: { offMemRsvmap: blob.length - 16 } }), /reservation|overlaps/);
  });
});

describe("fdt reader rejects structure defects", () => {
  const structAt = 56; // 40-byte header + 16-byte empty reservation block
  it("an unknown token", () => {
    const struct = cat(begin(""), words(5), words(END_NODE, END));
    rejects(assemble({ struct }), /unknown token 0x5/, structAt + 8);
  });
  it("a missing FDT_END", () => {
    const struct = cat(begin(""), prop(0, words(1)), words(END_NODE));
    rejects(assemble({ struct, strings: text("a\0") }), /ends without FDT_END/, structAt + 28);
  });
  it("an empty structure block", () =>
    rejects(assemble({ struct: new Uint8Array(0) }), /without FDT_END/, structAt));
  it("data after FDT_END", () => {
    const struct = cat(goodStruct(), words(NOP));
    rejects(assemble({ struct, strings: text("a\0") }), /4 bytes after FDT_END/);
  });
  it("FDT_END before the root node", () =>
    rejects(assemble({ struct: words(END) }), /before the root/, structAt));
  it("FDT_END inside a node", () =>
    rejects(assemble({ struct: cat(begin(""), words(END)) }), /FDT_END inside node \//));
  it("a stray FDT_END_NODE", () =>
    rejects(
      assemble({ struct: cat(begin(""), words(END_NODE, END_NODE, END)) }),
      /FDT_END_NODE outside/,
      structAt + 12,
    ));
  it("a second root node", () =>
    rejects(
      assemble({ struct: cat(begin(""), words(END_NODE), begin(""), words(END_NODE, END)) }),
      /second root/,
    ));
  it("a property outside any node", () =>
    rejects(
      assemble({ struct: cat(prop(0, words(1)), words(END)), strings: text("a\0") }),
      /outside any node/,
      structAt,
    ));
  it("a property after a subnode", () => {
    const struct = cat(begin(""), begin("c"), words(END_NODE), prop(0, words(1)), words(END_NODE, END));
    rejects(assemble({ struct, strings: text("a\0") }), /property after a subnode in \//);
  });
  it("a node name without NUL in the structure block", () => {
    const struct = cat(begin(""), words(BEGIN), text("abcd"));
    rejects(assemble({ struct }), /node name is not NUL-terminated/, structAt + 12);
  });
  it("a named root", () =>
    rejects(assemble({ struct: cat(begin("root"), words(END_NODE, END)) }), /root node has name/));
  it("an invalid node name", () => {
    for (const name of ["1abc", "a b", "a@", "a@b@c", "\xe9", "a".repeat(32)]) {
      rejects(
        assemble({ struct: cat(begin(""), begin(name), words(END_NODE, END_NODE, END)) }),
        /invalid node name/,
      );
    }
  });
  it("an empty non-root node name", () =>
    rejects(
      assemble({ struct: cat(begin(""), begin(""), words(END_NODE, END_NODE, END)) }),
      /invalid node name ""/,
    ));
  it("duplicate child names", () => {
    const struct = cat(begin(""), begin("c"), words(END_NODE), begin("c"), words(END_NODE, END_NODE, END));
    rejects(assemble({ struct }), /duplicate node name "c" under \//);
  });
  it("duplicate property names", () => {
    const struct = cat(begin(""), prop(0, words(1)), prop(0, words(2)), words(END_NODE, END));
    rejects(assemble({ struct, strings: text("a\0") }), /duplicate property \/:a/, structAt + 8 + 16);
  });
  it("the same name at two string offsets is still a duplicate", () => {
    const struct = cat(begin(""), prop(0, words(1)), prop(2, words(2)), words(END_NODE, END));
    rejects(assemble({ struct, strings: text("a\0a\0") }), /duplicate property/);
  });
  it("a nameoff outside the strings block", () => {
    const struct = cat(begin(""), prop(2, words(1)), words(END_NODE, END));
    rejects(assemble({ struct, strings: text("a\0") }), /nameoff 2 is outside/, structAt + 8 + 8);
    rejects(
      assemble({ struct: cat(begin(""), prop(0xffffffff, words(1)), words(END_NODE, END)) }),
      /nameoff/,
    );
  });
  it("a property name without NUL in the strings block", () => {
    const struct = cat(begin(""), prop(0, words(1)), words(END_NODE, END));
    const blob = assemble({ struct, strings: text("abc") });
    rejects(blob, /unterminated or too long/, peekFdtHeader(blob).offDtStrings);
  });
  it("a property name longer than 31 bytes or with invalid characters", () => {
    const struct = cat(begin(""), prop(0, words(1)), words(END_NODE, END));
    rejects(assemble({ struct, strings: text(`${"p".repeat(32)}\0`) }), /unterminated or too long/);
    rejects(assemble({ struct, strings: text("a b\0") }), /invalid property name "a b"/);
    rejects(assemble({ struct, strings: text("\0") }), /invalid property name ""/);
    rejects(assemble({ struct, strings: text("\xff\0") }), /invalid property name/);
  });
  it("a property length past the structure block", () => {
    const struct = cat(begin(""), prop(0, words(1), 0x100), words(END_NODE, END));
    rejects(assemble({ struct, strings: text("a\0") }), /length 256 runs past/, structAt + 8 + 4);
    const huge = cat(begin(""), prop(0, words(1), 0xffffffff), words(END_NODE, END));
    rejects(assemble({ struct: huge, strings: text("a\0") }), /runs past/);
  });
  it("a property header cut by the end of the block", () => {
    rejects(
      assemble({ struct: cat(begin(""), words(PROP, 4)), strings: text("a\0") }),
      /property header runs past/,
    );
  });
  it("nesting deeper than FDT_MAX_DEPTH", () => {
    const depth = FDT_MAX_DEPTH + 1;
    const struct = cat(
      begin(""),
      ...Array.from({ length: depth }, () => begin("n")),
      words(...new Array<number>(depth + 1).fill(END_NODE), END),
    );
    rejects(assemble({ struct }), /nested deeper than 64/);
  });
  it("a version-16 structure block running into the strings block", () => {
    // without size_dt_struct the block ends at FDT_END, which here lies inside the strings block
    const struct = cat(begin(""), prop(4, words(1)), words(END_NODE));
    const blob = assemble({ struct, strings: cat(words(END), text("a\0")), header: { version: 16 } });
    rejects(blob, /overlaps/);
  });
});

describe("fdt reader errors", () => {
  it("are FdtErrors with code EINVAL whose message names the offset", () => {
    const blob = encodeFdt(fdtTree(fdtNode("", { compatible: fdtString("kho-v1") })));
    blob[0] = 0;
    try {
      decodeFdt(blob);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(FdtError);
      expect((e as FdtError).message).toMatch(/^EINVAL: bad FDT at offset 0: bad magic/);
    }
  });
});
