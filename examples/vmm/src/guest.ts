/**
 * A deterministic guest workload whose every write can be checked afterwards.
 *
 * An emulated vCPU advances a hash chain: at tick `t` it reads a 64-byte word of guest RAM at an
 * address chosen by the current hash, hashes `hash ‖ t ‖ word` (SHA-256), and writes the new hash
 * and `t` into another word chosen by the new hash. Reads feed earlier writes back into the chain,
 * so a single lost or stale write anywhere in the workload region changes every later hash.
 *
 * The vCPU's registers (tick and hash) are 40 bytes ({@link VCPU_STATE_SIZE}) that the VMM puts
 * into a small memfd across a live update. {@link replayGuest} recomputes the whole run from the
 * seed in plain JavaScript memory; {@link verifyGuest} compares it with what guest RAM and the
 * vCPU hold, naming the first words that differ. Nothing here knows about kernels: RAM is reached
 * through {@link GuestRam}, which the VMM backs with its memfd.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { LiveUpdateError } from "@luo/core";

/** Bytes of a workload word. */
export const WORD = 64;
/** Bytes of the saved vCPU state: u64 tick, then the 32-byte hash. */
export const VCPU_STATE_SIZE = 40;

/** Guest RAM as the vCPU sees it (byte offsets from guest physical address 0). */
export interface GuestRam {
  /** Reads `length` bytes at `offset`. */
  read(offset: number, length: number): Uint8Array;
  /** Writes `bytes` at `offset`. */
  write(offset: number, bytes: Uint8Array): void;
}

/** Where the workload lives in guest RAM: `[start, start + size)`, both multiples of 64. */
export interface WorkloadRegion {
  /** First byte. */
  readonly start: number;
  /** Length in bytes. */
  readonly size: number;
}

/** The registers of one vCPU. */
export interface VcpuState {
  /** Ticks executed so far. */
  readonly tick: number;
  /** The current chain hash (32 bytes). */
  readonly hash: Uint8Array;
}

/** The vCPU's state at power-on: tick 0, hash = SHA-256 of the seed. */
export function initialVcpuState(seed: string): VcpuState {
  return { tick: 0, hash: new Uint8Array(createHash("sha256").update(seed).digest()) };
}

function wordOffset(hash: Uint8Array, at: number, region: WorkloadRegion): number {
  const words = region.size / WORD;
  const v = ((hash[at]! << 24) | (hash[at + 1]! << 16) | (hash[at + 2]! << 8) | hash[at + 3]!) >>> 0;
  return region.start + (v % words) * WORD;
}

function tickBytes(t: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(t), true);
  return b;
}

/** One tick: the word read, the word written and the next state. */
function step(
  state: VcpuState,
  word: Uint8Array,
  region: WorkloadRegion,
): { next: VcpuState; writeAt: number; written: Uint8Array } {
  const t = tickBytes(state.tick);
  const hash = new Uint8Array(createHash("sha256").update(state.hash).update(t).update(word).digest());
  const written = new Uint8Array(WORD);
  written.set(hash, 0);
  written.set(t, 32);
  return { next: { tick: state.tick + 1, hash }, writeAt: wordOffset(hash, 4, region), written };
}

/** Runs `ticks` ticks of the vCPU against `ram` and returns the new state. */
export function runVcpu(ram: GuestRam, region: WorkloadRegion, state: VcpuState, ticks: number): VcpuState {
  let s = state;
  for (let i = 0; i < ticks; i++) {
    const word = ram.read(wordOffset(s.hash, 0, region), WORD);
    const { next, writeAt, written } = step(s, word, region);
    ram.write(writeAt, written);
    s = next;
  }
  return s;
}

/** Encodes a vCPU state into {@link VCPU_STATE_SIZE} bytes. */
export function encodeVcpuState(state: VcpuState): Uint8Array {
  const out = new Uint8Array(VCPU_STATE_SIZE);
  out.set(tickBytes(state.tick), 0);
  out.set(state.hash, 8);
  return out;
}

/** Decodes a vCPU state written by {@link encodeVcpuState}. */
export function decodeVcpuState(bytes: Uint8Array): VcpuState {
  if (bytes.length < VCPU_STATE_SIZE)
    throw new LiveUpdateError("EINVAL", `vCPU state needs ${VCPU_STATE_SIZE} bytes, got ${bytes.length}`);
  const tick = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  return { tick, hash: bytes.slice(8, 40) };
}

/** The expected outcome of a run, computed without guest RAM. */
export interface GuestReplay {
  /** The vCPU state after the run. */
  readonly state: VcpuState;
  /** Every word the run wrote, by offset (the last value written). */
  readonly words: ReadonlyMap<number, Uint8Array>;
}

/** Recomputes `ticks` ticks from the seed in JavaScript memory (RAM starts as zeros). */
export function replayGuest(seed: string, region: WorkloadRegion, ticks: number): GuestReplay {
  const words = new Map<number, Uint8Array>();
  const zero = new Uint8Array(WORD);
  let s = initialVcpuState(seed);
  for (let i = 0; i < ticks; i++) {
    const { next, writeAt, written } = step(s, words.get(wordOffset(s.hash, 0, region)) ?? zero, region);
    words.set(writeAt, written);
    s = next;
  }
  return { state: s, words };
}

/** What {@link verifyGuest} found. */
export interface GuestVerdict {
  /** True when the vCPU state and every written word match the replay. */
  readonly ok: boolean;
  /** Ticks checked. */
  readonly ticks: number;
  /** Words compared. */
  readonly words: number;
  /** Up to eight descriptions of what differs. */
  readonly problems: readonly string[];
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** Checks a guest after a run: its vCPU state and RAM against a replay from the seed. */
export function verifyGuest(
  ram: GuestRam,
  region: WorkloadRegion,
  seed: string,
  state: VcpuState,
): GuestVerdict {
  const replay = replayGuest(seed, region, state.tick);
  const problems: string[] = [];
  if (!same(replay.state.hash, state.hash))
    problems.push(`vCPU hash after tick ${state.tick} differs from the replay`);
  for (const [offset, expected] of replay.words) {
    if (problems.length >= 8) break;
    if (!same(ram.read(offset, WORD), expected))
      problems.push(`guest RAM word at 0x${offset.toString(16)} differs from the replay`);
  }
  return { ok: problems.length === 0, ticks: state.tick, words: replay.words.size, problems };
}
