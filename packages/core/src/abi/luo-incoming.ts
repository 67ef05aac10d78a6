/**
 * The incoming LUO handover: read and validate everything the previous kernel serialized.
 *
 * Early boot calls {@link readLuoHandover} with the KHO handover. It checks the LUO FDT
 * (compatible strings, property sizes), walks the session chain and every session's file chain,
 * and the FLB page, and returns plain records rebuilt from those bytes. Any inconsistency — a bad
 * string, a file count that disagrees with the chain, an address outside preserved memory (the
 * LUO FDT and the FLB page must each be one handed-over page), a bad block, a block shared by two
 * chains — is a {@link KernelPanicError} naming the location. The LUO FDT and FLB pages are
 * freed once read; session blocks are freed by the orchestrator after deserialization and each
 * session's file blocks when it finishes (the kernel's order).
 *
 * @module
 */
import { KernelPanicError, LiveUpdateError } from "../errors.js";
import { decodeFdt, getProp, peekFdtHeader, readFdtString, readFdtU64, type FdtNode } from "../fdt/index.js";
import { PAGE_SIZE } from "../machine/index.js";
import type { KhoIncoming } from "../kho/index.js";
import { readChain } from "./chain-reader.js";
import {
  COMPATIBLE_SIZE,
  FILE_BLOCKS,
  FILE_SER,
  FLB_AREA,
  FLB_SER,
  LUO_COMPATIBLE,
  LUO_FLB_COMPATIBLE,
  LUO_KHO_NAME,
  LUO_SESSION_COMPATIBLE,
  SESSION_BLOCKS,
  SESSION_NAME_SIZE,
  SESSION_SER,
} from "./layout.js";
import { readFixedString } from "./strings.js";

/**
 * A file record handed over inside a session.
 *
 * @category Handover ABI
 */
export interface IncomingFileRecord {
  /** Compatible of the handler that preserved it. */
  readonly compatible: string;
  /** The handler's opaque data. */
  readonly data: bigint;
  /** The user's token. */
  readonly token: bigint;
}

/**
 * A session record handed over by the previous kernel.
 *
 * @category Handover ABI
 */
export interface IncomingSessionRecord {
  /** Session name. */
  readonly name: string;
  /** Files in preservation order. */
  readonly files: IncomingFileRecord[];
  /** Physical addresses of the session's file blocks. */
  readonly fileBlocks: bigint[];
}

/**
 * An FLB record handed over by the previous kernel.
 *
 * @category Handover ABI
 */
export interface IncomingFlbRecord {
  /** FLB compatible. */
  readonly compatible: string;
  /** The FLB's opaque data. */
  readonly data: bigint;
  /** Number of dependent files at serialization. */
  readonly count: bigint;
}

/**
 * Everything LUO received from the previous kernel.
 *
 * @category Handover ABI
 */
export interface LuoIncomingHandover {
  /** The previous kernel's live-update number (this kernel's is one more). */
  readonly liveupdateNumber: bigint;
  /** Sessions in the previous kernel's creation order. */
  readonly sessions: IncomingSessionRecord[];
  /** Physical addresses of the session blocks. */
  readonly sessionBlocks: bigint[];
  /** FLB records in registration order. */
  readonly flbs: IncomingFlbRecord[];
}

const hex = (p: bigint): string => `0x${p.toString(16)}`;

/**
 * The files and blocks of an empty session: one shared, frozen empty array each. With a u64 read
 * as `0n` without allocating (below), an empty session costs its name and two small objects
 * while the handover is read: at 100k–500k sessions the per-session garbage here was what the
 * young-generation GCs of early boot spent their time copying.
 */
const NO_FILES: IncomingFileRecord[] = Object.freeze([]) as unknown as IncomingFileRecord[];
const NO_BLOCKS: bigint[] = Object.freeze([]) as unknown as bigint[];

