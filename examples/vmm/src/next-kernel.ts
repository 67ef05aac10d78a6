/**
 * The fleet's side on the next kernel, the same whether that kernel booted in this process or in
 * a child process from the machine image: start luod, let every VMM that prepared reconnect (in
 * parallel, as separate VMM processes would), run the guests, and collect each guest's own
 * verdict and timings.
 *
 * The only thing that does not come through preserved memory is the observer's record of guest
 * RAM's physical frames before the update ({@link FramesBefore}), used to count copied pages; the
 * VMMs' own zero-copy check uses the digest they preserved.
 *
 * @module
 */
import { LiveUpdateTracer, type Kernel } from "@luo/core";
import { memfdFile, memfdPages } from "@luo/memfd-handler";
import { startLuod } from "@luo/example-luod";
import type { DmaDriverStats, InFlightOutcome } from "./dma-driver.js";
import { vmmConfig, type FleetConfig } from "./host.js";
import type { FleetTraceEvent } from "./trace.js";
import { Vmm, now, type VmmTimes } from "./vmm.js";

/** Guest RAM frames before the update, by guest index: `[page index, physical address hex]`. */
export type FramesBefore = Readonly<Record<number, ReadonlyArray<readonly [number, string]>>>;

/** What the next-kernel side needs. */
export interface NextKernelInput {
  /** The fleet. */
  readonly config: FleetConfig;
  /** Guests whose VMMs prepared (those that come back). */
  readonly guests: readonly number[];
  /** Observer's frame record. */
  readonly framesBefore: FramesBefore;
}

/** One guest after the update. */
export interface GuestAfter {
  readonly index: number;
  readonly times: VmmTimes;
  readonly inFlight: InFlightOutcome | "device-held";
  /** The guest's own checks by name (see `Vmm.verify`). */
  readonly checks: Readonly<Record<string, boolean>>;
  readonly problems: readonly string[];
  /** Guest RAM frames handed over (and the vCPU memfd's page). */
  readonly pagesHandedOver: number;
  /** Frames whose physical address changed (pages copied). */
  readonly pagesCopied: number;
  readonly dma: DmaDriverStats;
  readonly ticks: number;
}

/** What the next-kernel side reports. */
export interface NextKernelResult {
  /** The next kernel began booting (plugin registration), ms. */
  readonly bootStart: number;
  /** The next kernel booted and luod listens, ms. */
  readonly bootEnd: number;
  readonly guests: readonly GuestAfter[];
  /** The next kernel's live-update events (core tracer). */
  readonly traceEvents: readonly FleetTraceEvent[];
  /** luod's own session after every guest said done. */
  readonly luodOwnSession: string;
  /** An error that stopped the side (a VMM that could not come back), if any. */
  readonly error?: string;
}

/** The outcomes a vfio mode allows for the job in flight at the update. */
export function expectedInFlight(c: FleetConfig): InFlightOutcome[] {
  return c.mode === "reset"
    ? ["dropped-resubmitted", "completed-before-update"]
    : ["completed-in-gap", "completed-before-update", "running"];
}

/** Runs the fleet's side on `kernel` (booted at `bootStart`). */
export async function runNextKernel(
  kernel: Kernel,
  input: NextKernelInput,
  bootStart: number,
): Promise<NextKernelResult> {
  const c = input.config;
  const tracer = new LiveUpdateTracer().attach(kernel.liveupdate.events, "kernel 2");
  const luod = await startLuod(kernel);
  const bootEnd = now();
  let vmms: Vmm[] = [];
  let error: string | undefined;
  try {
    vmms = await Promise.all(input.guests.map((i) => Vmm.reconnect(kernel, vmmConfig(c, i))));
  } catch (e) {
    error = (e as Error).message;
  }
  for (let s = 0; s < c.stepsAfter && !error; s++) {
    for (const v of vmms) v.step();
    kernel.machine.advanceTime(c.stepNs);
  }
  const expected = expectedInFlight(c);
  const guests = vmms.map((v, k): GuestAfter => {
    const index = input.guests[k]!;
    const { problems, checks } = v.verify(expected);
    const after = memfdPages(memfdFile(v.proc, v.ram));
    let copied = 0;
    for (const [page, phys] of input.framesBefore[index] ?? []) {
      if (after.get(page) !== BigInt(`0x${phys}`)) copied++;
    }
    return {
      index,
      times: { ...v.times },
      inFlight: v.inFlight,
      checks,
      problems,
      pagesHandedOver: (v.crossed?.frames ?? 0) + 1,
      pagesCopied: copied,
      dma: v.dmaStats(),
      ticks: v.vcpuStates[0]?.tick ?? 0,
    };
  });
  const status = await luod.status();
  for (const v of vmms) v.stop();
  luod.exit();
  tracer.stop();
  return {
    bootStart,
    bootEnd,
    guests,
    traceEvents: tracer.toJSON().traceEvents as FleetTraceEvent[],
    luodOwnSession: status.ownSession,
    ...(error ? { error } : {}),
  };
}
