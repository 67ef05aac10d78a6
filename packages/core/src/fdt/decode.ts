/**
 * The FDT reader: parses a device-tree blob into an {@link FdtTree}, validating everything it
 * touches. Header fields, block offsets and sizes, alignment, block overlap, every token, length,
 * name offset, name, NUL terminator, nesting depth and the final `FDT_END` are checked against
 * the blob before use, so malformed input always ends in an {@link FdtError} carrying the byte
 * offset of the problem; never another exception and never an endless loop (every step advances
 * through a bounded block). Property values are copied out of the blob.
 *
 * @module
 */
import { FdtError } from "../errors.js";
import {
  align4,
  childPath,
  FDT_BEGIN_NODE,
  FDT_END,
  FDT_END_NODE,
  FDT_HEADER_FIELD,
  FDT_MAX_DEPTH,
  FDT_MAX_NAME_LENGTH,
  FDT_NOP,
  FDT_PROP,
  FDT_RESERVE_ENTRY_SIZE,
} from "./format.js";
import { fdtHeaderSize, peekFdtHeader, type FdtHeader } from "./header.js";
import { isValidFdtNodeName, isValidFdtPropertyName } from "./names.js";
import type { FdtNode, FdtReservation, FdtTree } from "./types.js";

// Names are validated to be ASCII after decoding; latin1 decoding never throws.
const latin1 = new TextDecoder("latin1");

/** A name for an error message, shortened: a corrupt name can be as long as the blob. */
function quote(name: string): string {
  return JSON.stringify(name.length > 40 ? `${name.slice(0, 40)}…` : name);
}

/** A half-open byte range of the blob. */
interface Region {
  readonly what: string;
  readonly start: number;
  readonly end: number;
}

function checkDisjoint(a: Region, b: Region): void {
  if (a.start < b.end && b.start < a.end) {
    throw new FdtError(
      `${a.what} [${a.start}, ${a.end}) overlaps ${b.what} [${b.start}, ${b.end})`,
      Math.max(a.start, b.start),
    );
  }
}

/** Validates block offsets, sizes and alignment against the header and `totalsize`. */
function checkLayout(h: FdtHeader, blobLength: number): { struct: Region; strings: Region } {
  const F = FDT_HEADER_FIELD;
  if (h.totalSize > blobLength) {
    throw new FdtError(`totalsize ${h.totalSize} exceeds the ${blobLength} bytes available`, F.totalSize);
  }
  const hdr = fdtHeaderSize(h.version);
  const inside = (what: string, field: number, start: number, size: number): Region => {
    if (start < hdr || start + size > h.totalSize) {
      throw new FdtError(
        `${what} [${start}, ${start + size}) is outside [${hdr}, ${h.totalSize}) (after header, within totalsize)`,
        field,
      );
    }
    return { what, start, end: start + size };
  };
  if (h.offMemRsvmap % 8 !== 0) {
    throw new FdtError(`memory reservation block offset ${h.offMemRsvmap} is not 8-aligned`, F.offMemRsvmap);
  }
  inside("memory reservation block", F.offMemRsvmap, h.offMemRsvmap, FDT_RESERVE_ENTRY_SIZE);
  if (h.offDtStruct % 4 !== 0) {
    throw new FdtError(`structure block offset ${h.offDtStruct} is not 4-aligned`, F.offDtStruct);
  }
  let struct: Region;
  if (h.version >= 17) {
    if (h.sizeDtStruct % 4 !== 0) {
      throw new FdtError(`structure block size ${h.sizeDtStruct} is not a multiple of 4`, F.sizeDtStruct);
    }
    struct = inside("structure block", F.offDtStruct, h.offDtStruct, h.sizeDtStruct);
  } else {
    // Version 16 has no size_dt_struct: the block ends at its FDT_END token (checked later).
    inside("structure block", F.offDtStruct, h.offDtStruct, 0);
    struct = { what: "structure block", start: h.offDtStruct, end: h.totalSize };
  }
  const strings = inside("strings block", F.offDtStrings, h.offDtStrings, h.sizeDtStrings);
  if (h.version >= 17) checkDisjoint(struct, strings);
  return { struct, strings };
}