/** A little-endian u64 of `dv` at `off`; the shared `0n` for zero. */
function readU64(dv: DataView, off: number): bigint {
  if (dv.getUint32(off, true) === 0 && dv.getUint32(off + 4, true) === 0) return 0n;
  return dv.getBigUint64(off, true);
}

function panicOnFdt<T>(what: string, phys: bigint, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof KernelPanicError) throw e;
    throw new KernelPanicError(`${what} at ${hex(phys)}: ${(e as Error).message}`, phys, { cause: e });
  }
}

function checkCompatible(node: FdtNode, expected: string, what: string, phys: bigint): void {
  const c = readFdtString(getProp(node, "compatible"), `${what} compatible`);
  if (c !== expected) {
    throw new KernelPanicError(
      `${what} at ${hex(phys)} is ${JSON.stringify(c)}, expected "${expected}"`,
      phys,
    );
  }
}

/** A session record as read from the session chain, before its file chain is walked. */
interface SessionEntry {
  readonly name: string;
  /** Head of its file chain (0 = none). */
  readonly files: bigint;
  readonly nfiles: bigint;
  /** Index in the session chain and the block holding the record (panic messages). */
  readonly index: number;
  readonly block: bigint;
}

const fileChainLabel = (name: string): string => `file chain of session ${JSON.stringify(name)}`;

/** Panics when a session's `nfiles` disagrees with the `held` files of its chain. */
function checkFileCount(s: SessionEntry, held: number): void {
  if (BigInt(held) === s.nfiles) return;
  throw new KernelPanicError(
    `${fileChainLabel(s.name)} at ${hex(s.files)} holds ${held} files, session ${s.index} in block ${hex(s.block)} says ${s.nfiles}`,
    s.files,
  );
}

/**
 * Reads the LUO handover. Returns `undefined` when the previous kernel published no "LUO" subtree.
 * Throws {@link KernelPanicError} on any corruption.
 *
 * @category Handover ABI
 */
