/**
 * Encoding and decoding of the memfd handover record (`struct memfd_luo_ser`, 48 bytes) and its
 * folio records (`struct memfd_luo_folio_ser`, 16 bytes each, in a KHO vmalloc area); layouts in
 * `layout.ts`.
 *
 * {@link parseMemfdHandover} reads everything a preserved memfd left behind from its physical
 * address alone, checking the structure (the record and every page it points to must be memory
 * the caller owns; counts must fit): `EINVAL` otherwise. The handler adds the semantic checks
 * (flags, seals, folio ranges) on top. {@link readMemfdHandover} is the same read for tools that
 * look at a machine without booting it (`luo inspect`-style reports).
 *
 * @module
 */
import { LiveUpdateError, PAGE_SHIFT, PAGE_SIZE, type Machine } from "@luo/core";
import {
  MEMFD_LUO_FOLIO_PFN_BITS,
  MEMFD_LUO_FOLIO_SER,
  MEMFD_LUO_FOLIO_SER_SIZE,
  MEMFD_LUO_SER,
  MEMFD_LUO_SER_SIZE,
} from "./layout.js";
import {
  parseVmalloc,
  readKhoVmalloc,
  writeKhoVmalloc,
  type KhoVmalloc,
  type VmallocArea,
} from "./vmalloc.js";

/** The fields of a `struct memfd_luo_ser`. */
export interface MemfdRecord {
  /** The file position (`f_pos`). */
  readonly pos: bigint;
  /** The file size (`i_size`). */
  readonly size: bigint;
  /** The seals. */
  readonly seals: number;
  /** Flags; must be 0 in this version. */
  readonly flags: number;
  /** Number of folio records. */
  readonly nrFolios: bigint;
  /** Where the folio records are. */
  readonly folios: KhoVmalloc;
}

/** The fields of a `struct memfd_luo_folio_ser`. */
export interface MemfdFolioRecord {
  /** Page frame number of the folio (0: empty slot). */
  readonly pfn: bigint;
  /** `MEMFD_LUO_FOLIO_*` flags. */
  readonly flags: number;
  /** Page offset of the folio in the file. */
  readonly index: bigint;
}

/**
 * The non-empty folio records of a handover as parallel arrays (what the handler's retrieve and
 * finish walk: no object or bigint per folio; see {@link parseMemfdHandover}).
 */
export interface MemfdFolioArrays {
  /** Number of records. */
  readonly length: number;
  /** Page frame number of each folio (exact: pfns have 52 bits at most). */
  readonly pfn: Float64Array;
  /** Page offset of each folio in the file (2^64 − 1 at most, so possibly rounded above 2^53). */
  readonly index: Float64Array;
  /** The record's `MEMFD_LUO_FOLIO_*` flags. */
  readonly flags: Uint16Array;
}

/** Everything one preserved memfd handed over. */
export interface MemfdHandover {
  /** Physical address of the `memfd_luo_ser` (the file's LUO data). */
  readonly ser: bigint;
  /** The decoded record. */
  readonly record: MemfdRecord;
  /** The pages holding the folio records (none for an empty memfd). */
  readonly area: VmallocArea | undefined;
  /** The folio records with a non-zero pfn, in array order (built when first read). */
  readonly folios: readonly MemfdFolioRecord[];
  /** The same records as parallel arrays. */
  readonly folioArrays: MemfdFolioArrays;
}

const PFN_MASK = (1n << BigInt(MEMFD_LUO_FOLIO_PFN_BITS)) - 1n;
/** The pfn bits in the high u32 of the pfn/flags word. */
const PFN_HIGH_MASK = 2 ** (MEMFD_LUO_FOLIO_PFN_BITS - 32) - 1;
const NO_FOLIOS: MemfdFolioArrays = {
  length: 0,
  pfn: new Float64Array(0),
  index: new Float64Array(0),
  flags: new Uint16Array(0),
};

