// The machine image file format (what Machine.save writes and Machine.load reads): layout,
// streaming writer and validating reader. All integers are little-endian.
//
//   header   (64 bytes)  magic "LUOMACH\0" | version u32 | header size u32 | page size u32 |
//                        section count u32 | RAM size u64 | RAM base u64 | KHO root u64 |
//                        total file length u64 | reserved u32 | CRC-32 of bytes 0..59 u32
//   section  (× 2 or 3)  type u32 | reserved u32 | payload length u64 | payload |
//                        CRC-32 of section header + payload u32 | reserved u32
//     1 page state       block count u64, then per allocated block (ascending address):
//                        pfn u64 | order u8 | preserved u8 (0 none, 1 all, 2 partial) | 6 × 0,
//                        and for "partial" a per-page bitmap (LSB first) padded to 8 bytes
//     2 page data        the bytes of every allocated block, in the order of section 1
//     3 hardware         (only when the machine has hardware or its clock moved) machine
//                        time and every hardware component's saved state; layout in hardware.ts
//   trailer  (24 bytes)  magic "LUOMEND\0" | total file length u64 | reserved u32 |
//                        CRC-32 of trailer bytes 0..19 u32
//
// Pages that are not allocated are not stored: they read as poison after loading.

import { open, type FileHandle } from "node:fs/promises";
import { MachineImageError } from "../errors.js";
import { MAX_ORDER, MAX_ORDER_BYTES, PAGE_SHIFT, PAGE_SIZE } from "./constants.js";
import { crc32 } from "./crc32.js";
import { writeFileAtomic } from "./atomic-file.js";

/**
 * The 8 magic bytes a machine image starts with: `"LUOMACH\0"`.
 *
 * @category Machine
 */
export const MACHINE_IMAGE_MAGIC = "LUOMACH\0";

/**
 * The machine image format version written by this code and the only one it reads.
 *
 * @category Machine
 */
export const MACHINE_IMAGE_VERSION = 1;

const TRAILER_MAGIC = "LUOMEND\0";
const HEADER_SIZE = 64;
const SECTION_HEADER_SIZE = 16;
const SECTION_FOOTER_SIZE = 8;
const TRAILER_SIZE = 24;
const ENTRY_SIZE = 16;
const SECTION_PAGE_STATE = 1;
const SECTION_PAGE_DATA = 2;
const SECTION_HARDWARE = 3;
const SECTION_COUNT = 2;
const CHUNK_BYTES = 4 << 20;

/**
 * Fixed machine parameters stored in an image header.
 *
 * @category Machine
 */
export interface ImageHeader {
  /** RAM size in bytes. */
  ramSize: number;
  /** Physical address of the first byte of RAM. */
  base: bigint;
  /** Physical address of the KHO root (0n when none). */
  khoRoot: bigint;
}

/**
 * One allocated block as stored in an image (page index relative to the start of RAM).
 *
 * @category Machine
 */
export interface ImageBlock {
  /** Index of the first page, relative to the start of RAM. */
  index: number;
  /** Block order (0..MAX_ORDER). */
  order: number;
  /** Preservation: none, every page, or a per-page bitmap (bit i = page index + i, LSB first). */
  preserved: "none" | "all" | Uint8Array;
}

/**
 * What {@link writeMachineImage} serializes.
 *
 * @category Machine
 */
export interface ImageSource extends ImageHeader {
  /** Allocated blocks in ascending address order. */
  blocks: readonly ImageBlock[];
  /** The RAM buffer. */
  ram: Uint8Array;
  /** Payload of the hardware section (see hardware.ts); no section when undefined. */
  hardware?: Uint8Array;
}

/**
 * Options of {@link writeMachineImage}.
 *
 * @category Machine
 */
export interface ImageWriteOptions {
  /** Called after each chunk with bytes written so far and the total; awaited. */
  onProgress?: (written: number, total: number) => void | Promise<void>;
  /** Called after the last byte is written, before the file replaces the destination; may throw to abort. */
  beforeCommit?: () => void;
}