export function readLuoHandover(kho: KhoIncoming): LuoIncomingHandover | undefined {
  let fdtPhys: bigint;
  try {
    fdtPhys = kho.getSubtree(LUO_KHO_NAME);
  } catch (e) {
    if (e instanceof LiveUpdateError && e.code === "ENOENT") return undefined;
    throw e;
  }
  if (kho.orderOf(fdtPhys) !== 0 || !kho.covers(fdtPhys, PAGE_SIZE))
    throw new KernelPanicError(`LUO FDT ${hex(fdtPhys)} is not a preserved page`, fdtPhys);
  const page = kho.machine.view(fdtPhys, PAGE_SIZE);
  const { liveupdateNumber, sessionHead, flbHead } = panicOnFdt("LUO FDT", fdtPhys, () => {
    const size = peekFdtHeader(page).totalSize;
    if (size > PAGE_SIZE)
      throw new KernelPanicError(
        `LUO FDT at ${hex(fdtPhys)} claims ${size} bytes, more than a page`,
        fdtPhys,
      );
    const tree = decodeFdt(page);
    checkCompatible(tree.root, LUO_COMPATIBLE, "LUO FDT", fdtPhys);
    const session = tree.root.children.find((c) => c.name === "luo-session");
    const flb = tree.root.children.find((c) => c.name === "luo-flb");
    if (!session || !flb) {
      const missing = session ? "/luo-flb" : "/luo-session";
      throw new KernelPanicError(`LUO FDT at ${hex(fdtPhys)} lacks ${missing}`, fdtPhys);
    }
    checkCompatible(session, LUO_SESSION_COMPATIBLE, "/luo-session", fdtPhys);
    checkCompatible(flb, LUO_FLB_COMPATIBLE, "/luo-flb", fdtPhys);
    return {
      liveupdateNumber: readFdtU64(getProp(tree.root, "liveupdate-number"), "/liveupdate-number"),
      sessionHead: readFdtU64(getProp(session, "luo-session-header"), "/luo-session/luo-session-header"),
      flbHead: readFdtU64(getProp(flb, "luo-flb-header"), "/luo-flb/luo-flb-header"),
    };
  });

  // Every block belongs to exactly one chain: two sessions sharing a file block would free it
  // twice when they finish.
  const claimed = new Map<bigint, string>();
  const sessionChain = readChain(
    kho,
    sessionHead,
    SESSION_BLOCKS,
    "session chain",
    (dv, bytes, off, i, block): SessionEntry => {
      const name = readFixedString(bytes, off + SESSION_SER.name, SESSION_NAME_SIZE);
      if (name === undefined) {
        throw new KernelPanicError(
          `session ${i} in block ${hex(block)} has a name without NUL or invalid`,
          block,
        );
      }
      return {
        name,
        files: readU64(dv, off + SESSION_SER.files),
        nfiles: readU64(dv, off + SESSION_SER.nfiles),
        index: i,
        block,
      };
    },
    claimed,
  );

  const sessions = sessionChain.entries.map((s): IncomingSessionRecord => {
    // Most sessions of a large handover are empty: no chain to walk, only the count to check.
    if (s.files === 0n) {
      checkFileCount(s, 0);
      return { name: s.name, files: NO_FILES, fileBlocks: NO_BLOCKS };
    }
    const fileLabel = fileChainLabel(s.name);
    const chain = readChain(
      kho,
      s.files,
      FILE_BLOCKS,
      fileLabel,
      (dv, bytes, off, i, block) => {
        const compatible = readFixedString(bytes, off + FILE_SER.compatible, COMPATIBLE_SIZE);
        if (compatible === undefined) {
          throw new KernelPanicError(
            `${fileLabel}: file ${i} in block ${hex(block)} has a bad compatible`,
            block,
          );
        }
        return {
          compatible,
          data: dv.getBigUint64(off + FILE_SER.data, true),
          token: dv.getBigUint64(off + FILE_SER.token, true),
        };
      },
      claimed,
    );
    checkFileCount(s, chain.entries.length);
    return { name: s.name, files: chain.entries, fileBlocks: chain.blocks };
  });

  const flbs: IncomingFlbRecord[] = [];
  if (flbHead !== 0n) {
    if (kho.orderOf(flbHead) !== 0 || !kho.covers(flbHead, PAGE_SIZE * FLB_AREA.pages)) {
      throw new KernelPanicError(`FLB page ${hex(flbHead)} is not preserved`, flbHead);
    }
    const bytes = kho.machine.view(flbHead, PAGE_SIZE);
    const dv = new DataView(bytes.buffer, bytes.byteOffset, PAGE_SIZE);
    const pgcnt = dv.getBigUint64(0, true);
    const count = dv.getBigUint64(8, true);
    if (pgcnt !== BigInt(FLB_AREA.pages) || count > BigInt(FLB_AREA.max)) {
      throw new KernelPanicError(`FLB page ${hex(flbHead)} has pgcnt ${pgcnt} and count ${count}`, flbHead);
    }
    for (let i = 0; i < Number(count); i++) {
      const off = FLB_AREA.headerSize + i * FLB_SER.size;
      const compatible = readFixedString(bytes, off + FLB_SER.name, COMPATIBLE_SIZE);
      if (compatible === undefined)
        throw new KernelPanicError(`FLB record ${i} at ${hex(flbHead)} has a bad name`, flbHead);
      const c = dv.getBigUint64(off + FLB_SER.count, true);
      if (c === 0n)
        throw new KernelPanicError(`FLB record ${i} (${compatible}) at ${hex(flbHead)} has count 0`, flbHead);
      flbs.push({ compatible, data: dv.getBigUint64(off + FLB_SER.data, true), count: c });
    }
    kho.restoreFree(flbHead);
  }
  kho.restoreFree(fdtPhys);
  return { liveupdateNumber, sessions, sessionBlocks: sessionChain.blocks, flbs };
}