/** Writes `rec` as a `struct memfd_luo_ser` at the start of `bytes` (at least 48 bytes). */
export function encodeMemfdSer(bytes: Uint8Array, rec: MemfdRecord): void {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, MEMFD_LUO_SER_SIZE);
  dv.setBigUint64(MEMFD_LUO_SER.pos, rec.pos, true);
  dv.setBigUint64(MEMFD_LUO_SER.size, rec.size, true);
  dv.setUint32(MEMFD_LUO_SER.seals, rec.seals, true);
  dv.setUint32(MEMFD_LUO_SER.flags, rec.flags, true);
  dv.setBigUint64(MEMFD_LUO_SER.nrFolios, rec.nrFolios, true);
  writeKhoVmalloc(dv, MEMFD_LUO_SER.folios, rec.folios);
}

/** Reads a `struct memfd_luo_ser` from the start of `bytes` (at least 48 bytes). */
export function decodeMemfdSer(bytes: Uint8Array): MemfdRecord {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, MEMFD_LUO_SER_SIZE);
  return {
    pos: dv.getBigUint64(MEMFD_LUO_SER.pos, true),
    size: dv.getBigUint64(MEMFD_LUO_SER.size, true),
    seals: dv.getUint32(MEMFD_LUO_SER.seals, true),
    flags: dv.getUint32(MEMFD_LUO_SER.flags, true),
    nrFolios: dv.getBigUint64(MEMFD_LUO_SER.nrFolios, true),
    folios: readKhoVmalloc(dv, MEMFD_LUO_SER.folios),
  };
}

/** Writes a folio record at `offset` of `dv`: pfn in the low 52 bits, flags in the high 12. */
export function encodeFolioRecord(dv: DataView, offset: number, rec: MemfdFolioRecord): void {
  const word = (rec.pfn & PFN_MASK) | (BigInt(rec.flags & 0xfff) << BigInt(MEMFD_LUO_FOLIO_PFN_BITS));
  dv.setBigUint64(offset + MEMFD_LUO_FOLIO_SER.pfnFlags, word, true);
  dv.setBigUint64(offset + MEMFD_LUO_FOLIO_SER.index, rec.index, true);
}

/** Reads a folio record at `offset` of `dv`. */
export function decodeFolioRecord(dv: DataView, offset: number): MemfdFolioRecord {
  const word = dv.getBigUint64(offset + MEMFD_LUO_FOLIO_SER.pfnFlags, true);
  return {
    pfn: word & PFN_MASK,
    flags: Number(word >> BigInt(MEMFD_LUO_FOLIO_PFN_BITS)),
    index: dv.getBigUint64(offset + MEMFD_LUO_FOLIO_SER.index, true),
  };
}

/** Physical address of the folio a record names. */
export function folioPhys(rec: MemfdFolioRecord): bigint {
  return rec.pfn << BigInt(PAGE_SHIFT);
}

/**
 * Reads the memfd handover whose record is at `data`. `owns(phys, order)` says whether a block
 * of `2^order` pages at `phys` is memory the caller may read. Errors (`EINVAL`): the record, a
 * chunk or a record page is not owned or appears twice, the chunk chain is malformed, more folio
 * records than the pages hold.
 */
