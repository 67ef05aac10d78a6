/**
 * The guest's DMA driver: it submits memcpy jobs to the DMA engine and checks every completion,
 * with all of its state in guest RAM so that a VMM on the next kernel can tell what happened to
 * the job in flight at the live update.
 *
 * Guest-physical addresses are IOVAs (guest RAM is mapped at IOVA 0). Layout:
 * - driver page at {@link DRIVER_PAGE}: the counters below, little-endian u32s;
 * - job source buffer at {@link DMA_SRC} and destination at {@link DMA_DST}, {@link DMA_BUF} bytes each.
 *
 * Job `n` fills the source with a pattern derived from the guest seed and `n`, zeroes the
 * destination, and asks the engine for {@link JOB_DESCRIPTORS} copies source → destination with an
 * interrupt at the end. It is complete when the engine is idle without error, reports every
 * descriptor done, and the destination holds the pattern; then the next job is submitted.
 *
 * After a live update ({@link GuestDmaDriver.recover}) the job recorded in flight is:
 * - `completed-in-gap`: the engine finished it while no kernel ran (vfio `continuous` mode), no
 *   interrupt reached the guest (they were off), the driver finds it by polling;
 * - `dropped-resubmitted`: the device was reset at freeze (vfio `reset` mode): not every
 *   descriptor is done, so the driver submits the same job again;
 * - `running`: still in progress (a gap shorter than the job); it completes as usual;
 * - `completed-before-update`: it had completed and interrupted before the pause (the VMM kept
 *   the interrupt pending for the guest).
 *
 * Every completion is counted once, by interrupt or by that one poll: `completed = irqs + polled`
 * is one of the checks.
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { DmaEngineDriver } from "@luo/vfio-handler";
import type { GuestRam } from "./guest.js";

/** Guest-physical address of the driver page. */
export const DRIVER_PAGE = 0;
/** Source buffer of a job. */
export const DMA_SRC = 1 << 20;
/** Destination buffer of a job. */
export const DMA_DST = 2 << 20;
/** Bytes per descriptor (one buffer). */
export const DMA_BUF = 64 * 1024;
/** Copies per job: 64 × 64 KiB = 4 MiB of bus traffic, 4 ms of machine time at 1 byte/ns. */
export const JOB_DESCRIPTORS = 64;
/** Smallest guest RAM the layout fits in. */
export const DMA_LAYOUT_END = DMA_DST + DMA_BUF;

const MAGIC = 0x444d_4144; // "DAMD" little-endian: "DMAD"
/** Offsets of the u32 fields of the driver page. */
const F = {
  magic: 0,
  job: 4, // id of the current (or last) job
  inFlight: 8, // 1 while the job is submitted and not yet found complete
  completed: 12,
  irqs: 16, // completions signalled through MSI-X
  polled: 20, // completions found by polling after an update (no interrupt)
  resubmitted: 24,
  failures: 28,
} as const;
const PAGE_BYTES = 32;

/** What happened to the job in flight at an update. */
export type InFlightOutcome =
  "none" | "completed-before-update" | "completed-in-gap" | "dropped-resubmitted" | "running";

/** The driver's counters (as stored in guest RAM). */
export interface DmaDriverStats {
  /** Jobs submitted so far (the id of the next one). */
  readonly job: number;
  /** True while a job is in flight. */
  readonly inFlight: boolean;
  /** Jobs found complete and verified. */
  readonly completed: number;
  /** Completions signalled by interrupt. */
  readonly irqs: number;
  /** Completions found by polling after an update. */
  readonly polled: number;
  /** Jobs submitted again after a drop. */
  readonly resubmitted: number;
  /** Completions that failed verification (engine error or wrong destination bytes). */
  readonly failures: number;
}