function bitmapBytes(order: number): number {
  return Math.ceil(Math.max(1, (1 << order) / 8) / 8) * 8;
}

/** Bytes of page data the blocks store: every page of every block. */
function pageDataLength(blocks: readonly ImageBlock[]): number {
  let len = 0;
  for (const b of blocks) len += PAGE_SIZE << b.order;
  return len;
}

function pageStateLength(blocks: readonly ImageBlock[]): number {
  let len = 8;
  for (const b of blocks) len += ENTRY_SIZE + (b.preserved instanceof Uint8Array ? bitmapBytes(b.order) : 0);
  return len;
}

function encodePageState(src: ImageSource): Buffer {
  const buf = Buffer.alloc(pageStateLength(src.blocks));
  const basePfn = src.base >> BigInt(PAGE_SHIFT);
  buf.writeBigUInt64LE(BigInt(src.blocks.length), 0);
  let off = 8;
  for (const b of src.blocks) {
    buf.writeBigUInt64LE(basePfn + BigInt(b.index), off);
    buf[off + 8] = b.order;
    buf[off + 9] = b.preserved === "none" ? 0 : b.preserved === "all" ? 1 : 2;
    off += ENTRY_SIZE;
    if (b.preserved instanceof Uint8Array) {
      buf.set(b.preserved.subarray(0, bitmapBytes(b.order)), off);
      off += bitmapBytes(b.order);
    }
  }
  return buf;
}

function sectionHeader(type: number, length: number): Buffer {
  const h = Buffer.alloc(SECTION_HEADER_SIZE);
  h.writeUInt32LE(type, 0);
  h.writeBigUInt64LE(BigInt(length), 8);
  return h;
}

function sectionFooter(crc: number): Buffer {
  const f = Buffer.alloc(SECTION_FOOTER_SIZE);
  f.writeUInt32LE(crc, 0);
  return f;
}

/**
 * Streams a machine image to `path`, atomically replacing it (temporary file, fsync, rename).
 * Page data is copied out of RAM in chunks of at most 4 MiB.
 *
 * @throws the Node.js I/O error, or whatever `options.beforeCommit` / `options.onProgress` throw;
 *   `path` is unchanged in every failure case
 */
export async function writeMachineImage(
  path: string,
  src: ImageSource,
  options: ImageWriteOptions = {},
): Promise<void> {
  const state = encodePageState(src);
  const dataLength = pageDataLength(src.blocks);
  const hw = src.hardware;
  const sections = SECTION_COUNT + (hw ? 1 : 0);
  const total =
    HEADER_SIZE +
    sections * (SECTION_HEADER_SIZE + SECTION_FOOTER_SIZE) +
    state.length +
    dataLength +
    (hw?.length ?? 0) +
    TRAILER_SIZE;

  const header = Buffer.alloc(HEADER_SIZE);
  header.write(MACHINE_IMAGE_MAGIC, 0, "latin1");
  header.writeUInt32LE(MACHINE_IMAGE_VERSION, 8);
  header.writeUInt32LE(HEADER_SIZE, 12);
  header.writeUInt32LE(PAGE_SIZE, 16);
  header.writeUInt32LE(sections, 20);
  header.writeBigUInt64LE(BigInt(src.ramSize), 24);
  header.writeBigUInt64LE(src.base, 32);
  header.writeBigUInt64LE(src.khoRoot, 40);
  header.writeBigUInt64LE(BigInt(total), 48);
  header.writeUInt32LE(crc32(header.subarray(0, 60)), 60);

  const trailer = Buffer.alloc(TRAILER_SIZE);
  trailer.write(TRAILER_MAGIC, 0, "latin1");
  trailer.writeBigUInt64LE(BigInt(total), 8);
  trailer.writeUInt32LE(crc32(trailer.subarray(0, 20)), 20);

  await writeFileAtomic(path, async (sink) => {
    const progress = async (): Promise<void> => {
      await options.onProgress?.(sink.bytesWritten, total);
    };
    await sink.write(header);
    const stateHeader = sectionHeader(SECTION_PAGE_STATE, state.length);
    await sink.write(stateHeader);
    await sink.write(state);
    await sink.write(sectionFooter(crc32(state, crc32(stateHeader))));
    await progress();

    const dataHeader = sectionHeader(SECTION_PAGE_DATA, dataLength);
    await sink.write(dataHeader);
    let crc = crc32(dataHeader);
    const staging = Buffer.allocUnsafe(Math.min(CHUNK_BYTES, Math.max(dataLength, 1)));
    let fill = 0;
    const flush = async (): Promise<void> => {
      if (fill === 0) return;
      const chunk = staging.subarray(0, fill);
      crc = crc32(chunk, crc);
      await sink.write(chunk);
      fill = 0;
      await progress();
    };
    for (const b of src.blocks) {
      let pos = b.index * PAGE_SIZE;
      const end = pos + (PAGE_SIZE << b.order);
      while (pos < end) {
        const n = Math.min(end - pos, staging.length - fill);
        staging.set(src.ram.subarray(pos, pos + n), fill);
        fill += n;
        pos += n;
        if (fill === staging.length) await flush();
      }
    }
    await flush();
    await sink.write(sectionFooter(crc));
    if (hw) {
      const hwHeader = sectionHeader(SECTION_HARDWARE, hw.length);
      await sink.write(hwHeader);
      await sink.write(hw);
      await sink.write(sectionFooter(crc32(hw, crc32(hwHeader))));
    }
    await sink.write(trailer);
    await progress();
    options.beforeCommit?.();
  });
}