export function parseMemfdHandover(
  machine: Machine,
  data: bigint,
  owns: (phys: bigint, order: number) => boolean,
): MemfdHandover {
  const what = `memfd record at 0x${data.toString(16)}`;
  if (!owns(data, 0)) throw new LiveUpdateError("EINVAL", `${what} is not handed-over memory`);
  const record = decodeMemfdSer(machine.read(data, MEMFD_LUO_SER_SIZE));
  if (record.nrFolios === 0n)
    return { ser: data, record, area: undefined, folios: [], folioArrays: NO_FOLIOS };
  const area = parseVmalloc(machine, record.folios, owns, what);
  if (area.pages.includes(data) || area.chunks.includes(data)) {
    throw new LiveUpdateError("EINVAL", `${what}: its folio array overlaps the record`);
  }
  const blockBytes = PAGE_SIZE << record.folios.order;
  const perBlock = blockBytes / MEMFD_LUO_FOLIO_SER_SIZE;
  const capacity = area.pages.length * perBlock;
  if (record.nrFolios > BigInt(capacity)) {
    throw new LiveUpdateError(
      "EINVAL",
      `${what}: ${record.nrFolios} folio records do not fit in ${area.pages.length} array block(s)`,
    );
  }
  const n = Number(record.nrFolios);
  const arrays = {
    length: 0,
    pfn: new Float64Array(n),
    index: new Float64Array(n),
    flags: new Uint16Array(n),
  };
  const indexLow = new Uint32Array(n);
  const indexHigh = new Uint32Array(n);
  let k = 0;
  for (let b = 0; b * perBlock < n; b++) {
    const bytes = machine.read(area.pages[b]!, blockBytes);
    const dv = new DataView(bytes.buffer, bytes.byteOffset, blockBytes);
    for (let i = 0; i < perBlock && b * perBlock + i < n; i++) {
      // u32 words, not getBigUint64: at 32 Ki folios (a 64 GiB guest in 2 MiB folios) the bigint
      // decoding was a third of the retrieve (see the handler's retrieve).
      const off = i * MEMFD_LUO_FOLIO_SER_SIZE;
      const lo = dv.getUint32(off + MEMFD_LUO_FOLIO_SER.pfnFlags, true);
      const hi = dv.getUint32(off + MEMFD_LUO_FOLIO_SER.pfnFlags + 4, true);
      const pfn = (hi & PFN_HIGH_MASK) * 2 ** 32 + lo;
      if (pfn === 0) continue;
      arrays.pfn[k] = pfn;
      arrays.flags[k] = hi >>> (MEMFD_LUO_FOLIO_PFN_BITS - 32);
      indexLow[k] = dv.getUint32(off + MEMFD_LUO_FOLIO_SER.index, true);
      indexHigh[k] = dv.getUint32(off + MEMFD_LUO_FOLIO_SER.index + 4, true);
      arrays.index[k] = indexHigh[k]! * 2 ** 32 + indexLow[k]!;
      k++;
    }
  }
  const folioArrays: MemfdFolioArrays = {
    length: k,
    pfn: arrays.pfn.subarray(0, k),
    index: arrays.index.subarray(0, k),
    flags: arrays.flags.subarray(0, k),
  };
  const recordsAt = (): MemfdFolioRecord[] => {
    const out: MemfdFolioRecord[] = [];
    for (let i = 0; i < k; i++) {
      out.push({
        pfn: BigInt(folioArrays.pfn[i]!),
        flags: folioArrays.flags[i]!,
        index: (BigInt(indexHigh[i]!) << 32n) | BigInt(indexLow[i]!),
      });
    }
    return out;
  };
  let folios: MemfdFolioRecord[] | undefined;
  return {
    ser: data,
    record,
    area,
    get folios(): readonly MemfdFolioRecord[] {
      return (folios ??= recordsAt());
    },
    folioArrays,
  };
}

/**
 * Reads the memfd handover at `data` from a machine that is not running a kernel that owns it
 * (an inspected image): every page must be allocated. Errors as {@link parseMemfdHandover}.
 */
export function readMemfdHandover(machine: Machine, data: bigint): MemfdHandover {
  const owns = (phys: bigint, order: number): boolean => {
    try {
      const last = phys + BigInt((PAGE_SIZE << order) - 1);
      return phys % BigInt(PAGE_SIZE) === 0n && machine.isAllocated(phys) && machine.isAllocated(last);
    } catch {
      return false;
    }
  };
  return parseMemfdHandover(machine, data, owns);
}