/** Reads the reservation entries; returns them and the block's extent (terminator included). */
function readReservations(dv: DataView, h: FdtHeader): { reservations: FdtReservation[]; region: Region } {
  const reservations: FdtReservation[] = [];
  for (let pos = h.offMemRsvmap; ; pos += FDT_RESERVE_ENTRY_SIZE) {
    if (pos + FDT_RESERVE_ENTRY_SIZE > h.totalSize) {
      throw new FdtError("memory reservation block has no terminating zero entry within totalsize", pos);
    }
    const address = dv.getBigUint64(pos);
    const size = dv.getBigUint64(pos + 8);
    if (address === 0n && size === 0n) {
      const region = { what: "memory reservation block", start: h.offMemRsvmap, end: pos + 16 };
      return { reservations, region };
    }
    if (size === 0n) {
      // libfdt and dtc stop at any size-0 entry, the spec only at {0, 0}: refuse the ambiguity.
      throw new FdtError(`reservation entry at 0x${address.toString(16)} has size 0`, pos + 8);
    }
    reservations.push({ address, size });
  }
}

/** An open node while walking the structure block. */
interface Open {
  readonly node: FdtNode;
  readonly path: string;
  readonly childNames: Set<string>;
}

/** Walks the structure block; returns the root and the offset just past FDT_END. */
class StructReader {
  private readonly nameCache = new Map<number, string>();

  constructor(
    private readonly blob: Uint8Array,
    private readonly dv: DataView,
    private readonly struct: Region,
    private readonly strings: Region,
  ) {}

  private token(pos: number): number {
    if (pos + 4 > this.struct.end) {
      throw new FdtError("structure block ends without FDT_END", pos);
    }
    return this.dv.getUint32(pos);
  }

  /** Offset of the first NUL in [from, limit), or -1. */
  private nul(from: number, limit: number): number {
    const i = this.blob.subarray(from, limit).indexOf(0);
    return i < 0 ? -1 : from + i;
  }

  private propertyName(nameoff: number, at: number): string {
    const cached = this.nameCache.get(nameoff);
    if (cached !== undefined) return cached;
    const { start, end } = this.strings;
    if (nameoff >= end - start) {
      throw new FdtError(
        `property nameoff ${nameoff} is outside the ${end - start}-byte strings block`,
        at + 8,
      );
    }
    const from = start + nameoff;
    // A valid name is at most 31 bytes: look no further, so scanning stays linear.
    const nul = this.nul(from, Math.min(end, from + FDT_MAX_NAME_LENGTH + 1));
    if (nul < 0) {
      throw new FdtError(`property name at strings offset ${nameoff} is unterminated or too long`, from);
    }
    const name = latin1.decode(this.blob.subarray(from, nul));
    if (!isValidFdtPropertyName(name)) {
      throw new FdtError(`invalid property name ${quote(name)} at strings offset ${nameoff}`, from);
    }
    this.nameCache.set(nameoff, name);
    return name;
  }

