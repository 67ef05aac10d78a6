/**
 * The main job: a fleet of guests on one host, each run by its own VMM process under luod, taken
 * through one live update, with a report per guest and for the fleet and one trace of it all.
 *
 * Happy path: power on the host, boot kernel 1 with luod, launch the VMMs, run the guests for a
 * while (machine time advances, so DMA jobs progress), ask luod to update. luod's barrier makes
 * every VMM pause and preserve; luod kexecs — in this process (the next kernel boots after
 * `gapNs` of machine time), or with `image` into a machine image that a child Node process loads,
 * advances by `gapNs` and boots. The next kernel's side ({@link runNextKernel}) reconnects every
 * VMM, runs the guests and lets each check itself.
 *
 * Unhappy paths: a VMM that dies during the barrier is lost with its guest; luod updates the
 * others (the report lists it as lost). A freeze failure (a VMM that left its device's interrupts
 * on) makes luod abandon the update: every VMM resumes on kernel 1, and the report checks that
 * every guest kept running with nothing lost. Either way the run reports, never throws, for
 * problems of the guests; it throws only for bad options.
 *
 * @module
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { LiveUpdateTracer, isLiveUpdateError, type Kernel } from "@luo/core";
import { startLuod } from "@luo/example-luod";
import {
  fleetConfig,
  hostMachine,
  hostPlugins,
  type BootClock,
  type FleetConfig,
  type FleetOptions,
  vmmConfig,
} from "./host.js";
import { runNextKernel, type NextKernelInput, type NextKernelResult } from "./next-kernel.js";
import { buildFleetReport, type FleetReport } from "./report.js";
import type { FleetTraceEvent } from "./trace.js";
import { Vmm, now } from "./vmm.js";

const run = promisify(execFile);

/** Kernel 1's side of the update, as the report needs it. */
export interface OldKernelRecord {
  readonly start: number;
  /** Update asked. */
  readonly updateStart: number;
  /** reboot:started → reboot:done on kernel 1 (the freeze), if reached. */
  readonly freezeStart?: number;
  readonly freezeEnd?: number;
  /** luod's answer. */
  readonly update: {
    readonly ok: boolean;
    readonly stage?: string;
    readonly error?: string;
    readonly lost: readonly string[];
  };
  /** Per guest index: the old VMM's times and state. */
  readonly vmms: ReadonlyArray<{
    readonly index: number;
    readonly times: Vmm["times"];
    readonly crashed: boolean;
    readonly ticksAtPause: number;
    readonly completedAtPause: number;
  }>;
  /** Kernel 1's live-update events. */
  readonly traceEvents: readonly FleetTraceEvent[];
  /** An abandoned update: every guest checked on kernel 1 after resuming. */
  readonly resumed?: ReadonlyArray<{
    readonly index: number;
    readonly ok: boolean;
    readonly problems: readonly string[];
  }>;
}

/** The compiled child entry (`dist/`, also when this module runs from `src/` under vitest). */
const NEXT_MAIN = new URL("../dist/next-main.js", import.meta.url);

async function nextInChild(image: string, input: NextKernelInput, dir: string): Promise<NextKernelResult> {
  const inputPath = join(dir, "next-input.json");
  await writeFile(inputPath, JSON.stringify(input));
  const { stdout } = await run(process.execPath, [NEXT_MAIN.pathname, image, inputPath], {
    maxBuffer: 256 << 20,
  });
  return JSON.parse(stdout) as NextKernelResult;
}