/** The pattern job `job` of guest `seed` copies. */
export function jobPattern(seed: string, job: number): Uint8Array {
  const out = new Uint8Array(DMA_BUF);
  const key = createHash("sha256").update(`${seed}/dma/${job}`).digest();
  let x = key.readUInt32LE(0) || 1;
  const dv = new DataView(out.buffer);
  for (let i = 0; i < DMA_BUF; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    dv.setUint32(i, x >>> 0, true);
  }
  return out;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

/** The guest DMA driver (see the module comment). */
export class GuestDmaDriver {
  /**
   * @param ram - guest RAM
   * @param seed - the guest's seed (job patterns)
   * @param engine - the engine, reached through the VMM's vfio device
   */
  constructor(
    private readonly ram: GuestRam,
    private readonly seed: string,
    private engine: DmaEngineDriver,
  ) {}

  /** Writes a fresh driver page (power-on). */
  init(): void {
    const page = new Uint8Array(PAGE_BYTES);
    new DataView(page.buffer).setUint32(F.magic, MAGIC, true);
    this.ram.write(DRIVER_PAGE, page);
  }

  private get(field: keyof typeof F): number {
    const b = this.ram.read(DRIVER_PAGE + F[field], 4);
    return new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true);
  }

  private set(field: keyof typeof F, value: number): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, value >>> 0, true);
    this.ram.write(DRIVER_PAGE + F[field], b);
  }

  private bump(field: keyof typeof F, by = 1): void {
    this.set(field, this.get(field) + by);
  }

  /** The counters. */
  stats(): DmaDriverStats {
    return {
      job: this.get("job"),
      inFlight: this.get("inFlight") === 1,
      completed: this.get("completed"),
      irqs: this.get("irqs"),
      polled: this.get("polled"),
      resubmitted: this.get("resubmitted"),
      failures: this.get("failures"),
    };
  }

  /** True when the driver page carries the driver's magic (guest RAM survived). */
  valid(): boolean {
    return this.get("magic") === MAGIC;
  }

  /** Uses `engine` from now on (a new binding after an update). */
  rebind(engine: DmaEngineDriver): void {
    this.engine = engine;
  }

  private submit(job: number): void {
    this.ram.write(DMA_SRC, jobPattern(this.seed, job));
    this.ram.write(DMA_DST, new Uint8Array(DMA_BUF));
    this.set("job", job);
    this.set("inFlight", 1);
    this.engine.memcpyStart(BigInt(DMA_SRC), BigInt(DMA_DST), DMA_BUF, JOB_DESCRIPTORS, true);
  }

  /** True when the job in flight is done and its destination is right. */
  private finished(): boolean {
    return (
      !this.engine.failed() &&
      this.engine.completed() === JOB_DESCRIPTORS &&
      sameBytes(this.ram.read(DMA_DST, DMA_BUF), jobPattern(this.seed, this.get("job")))
    );
  }

  /**
   * One driver step: `irqs` interrupts arrived since the last step. A finished job is checked and
   * counted and the next one submitted. Returns true if a job completed.
   */
  poll(irqs: number): boolean {
    if (irqs > 0) this.bump("irqs", irqs);
    let done = false;
    if (this.get("inFlight") === 1) {
      if (this.engine.busy()) return false;
      if (this.finished()) {
        this.bump("completed");
        done = true;
      } else {
        this.bump("failures");
      }
      this.set("inFlight", 0);
    }
    this.submit(this.get("job") + 1);
    return done;
  }

  /** Starts the first job (power-on). */
  start(): void {
    this.submit(0);
  }

  /**
   * After a live update, with interrupts off until now: what happened to the job in flight.
   * `pendingIrqs` interrupts arrived between the driver's last look and the pause (the VMM kept
   * them for the guest); one of them means the job had completed before the update.
   */
  recover(pendingIrqs: number): InFlightOutcome {
    if (this.get("inFlight") !== 1) return "none";
    if (this.engine.busy()) return "running";
    const dstRight = sameBytes(this.ram.read(DMA_DST, DMA_BUF), jobPattern(this.seed, this.get("job")));
    if (pendingIrqs > 0 && dstRight) {
      // The completion interrupt came before the pause; a reset since may have cleared the registers.
      this.complete("irqs");
      return "completed-before-update";
    }
    if (this.finished()) {
      this.complete("polled");
      return "completed-in-gap";
    }
    this.bump("resubmitted");
    this.submit(this.get("job"));
    return "dropped-resubmitted";
  }

  private complete(by: "irqs" | "polled"): void {
    this.bump("completed");
    this.bump(by);
    this.set("inFlight", 0);
    this.submit(this.get("job") + 1);
  }
}