  read(): { root: FdtNode; end: number } {
    const stack: Open[] = [];
    let root: FdtNode | undefined;
    let pos = this.struct.start;
    for (;;) {
      const at = pos;
      const token = this.token(pos);
      pos += 4;
      switch (token) {
        case FDT_NOP:
          break;
        case FDT_BEGIN_NODE: {
          if (root !== undefined && stack.length === 0) throw new FdtError("second root node", at);
          const nul = this.nul(pos, this.struct.end);
          if (nul < 0) throw new FdtError("node name is not NUL-terminated within the structure block", pos);
          const name = latin1.decode(this.blob.subarray(pos, nul));
          const parent = stack[stack.length - 1];
          let path: string;
          if (parent === undefined) {
            if (name !== "") throw new FdtError(`root node has name ${quote(name)}`, pos);
            path = "/";
          } else {
            if (!isValidFdtNodeName(name)) {
              throw new FdtError(`invalid node name ${quote(name)} under ${parent.path}`, pos);
            }
            if (parent.childNames.has(name)) {
              throw new FdtError(`duplicate node name "${name}" under ${parent.path}`, pos);
            }
            if (stack.length > FDT_MAX_DEPTH) {
              throw new FdtError(`nodes nested deeper than ${FDT_MAX_DEPTH}`, at);
            }
            path = childPath(parent.path, name);
          }
          pos = pos + align4(nul + 1 - pos);
          if (pos > this.struct.end)
            throw new FdtError("node name padding runs past the structure block", nul);
          const node: FdtNode = { name, props: new Map(), children: [] };
          if (parent === undefined) root = node;
          else {
            parent.childNames.add(name);
            parent.node.children.push(node);
          }
          stack.push({ node, path, childNames: new Set() });
          break;
        }
        case FDT_PROP: {
          const open = stack[stack.length - 1];
          if (open === undefined) throw new FdtError("property outside any node", at);
          if (open.node.children.length > 0) {
            throw new FdtError(`property after a subnode in ${open.path}`, at);
          }
          if (pos + 8 > this.struct.end)
            throw new FdtError("property header runs past the structure block", at);
          const len = this.dv.getUint32(pos);
          const nameoff = this.dv.getUint32(pos + 4);
          const name = this.propertyName(nameoff, at);
          const value = pos + 8;
          if (len > this.struct.end - value) {
            throw new FdtError(
              `property ${open.path}:${name} length ${len} runs past the structure block`,
              pos,
            );
          }
          if (open.node.props.has(name)) throw new FdtError(`duplicate property ${open.path}:${name}`, at);
          open.node.props.set(name, this.blob.slice(value, value + len));
          pos = value + align4(len);
          if (pos > this.struct.end)
            throw new FdtError("property padding runs past the structure block", value);
          break;
        }
        case FDT_END_NODE:
          if (stack.pop() === undefined) throw new FdtError("FDT_END_NODE outside any node", at);
          break;
        case FDT_END:
          if (root === undefined) throw new FdtError("FDT_END before the root node", at);
          if (stack.length > 0)
            throw new FdtError(`FDT_END inside node ${stack[stack.length - 1]?.path}`, at);
          return { root, end: pos };
        default:
          throw new FdtError(`unknown token 0x${token.toString(16)}`, at);
      }
    }
  }
}

/**
 * Parses and validates a device-tree blob.
 *
 * Accepts blob versions ≥ 16 whose `last_comp_version` is ≤ 17. The reservation block ends at
 * the first `{0, 0}` entry; an entry of size 0 at a non-zero address is rejected (libfdt and dtc
 * would take it for the terminator). `blob` may be longer than the
 * blob's `totalsize` (e.g. a whole page); bytes past `totalsize` are ignored. Every node and
 * property name must be valid ({@link isValidFdtNodeName}, {@link isValidFdtPropertyName}),
 * names unique among siblings and within a node, properties before subnodes, nesting at most
 * {@link FDT_MAX_DEPTH}, and the structure block must end with `FDT_END` right after the root
 * node (only `FDT_NOP` between them).
 *
 * @param blob - the bytes of the blob
 * @returns the tree, with property values copied out of `blob`
 * @throws {@link FdtError} (with the byte offset of the problem) on any malformed input
 *
 * @category FDT
 */
export function decodeFdt(blob: Uint8Array): FdtTree {
  const h = peekFdtHeader(blob);
  const { struct, strings } = checkLayout(h, blob.length);
  const dv = new DataView(blob.buffer, blob.byteOffset, h.totalSize);
  const { reservations, region: rsvmap } = readReservations(dv, h);
  const { root, end } = new StructReader(blob, dv, struct, strings).read();
  if (h.version >= 17) {
    if (end !== struct.end) {
      throw new FdtError(`${struct.end - end} bytes after FDT_END in the structure block`, end);
    }
  } else {
    checkDisjoint({ ...struct, end }, strings);
  }
  checkDisjoint(rsvmap, { ...struct, end });
  checkDisjoint(rsvmap, strings);
  return { root, reservations, bootCpuid: h.bootCpuidPhys };
}