/**
 * What {@link readMachineImage} returns.
 *
 * @category Machine
 */
export interface ImageContents<T> {
  /** The fixed machine parameters. */
  header: ImageHeader;
  /** Allocated blocks in ascending address order; their bytes are already in `target.ram`. */
  blocks: ImageBlock[];
  /** The object `create` returned. */
  target: T;
  /** Payload of the hardware section, when the image has one. */
  hardware: Buffer | undefined;
}

class Reader {
  constructor(
    readonly path: string,
    readonly fh: FileHandle,
    readonly size: number,
  ) {}

  fail(message: string, cause?: unknown): MachineImageError {
    return new MachineImageError(this.path, message, cause === undefined ? undefined : { cause });
  }

  async readInto(buf: Uint8Array, offset: number, length: number, position: number): Promise<void> {
    if (position + length > this.size)
      throw this.fail(`truncated: need ${position + length} bytes, file has ${this.size}`);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(buf, offset + done, length - done, position + done);
      if (bytesRead === 0) throw this.fail(`truncated at byte ${position + done}`);
      done += bytesRead;
    }
  }

  async read(position: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    await this.readInto(buf, 0, length, position);
    return buf;
  }
}

function u64(buf: Buffer, off: number): number {
  const v = buf.readBigUInt64LE(off);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
}

async function readSection(r: Reader, pos: number, type: number, name: string) {
  const hdr = await r.read(pos, SECTION_HEADER_SIZE);
  const t = hdr.readUInt32LE(0);
  if (t !== type) throw r.fail(`section at byte ${pos}: type ${t}, expected ${type} (${name})`);
  const length = u64(hdr, 8);
  const payloadPos = pos + SECTION_HEADER_SIZE;
  if (payloadPos + length + SECTION_FOOTER_SIZE > r.size - TRAILER_SIZE) {
    throw r.fail(`${name} section at byte ${pos}: length ${length} runs past the end of the file`);
  }
  return { hdr, length, payloadPos, footerPos: payloadPos + length };
}

async function checkFooter(r: Reader, footerPos: number, crc: number, name: string): Promise<void> {
  const footer = await r.read(footerPos, SECTION_FOOTER_SIZE);
  if (footer.readUInt32LE(0) !== crc) throw r.fail(`${name} section checksum mismatch`);
  if (footer.readUInt32LE(4) !== 0) throw r.fail(`${name} section footer: reserved field is not zero`);
}

