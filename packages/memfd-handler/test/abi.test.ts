// The memfd-v2 handover layout: struct sizes and offsets, the folio-record bitfield, and the
// KHO vmalloc chunk chain (multi-chunk areas, and the malformed chains parseVmalloc rejects).
import { describe, expect, it } from "vitest";
import { Kho, Machine, PAGE_SIZE } from "@luo/core";
import {
  KHO_VMALLOC_ALLOC,
  KHO_VMALLOC_CHUNK_ENTRIES,
  KHO_VMALLOC_SIZE,
  MEMFD_LUO_FOLIO_DIRTY,
  MEMFD_LUO_FOLIO_SER_SIZE,
  MEMFD_LUO_FOLIO_UPTODATE,
  MEMFD_LUO_FOLIOS_PER_PAGE,
  MEMFD_LUO_SER,
  MEMFD_LUO_SER_SIZE,
  decodeFolioRecord,
  decodeMemfdSer,
  encodeFolioRecord,
  encodeMemfdSer,
  parseVmalloc,
  preserveVmalloc,
  unpreserveVmalloc,
  type KhoVmalloc,
} from "@luo/memfd-handler";
import { code, thrown } from "./helpers/errno.js";

describe("memfd-v2 layout", () => {
  it("has the kernel's sizes", () => {
    expect(MEMFD_LUO_SER_SIZE).toBe(48);
    expect(KHO_VMALLOC_SIZE).toBe(16);
    expect(MEMFD_LUO_FOLIO_SER_SIZE).toBe(16);
    expect(KHO_VMALLOC_CHUNK_ENTRIES).toBe(511);
    expect(MEMFD_LUO_FOLIOS_PER_PAGE).toBe(256);
    expect(MEMFD_LUO_SER).toEqual({ pos: 0, size: 8, seals: 16, flags: 20, nrFolios: 24, folios: 32 });
  });

  it("encodes memfd_luo_ser little-endian and packed", () => {
    const bytes = new Uint8Array(MEMFD_LUO_SER_SIZE);
    const rec = {
      pos: 0x0102030405060708n,
      size: 0x1122334455667788n,
      seals: 0x2a,
      flags: 0,
      nrFolios: 3n,
      folios: { first: 0x4000_1000n, totalPages: 1, flags: KHO_VMALLOC_ALLOC, order: 0 },
    };
    encodeMemfdSer(bytes, rec);
    expect(Buffer.from(bytes).toString("hex")).toBe(
      "0807060504030201" + // pos
        "8877665544332211" + // size
        "2a000000" + // seals
        "00000000" + // flags
        "0300000000000000" + // nr_folios
        "0010004000000000" + // folios.first
        "01000000" + // total_pages
        "0100" + // flags
        "0000", // order
    );
    expect(decodeMemfdSer(bytes)).toEqual(rec);
  });

  it("packs the folio pfn in the low 52 bits and the flags in the high 12", () => {
    const buf = new Uint8Array(16);
    const dv = new DataView(buf.buffer);
    const rec = { pfn: 0x40123n, flags: MEMFD_LUO_FOLIO_DIRTY | MEMFD_LUO_FOLIO_UPTODATE, index: 77n };
    encodeFolioRecord(dv, 0, rec);
    expect(dv.getBigUint64(0, true)).toBe(0x40123n | (3n << 52n));
    expect(dv.getBigUint64(8, true)).toBe(77n);
    expect(decodeFolioRecord(dv, 0)).toEqual(rec);
  });
});