/** Runs the fleet through one live update and returns the report (see the module comment). */
export async function runFleet(options: FleetOptions = {}): Promise<FleetReport> {
  const c: FleetConfig = fleetConfig(options);
  const start = now();
  const clock: BootClock = { last: 0 };
  const machine = hostMachine(c);
  const k1 = await machine.boot({ plugins: hostPlugins(c, clock) });
  const tracer = new LiveUpdateTracer().attach(k1.liveupdate.events, "kernel 1");
  const dir = c.image ? await mkdtemp(join(tmpdir(), "luo-vmm-")) : undefined;
  const image = dir ? join(dir, "machine.img") : undefined;
  try {
    let next: Kernel | undefined;
    const luod = await startLuod(k1, {
      gapNs: c.image ? undefined : c.gapNs,
      saveTo: image,
      onKexec: (k) => {
        next = k;
      },
    });
    const vmms: Vmm[] = [];
    for (let i = 0; i < c.guests; i++) vmms.push(await Vmm.launch(k1, vmmConfig(c, i)));
    for (let s = 0; s < c.stepsBefore; s++) {
      for (const v of vmms) v.step();
      machine.advanceTime(c.stepNs);
    }
    let freezeStart: number | undefined;
    let freezeEnd: number | undefined;
    k1.liveupdate.events.on("reboot:started", (e) => (freezeStart = e.time));
    k1.liveupdate.events.on("reboot:done", (e) => (freezeEnd = e.time));
    k1.liveupdate.events.on("reboot:failed", (e) => (freezeEnd = e.time));
    // The observer's record of guest RAM frames (pinned by the IOAS, so they cannot move before the update).
    const framesBefore: Record<number, Array<[number, string]>> = {};
    for (const v of vmms) framesBefore[v.config.device] = v.frames();
    const updateStart = now();
    const result = await luod.update();
    const old: OldKernelRecord = {
      start,
      updateStart,
      freezeStart,
      freezeEnd,
      update: result.ok
        ? { ok: true, lost: result.lost }
        : { ok: false, stage: result.stage, error: result.error, lost: [] },
      vmms: vmms.map((v, i) => ({
        index: i,
        times: { ...v.times },
        crashed: c.faults[i]?.crashInPrepare === true,
        ticksAtPause: v.ticksAtPause,
        completedAtPause: v.completedAtPause,
      })),
      traceEvents: [],
    };
    tracer.stop();
    if (!result.ok) {
      // Abandoned: every VMM resumes on kernel 1 (luod sent "resume"); run on and check.
      await new Promise((r) => setTimeout(r, 0));
      for (let s = 0; s < c.stepsAfter; s++) {
        for (const v of vmms) v.step();
        machine.advanceTime(c.stepNs);
      }
      const resumed = vmms.map((v, i) => resumedCheck(v, i));
      for (const v of vmms) v.stop();
      luod.exit();
      return buildFleetReport(
        c,
        { ...old, traceEvents: tracer.toJSON().traceEvents as FleetTraceEvent[], resumed },
        undefined,
      );
    }
    const input: NextKernelInput = {
      config: c,
      guests: vmms.filter((v) => !result.lost.includes(v.config.name)).map((v) => v.config.device),
      framesBefore,
    };
    const after = image
      ? await nextInChild(image, input, dir!)
      : await runNextKernel(next!, input, clock.last);
    return buildFleetReport(
      c,
      { ...old, traceEvents: tracer.toJSON().traceEvents as FleetTraceEvent[] },
      after,
    );
  } finally {
    if (dir) await rm(dir, { recursive: true, force: true });
  }
}

/** A guest after an abandoned update: it runs on kernel 1 and its hash chain and DMA are intact. */
function resumedCheck(v: Vmm, index: number): { index: number; ok: boolean; problems: string[] } {
  if (v.proc.hasExited) return { index, ok: false, problems: ["the VMM exited"] };
  const problems: string[] = [];
  try {
    const r = v.verify(["none", "running", "completed-before-update"]);
    if (!r.checks["hashChain"])
      problems.push(...r.problems.filter((p) => p.startsWith("vCPU") || p.includes("run")));
    if (!r.checks["dma"]) problems.push(...r.problems.filter((p) => p.startsWith("DMA")));
  } catch (e) {
    problems.push(isLiveUpdateError(e) ? e.message : String(e));
  }
  if (v.paused) problems.push("the vCPUs are still paused");
  return { index, ok: problems.length === 0, problems };
}