function decodePageState(r: Reader, payload: Buffer, header: ImageHeader): ImageBlock[] {
  const totalPages = header.ramSize / PAGE_SIZE;
  const basePfn = header.base >> BigInt(PAGE_SHIFT);
  if (payload.length < 8) throw r.fail("page state section too short");
  const count = u64(payload, 0);
  if (count > totalPages) throw r.fail(`page state lists ${count} blocks, RAM has ${totalPages} pages`);
  const blocks: ImageBlock[] = [];
  let off = 8;
  let next = 0;
  for (let i = 0; i < count; i++) {
    if (off + ENTRY_SIZE > payload.length) throw r.fail(`page state entry ${i} is truncated`);
    const pfn = payload.readBigUInt64LE(off);
    const order = payload[off + 8]!;
    const kind = payload[off + 9]!;
    off += ENTRY_SIZE;
    const rel = pfn - basePfn;
    if (order > MAX_ORDER) throw r.fail(`page state entry ${i}: order ${order} > ${MAX_ORDER}`);
    if (rel < 0n || rel + (1n << BigInt(order)) > BigInt(totalPages)) {
      throw r.fail(`page state entry ${i}: pfn 0x${pfn.toString(16)} is outside RAM`);
    }
    const index = Number(rel);
    if (index % (1 << order) !== 0)
      throw r.fail(`page state entry ${i}: pfn 0x${pfn.toString(16)} not aligned to order ${order}`);
    if (index < next)
      throw r.fail(`page state entry ${i}: pfn 0x${pfn.toString(16)} overlaps or is out of order`);
    next = index + (1 << order);
    let preserved: ImageBlock["preserved"];
    if (kind === 0) preserved = "none";
    else if (kind === 1) preserved = "all";
    else if (kind === 2) {
      const n = bitmapBytes(order);
      if (off + n > payload.length) throw r.fail(`page state entry ${i}: bitmap is truncated`);
      preserved = new Uint8Array(payload.subarray(off, off + n));
      off += n;
    } else throw r.fail(`page state entry ${i}: bad preserved flag ${kind}`);
    blocks.push({ index, order, preserved });
  }
  if (off !== payload.length) throw r.fail(`page state section has ${payload.length - off} trailing bytes`);
  return blocks;
}

/**
 * Reads and fully validates a machine image. `create` is called once the header and page state
 * are validated and must return a fresh target whose `ram` (`header.ramSize` bytes) receives the
 * page data; nothing else is touched, so a failure leaves no trace except the discarded target.
 *
 * @throws {@link MachineImageError} when the file is missing or unreadable (with `cause`),
 *   truncated, not a machine image (bad magic), of another format version or page size, fails a
 *   checksum, or is internally inconsistent; an error thrown by `create` is wrapped likewise
 */