describe("KHO vmalloc areas", () => {
  const setup = () => {
    const machine = new Machine({ memory: "64 MiB" });
    const kho = new Kho(machine);
    const owns = (phys: bigint, order: number) => order === 0 && kho.isPreserved(phys);
    return { machine, kho, owns };
  };

  it("spans several chunks and reads back from the descriptor alone", () => {
    const { machine, kho, owns } = setup();
    const before = machine.stats();
    const area = preserveVmalloc(kho, 600 * PAGE_SIZE - 5);
    expect(area.pages.length).toBe(600);
    expect(area.chunks.length).toBe(2);
    expect(area.descriptor).toEqual({
      first: area.chunks[0],
      totalPages: 600,
      flags: KHO_VMALLOC_ALLOC,
      order: 0,
    });
    // The first chunk is full (no terminator), the second lists 89 pages then a zero.
    expect(machine.readU64(area.chunks[0]!)).toBe(area.chunks[1]);
    expect(machine.readU64(area.chunks[1]!)).toBe(0n);
    expect(machine.readU64(area.chunks[1]! + 8n + 89n * 8n)).toBe(0n);
    const parsed = parseVmalloc(machine, area.descriptor, owns, "test");
    expect(parsed.pages).toEqual(area.pages);
    expect(parsed.chunks).toEqual(area.chunks);
    unpreserveVmalloc(kho, area);
    expect(machine.stats()).toEqual(before);
  });

  it("rejects malformed chains with EINVAL, naming the check", () => {
    const { machine, kho, owns } = setup();
    const area = preserveVmalloc(kho, 3 * PAGE_SIZE);
    const d = area.descriptor;
    const parse = (desc: KhoVmalloc, o = owns) => code(() => parseVmalloc(machine, desc, o, "test"));
    const why = (desc: KhoVmalloc, o = owns) => thrown(() => parseVmalloc(machine, desc, o, "test"))?.message;
    const hex = (p: bigint) => `0x${p.toString(16)}`;
    expect(parse(d)).toBeUndefined();
    expect(parse({ ...d, first: 0n })).toBe("EINVAL");
    expect(why({ ...d, first: 0n })).toContain("test: the vmalloc descriptor has no first chunk");
    expect(parse({ ...d, totalPages: 2 })).toBe("EINVAL"); // the chunk lists 3
    expect(why({ ...d, totalPages: 2 })).toContain("the chunks list more than 2 block(s)");
    expect(parse({ ...d, totalPages: 4 })).toBe("EINVAL");
    expect(why({ ...d, totalPages: 4 })).toContain("the chunks list 3 block(s), the descriptor says 4");
    expect(parse({ ...d, totalPages: 0 })).toBe("EINVAL");
    expect(why({ ...d, totalPages: 0 })).toContain("vmalloc total_pages 0 is not a positive multiple of 1");
    expect(parse({ ...d, order: 1, totalPages: 3 })).toBe("EINVAL");
    expect(why({ ...d, order: 1, totalPages: 3 })).toContain(
      "vmalloc total_pages 3 is not a positive multiple of 2",
    );
    expect(parse({ ...d, order: 12 })).toBe("EINVAL");
    expect(why({ ...d, order: 12 })).toContain("vmalloc order 12 exceeds 9");
    expect(parse(d, (p) => p !== area.pages[1])).toBe("EINVAL"); // a page not handed over
    expect(why(d, (p) => p !== area.pages[1])).toContain(
      `data block 1 at ${hex(area.pages[1]!)} is not handed-over memory`,
    );
    expect(parse(d, (p) => p !== area.chunks[0])).toBe("EINVAL"); // a chunk not handed over
    expect(why(d, (p) => p !== area.chunks[0])).toContain(
      `chunk 0 at ${hex(area.chunks[0]!)} is not handed-over memory`,
    );
    machine.writeU64(area.chunks[0]! + 16n, area.pages[0]!); // a page listed twice
    expect(parse(d)).toBe("EINVAL");
    expect(why(d)).toContain(`data block 1 at ${hex(area.pages[0]!)} is listed twice`);
    machine.writeU64(area.chunks[0]! + 16n, area.pages[1]!);
    // A chunk pointing at itself on a one-chunk area: caught as a chain that is too long.
    machine.writeU64(area.chunks[0]!, area.chunks[0]!);
    expect(parse(d)).toBe("EINVAL");
    expect(why(d)).toContain("the chunk chain is longer than 1 chunk(s)");
  });

  it("rejects a real cycle in a multi-chunk chain as a chunk listed twice", () => {
    const { machine, kho, owns } = setup();
    const area = preserveVmalloc(kho, 600 * PAGE_SIZE); // two chunks
    expect(area.chunks.length).toBe(2);
    machine.writeU64(area.chunks[0]!, area.chunks[0]!); // chunk 0 → itself
    const err = thrown(() => parseVmalloc(machine, area.descriptor, owns, "test"));
    expect(err?.code).toBe("EINVAL");
    expect(err?.message).toContain(
      `chunk 1 at 0x${area.chunks[0]!.toString(16)} is listed twice (or the chain has a cycle)`,
    );
  });
});
