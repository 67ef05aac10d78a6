/**
 * The FDT writer: serializes an {@link FdtTree} into a version-17 blob laid out as header (40
 * bytes), memory reservation block (at 40, 8-aligned, zero-terminated), structure block, strings
 * block (property names, each stored once). It validates the whole tree first (names, duplicates,
 * depth, value types, number ranges), computes the exact size, then writes into one buffer, so
 * encoding is linear in the size of the tree.
 *
 * @module
 */
import { FdtError } from "../errors.js";
import {
  align4,
  FDT_BEGIN_NODE,
  FDT_END,
  FDT_END_NODE,
  FDT_HEADER_FIELD,
  FDT_HEADER_SIZE,
  FDT_LAST_COMP_VERSION,
  FDT_MAGIC,
  FDT_MAX_DEPTH,
  FDT_PROP,
  FDT_RESERVE_ENTRY_SIZE,
  FDT_VERSION,
  U32_MAX,
  U64_MAX,
  childPath,
} from "./format.js";
import { isValidFdtNodeName, isValidFdtPropertyName } from "./names.js";
import type { FdtNode, FdtTree } from "./types.js";

/** First pass: validates the tree, sizes the structure block and assigns string offsets. */
class Layout {
  structSize = 4; // the final FDT_END token
  stringsSize = 0;
  readonly nameOffsets = new Map<string, number>();

  measure(node: FdtNode, depth: number, path: string): void {
    if (depth > FDT_MAX_DEPTH) throw new FdtError(`node ${path} is nested deeper than ${FDT_MAX_DEPTH}`);
    if (!(node.props instanceof Map) || !Array.isArray(node.children)) {
      throw new FdtError(`node ${path} needs a props Map and a children array`);
    }
    this.structSize += 4 + align4(node.name.length + 1) + 4; // BEGIN_NODE, name, END_NODE
    for (const [name, value] of node.props) {
      if (!isValidFdtPropertyName(name)) {
        throw new FdtError(`invalid property name ${JSON.stringify(name)} in node ${path}`);
      }
      if (!(value instanceof Uint8Array)) throw new FdtError(`property ${path}:${name} is not a Uint8Array`);
      if (!this.nameOffsets.has(name)) {
        this.nameOffsets.set(name, this.stringsSize);
        this.stringsSize += name.length + 1;
      }
      this.structSize += 12 + align4(value.length);
    }
    const seen = new Set<string>();
    for (const child of node.children) {
      const name: unknown = child?.name;
      if (typeof name !== "string" || !isValidFdtNodeName(name)) {
        throw new FdtError(`invalid node name ${JSON.stringify(name)} under ${path}`);
      }
      if (seen.has(name)) throw new FdtError(`duplicate node name "${name}" under ${path}`);
      seen.add(name);
      this.measure(child, depth + 1, childPath(path, name));
    }
  }
}

/** Second pass: writes into the pre-sized buffer. */
class Writer {
  readonly dv: DataView;

  constructor(
    readonly buf: Uint8Array,
    readonly nameOffsets: ReadonlyMap<string, number>,
    public pos: number,
  ) {
    this.dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  u32(v: number): void {
    this.dv.setUint32(this.pos, v);
    this.pos += 4;
  }

  ascii(s: string, at: number): void {
    for (let i = 0; i < s.length; i++) this.buf[at + i] = s.charCodeAt(i);
  }

  node(node: FdtNode): void {
    this.u32(FDT_BEGIN_NODE);
    this.ascii(node.name, this.pos); // the NUL and padding are already zero
    this.pos += align4(node.name.length + 1);
    for (const [name, value] of node.props) {
      this.u32(FDT_PROP);
      this.u32(value.length);
      this.u32(this.nameOffsets.get(name) as number);
      this.buf.set(value, this.pos);
      this.pos += align4(value.length);
    }
    for (const child of node.children) this.node(child);
    this.u32(FDT_END_NODE);
  }
}

/**
 * Serializes a tree into a device-tree blob (version 17, last compatible version 16).
 *
 * Properties and children are written in their in-memory order; property names are stored once
 * each in the strings block, in order of first use.
 *
 * @param tree - the tree; the root is named `""`, other names must be valid and unique among
 *   siblings, depth at most {@link FDT_MAX_DEPTH}, reservations (size ≥ 1) and `bootCpuid` in range
 * @returns a new buffer holding exactly `totalsize` bytes
 * @throws {@link FdtError} when the tree cannot be represented
 *
 * @category FDT
 */
export function encodeFdt(tree: FdtTree): Uint8Array {
  const { root, reservations, bootCpuid } = tree;
  if (!Number.isInteger(bootCpuid) || bootCpuid < 0 || bootCpuid > U32_MAX) {
    throw new FdtError(`bootCpuid out of range: ${bootCpuid}`);
  }
  reservations.forEach((r, i) => {
    const ok = (v: unknown): boolean => typeof v === "bigint" && v >= 0n && v <= U64_MAX;
    if (!ok(r.address) || !ok(r.size)) throw new FdtError(`reservation ${i} is out of the u64 range`);
    if (r.size === 0n) {
      throw new FdtError(
        `reservation ${i} has size 0, which readers take for the end of the reservation block`,
      );
    }
  });
  if (root.name !== "") throw new FdtError(`root node must be named "", not ${JSON.stringify(root.name)}`);

  const layout = new Layout();
  layout.measure(root, 0, "/");
  const offMemRsvmap = FDT_HEADER_SIZE;
  const offDtStruct = offMemRsvmap + (reservations.length + 1) * FDT_RESERVE_ENTRY_SIZE;
  const offDtStrings = offDtStruct + layout.structSize;
  const totalSize = offDtStrings + layout.stringsSize;
  if (totalSize > U32_MAX) throw new FdtError(`tree needs ${totalSize} bytes, more than a u32 totalsize`);

  const buf = new Uint8Array(totalSize);
  const w = new Writer(buf, layout.nameOffsets, 0);
  const header: Record<keyof typeof FDT_HEADER_FIELD, number> = {
    magic: FDT_MAGIC,
    totalSize,
    offDtStruct,
    offDtStrings,
    offMemRsvmap,
    version: FDT_VERSION,
    lastCompVersion: FDT_LAST_COMP_VERSION,
    bootCpuidPhys: bootCpuid,
    sizeDtStrings: layout.stringsSize,
    sizeDtStruct: layout.structSize,
  };
  for (const [field, at] of Object.entries(FDT_HEADER_FIELD)) {
    w.dv.setUint32(at, header[field as keyof typeof FDT_HEADER_FIELD]);
  }
  reservations.forEach((r, i) => {
    w.dv.setBigUint64(offMemRsvmap + i * FDT_RESERVE_ENTRY_SIZE, r.address);
    w.dv.setBigUint64(offMemRsvmap + i * FDT_RESERVE_ENTRY_SIZE + 8, r.size);
  }); // the terminating entry is already zero

  w.pos = offDtStruct;
  w.node(root);
  w.u32(FDT_END);
  for (const [name, off] of layout.nameOffsets) w.ascii(name, offDtStrings + off);
  return buf;
}