export async function readMachineImage<T extends { ram: Uint8Array }>(
  path: string,
  create: (header: ImageHeader) => T,
): Promise<ImageContents<T>> {
  let fh: FileHandle;
  try {
    fh = await open(path, "r");
  } catch (e) {
    throw new MachineImageError(path, `cannot open: ${(e as Error).message}`, { cause: e });
  }
  try {
    const size = (await fh.stat()).size;
    const r = new Reader(path, fh, size);
    if (size < 8) throw r.fail(`truncated or not a machine image (${size} bytes)`);
    const magic = await r.read(0, 8);
    if (magic.toString("latin1") !== MACHINE_IMAGE_MAGIC) throw r.fail("not a machine image (bad magic)");
    if (size < HEADER_SIZE + TRAILER_SIZE) throw r.fail(`truncated (${size} bytes)`);
    const hb = await r.read(0, HEADER_SIZE);
    const version = hb.readUInt32LE(8);
    if (version !== MACHINE_IMAGE_VERSION) {
      throw r.fail(
        `unsupported format version ${version} (this build reads version ${MACHINE_IMAGE_VERSION})`,
      );
    }
    if (hb.readUInt32LE(60) !== crc32(hb.subarray(0, 60))) throw r.fail("header checksum mismatch");
    const pageSize = hb.readUInt32LE(16);
    if (pageSize !== PAGE_SIZE) throw r.fail(`page size ${pageSize}, this build uses ${PAGE_SIZE}`);
    if (hb.readUInt32LE(12) !== HEADER_SIZE)
      throw r.fail(`header size ${hb.readUInt32LE(12)}, expected ${HEADER_SIZE}`);
    const sections = hb.readUInt32LE(20);
    if (sections !== SECTION_COUNT && sections !== SECTION_COUNT + 1)
      throw r.fail(`${sections} sections, expected ${SECTION_COUNT} or ${SECTION_COUNT + 1}`);
    const totalLength = u64(hb, 48);
    if (size < totalLength) throw r.fail(`truncated: ${size} of ${totalLength} bytes`);
    if (size > totalLength) throw r.fail(`${size - totalLength} unexpected bytes after the end of the image`);
    const tb = await r.read(size - TRAILER_SIZE, TRAILER_SIZE);
    if (
      tb.toString("latin1", 0, 8) !== TRAILER_MAGIC ||
      tb.readUInt32LE(20) !== crc32(tb.subarray(0, 20)) ||
      u64(tb, 8) !== totalLength
    ) {
      throw r.fail("bad trailer (truncated or corrupt)");
    }
    const ramSize = u64(hb, 24);
    const header: ImageHeader = { ramSize, base: hb.readBigUInt64LE(32), khoRoot: hb.readBigUInt64LE(40) };
    if (ramSize === 0 || ramSize % MAX_ORDER_BYTES !== 0) throw r.fail(`bad RAM size ${ramSize}`);
    if (header.base === 0n || header.base % BigInt(MAX_ORDER_BYTES) !== 0n) {
      throw r.fail(`bad RAM base 0x${header.base.toString(16)}`);
    }

    const st = await readSection(r, HEADER_SIZE, SECTION_PAGE_STATE, "page state");
    const payload = await r.read(st.payloadPos, st.length);
    await checkFooter(r, st.footerPos, crc32(payload, crc32(st.hdr)), "page state");
    const blocks = decodePageState(r, payload, header);

    const dataPos = st.footerPos + SECTION_FOOTER_SIZE;
    const ds = await readSection(r, dataPos, SECTION_PAGE_DATA, "page data");
    const dataLength = pageDataLength(blocks);
    if (ds.length !== dataLength)
      throw r.fail(`page data is ${ds.length} bytes, page state needs ${dataLength}`);
    let hardware: Buffer | undefined;
    let endPos = ds.footerPos + SECTION_FOOTER_SIZE;
    if (sections > SECTION_COUNT) {
      const hs = await readSection(r, endPos, SECTION_HARDWARE, "hardware");
      hardware = await r.read(hs.payloadPos, hs.length);
      await checkFooter(r, hs.footerPos, crc32(hardware, crc32(hs.hdr)), "hardware");
      endPos = hs.footerPos + SECTION_FOOTER_SIZE;
    }
    if (endPos !== size - TRAILER_SIZE) throw r.fail("unexpected bytes before the trailer");

    let target: T;
    try {
      target = create(header);
    } catch (e) {
      throw r.fail(`cannot build the machine: ${(e as Error).message}`, e);
    }
    const ram = target.ram;
    let crc = crc32(ds.hdr);
    let filePos = ds.payloadPos;
    // Read runs of physically contiguous blocks in chunks straight into RAM.
    let i = 0;
    while (i < blocks.length) {
      const start = blocks[i]!.index * PAGE_SIZE;
      let end = start + (PAGE_SIZE << blocks[i]!.order);
      i++;
      while (i < blocks.length && blocks[i]!.index * PAGE_SIZE === end && end - start < CHUNK_BYTES) {
        end += PAGE_SIZE << blocks[i]!.order;
        i++;
      }
      await r.readInto(ram, start, end - start, filePos);
      crc = crc32(ram.subarray(start, end), crc);
      filePos += end - start;
    }
    await checkFooter(r, ds.footerPos, crc, "page data");
    return { header, blocks, target, hardware };
  } catch (e) {
    if (e instanceof MachineImageError) throw e;
    throw new MachineImageError(path, `cannot read: ${(e as Error).message}`, { cause: e });
  } finally {
    await fh.close().catch(() => undefined);
  }
}
