/**
 * The fleet report: per guest the phases of the update with their durations, the guest blackout
 * (vCPUs paused → running again) and the device DMA blackout (interrupts off → the device driven
 * again), pages handed over and copied, what happened to the DMA job in flight, and the guest's
 * own checks; for the fleet the kernel-wide phases and totals. The same data becomes the
 * Chrome/Perfetto trace ({@link FleetTrace}) and is printed as text by {@link formatFleetReport}.
 *
 * @module
 */
import type { FleetConfig } from "./host.js";
import type { OldKernelRecord } from "./fleet.js";
import type { NextKernelResult } from "./next-kernel.js";
import { FleetTrace, type FleetTraceFile } from "./trace.js";

/** One timed phase, ms on the shared wall clock. */
export interface PhaseTiming {
  readonly name: string;
  readonly start: number;
  readonly end: number;
  /** `end - start`. */
  readonly ms: number;
}

/** The phases of a guest's update, in order. */
export const PHASES = [
  "pause",
  "preserve",
  "freeze",
  "kexec",
  "boot",
  "retrieve",
  "restore",
  "resume",
] as const;

/** One guest in the report. */
export interface GuestReport {
  /** Guest (session) name. */
  readonly name: string;
  /** Its VMM's luod client name. */
  readonly vmm: string;
  readonly ramMiB: number;
  /** `updated` (on kernel 2), `resumed` (on kernel 1 after an abandoned update), `lost` (VMM died). */
  readonly outcome: "updated" | "resumed" | "lost";
  readonly phases: readonly PhaseTiming[];
  /** vCPUs paused → running again, ms. */
  readonly blackoutMs?: number;
  /** Device interrupts off → the device driven again, ms. */
  readonly dmaBlackoutMs?: number;
  readonly pagesHandedOver: number;
  readonly pagesCopied: number;
  /** What happened to the DMA job in flight at the update. */
  readonly inFlight: string;
  /** DMA jobs completed and verified by the guest, and how many were resubmitted. */
  readonly dmaJobs: number;
  readonly dmaResubmitted: number;
  /** Named checks and whether each passed. */
  readonly checks: Readonly<Record<string, boolean>>;
  readonly problems: readonly string[];
}

/** The whole report. */
export interface FleetReport {
  /** Every check of every guest passed and the update did what was asked. */
  readonly ok: boolean;
  readonly config: Omit<FleetConfig, "faults"> & { readonly faults: Readonly<Record<string, unknown>> };
  /** luod's answer to the update. */
  readonly update: OldKernelRecord["update"];
  /** Kernel-wide phases: freeze, kexec, boot. */
  readonly fleetPhases: readonly PhaseTiming[];
  readonly guests: readonly GuestReport[];
  readonly totals: {
    readonly updated: number;
    readonly resumed: number;
    readonly lost: number;
    readonly maxBlackoutMs: number;
    readonly maxDmaBlackoutMs: number;
    readonly pagesHandedOver: number;
    readonly pagesCopied: number;
    readonly checksPassed: number;
    readonly checksTotal: number;
  };
  /** luod's own session on kernel 2 at the end (`finished`; `waiting` with iommufd phase 1). */
  readonly luodOwnSession?: string;
  /** The Chrome/Perfetto trace of the run. */
  readonly trace: FleetTraceFile;
}

function phase(name: string, start: number | undefined, end: number | undefined): PhaseTiming | undefined {
  if (start === undefined || end === undefined || !(end >= start)) return undefined;
  return { name, start, end, ms: end - start };
}

function defined<T>(xs: ReadonlyArray<T | undefined>): T[] {
  return xs.filter((x): x is T => x !== undefined);
}

/** Builds the report and its trace from both kernels' records. */
export function buildFleetReport(
  config: FleetConfig,
  old: OldKernelRecord,
  after: NextKernelResult | undefined,
): FleetReport {
  const fleetPhases = defined([
    phase("freeze", old.freezeStart, old.freezeEnd),
    after ? phase("kexec", old.freezeEnd, after.bootStart) : undefined,
    after ? phase("boot", after.bootStart, after.bootEnd) : undefined,
  ]);
  const guests = old.vmms.map((o): GuestReport => {
    const name = `vm-${o.index}`;
    const base = {
      name,
      vmm: `vmm-${o.index}`,
      ramMiB: config.sizesMiB[o.index % config.sizesMiB.length]!,
    };
    const a = after?.guests.find((g) => g.index === o.index);
    if (a) {
      const t = { ...o.times, ...a.times };
      const phases = defined([
        phase("pause", o.times.pauseStart, o.times.paused),
        phase("preserve", o.times.paused, o.times.preserved),
        ...fleetPhases,
        phase("retrieve", t.reconnect, t.retrieved),
        phase("restore", t.retrieved, t.restored),
        phase("resume", t.restored, t.resumed),
      ]);
      const checks = { ...a.checks, noPageCopied: a.pagesCopied === 0 };
      return {
        ...base,
        outcome: "updated",
        phases,
        blackoutMs: phase("blackout", t.pausedAt, t.resumed)?.ms,
        // iommufd phase 1: the device is never driven again on this kernel, so no DMA blackout ends.
        dmaBlackoutMs: a.inFlight === "device-held" ? undefined : phase("dma", t.irqsOffAt, t.resumed)?.ms,
        pagesHandedOver: a.pagesHandedOver,
        pagesCopied: a.pagesCopied,
        inFlight: a.inFlight,
        dmaJobs: a.dma.completed,
        dmaResubmitted: a.dma.resubmitted,
        checks,
        problems: a.problems,
      };
    }
    const resumed = old.resumed?.find((r) => r.index === o.index);
    if (resumed && !o.crashed) {
      return {
        ...base,
        outcome: "resumed",
        phases: defined([
          phase("pause", o.times.pauseStart, o.times.paused),
          phase("preserve", o.times.paused, o.times.preserved),
        ]),
        pagesHandedOver: 0,
        pagesCopied: 0,
        inFlight: "none",
        dmaJobs: 0,
        dmaResubmitted: 0,
        checks: { resumedOnKernel1: resumed.ok },
        problems: resumed.problems,
      };
    }
    return {
      ...base,
      outcome: "lost",
      phases: [],
      pagesHandedOver: 0,
      pagesCopied: 0,
      inFlight: "none",
      dmaJobs: 0,
      dmaResubmitted: 0,
      checks: { survived: false },
      problems: [
        o.crashed ? "its VMM died during the update" : (after?.error ?? "its VMM did not come back"),
      ],
    };
  });
  let checksPassed = 0;
  let checksTotal = 0;
  for (const g of guests) {
    for (const v of Object.values(g.checks)) {
      checksTotal++;
      if (v) checksPassed++;
    }
  }
  const num = (xs: Array<number | undefined>): number => Math.max(0, ...defined(xs));
  const totals = {
    updated: guests.filter((g) => g.outcome === "updated").length,
    resumed: guests.filter((g) => g.outcome === "resumed").length,
    lost: guests.filter((g) => g.outcome === "lost").length,
    maxBlackoutMs: num(guests.map((g) => g.blackoutMs)),
    maxDmaBlackoutMs: num(guests.map((g) => g.dmaBlackoutMs)),
    pagesHandedOver: guests.reduce((n, g) => n + g.pagesHandedOver, 0),
    pagesCopied: guests.reduce((n, g) => n + g.pagesCopied, 0),
    checksPassed,
    checksTotal,
  };
  const ok =
    old.update.ok &&
    checksPassed === checksTotal &&
    totals.updated === guests.length &&
    // With iommufd phase 1 no guest session can finish, so luod's own session waits for them.
    (after?.luodOwnSession ?? "finished") === (config.iommu === "phase1" ? "waiting" : "finished");
  const faults: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(config.faults)) faults[`vm-${k}`] = v;
  return {
    ok,
    config: { ...config, faults },
    update: old.update,
    fleetPhases,
    guests,
    totals,
    ...(after ? { luodOwnSession: after.luodOwnSession } : {}),
    trace: buildTrace(old, after, guests, fleetPhases),
  };
}

function buildTrace(
  old: OldKernelRecord,
  after: NextKernelResult | undefined,
  guests: readonly GuestReport[],
  fleetPhases: readonly PhaseTiming[],
): FleetTraceFile {
  const tr = new FleetTrace();
  const fleet = tr.row("fleet (both kernels)", "fleet");
  for (const p of fleetPhases) tr.span(fleet, "band", p.name, p.start, p.end);
  const luod = tr.row("luod", "agent");
  if (old.freezeStart !== undefined) tr.span(luod, "agent", "barrier", old.updateStart, old.freezeStart);
  else tr.mark(luod, `update abandoned: ${old.update.error ?? ""}`, old.updateStart);
  const devices = tr.row("DMA engines", "device");
  for (const g of guests) {
    const row = tr.row(g.name, "guest");
    for (const p of g.phases) tr.span(row, "phase", p.name, p.start, p.end);
    const first = g.phases[0];
    const last = g.phases[g.phases.length - 1];
    if (g.blackoutMs !== undefined && last)
      tr.span(row, "blackout", "guest blackout", last.end - g.blackoutMs, last.end);
    if (g.dmaBlackoutMs !== undefined && last) {
      tr.span(row, "dma-blackout", "DMA blackout", last.end - g.dmaBlackoutMs, last.end);
      tr.mark(devices, `${g.name}: ${g.inFlight}`, last.end, { guest: g.name, inFlight: g.inFlight });
    }
    if (g.outcome !== "updated" && first) tr.mark(row, g.outcome, first.start);
  }
  tr.merge(old.traceEvents);
  if (after) tr.merge(after.traceEvents);
  return tr.toJSON();
}

function ms(v: number | undefined): string {
  return v === undefined ? "-" : v >= 100 ? v.toFixed(0) : v.toFixed(2);
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

/** The report as text. */
export function formatFleetReport(r: FleetReport): string {
  const c = r.config;
  const lines: string[] = [];
  lines.push(
    `VMM fleet live update: ${c.guests} guest${c.guests === 1 ? "" : "s"}, vfio ${c.mode} mode, iommufd ${c.iommu}, ` +
      `${c.image ? "next kernel booted from the machine image in a child process" : "in-process kexec"}`,
  );
  lines.push(
    r.update.ok
      ? `update: done (${r.fleetPhases.map((p) => `${p.name} ${ms(p.ms)} ms`).join(", ")})` +
          (r.update.lost.length ? `; lost during the barrier: ${r.update.lost.join(", ")}` : "")
      : `update: abandoned at ${r.update.stage}: ${r.update.error}`,
  );
  lines.push("");
  const head = [
    "guest",
    "RAM",
    ...PHASES,
    "blackout",
    "DMA blackout",
    "pages",
    "copied",
    "DMA jobs",
    "in flight at update",
    "checks",
  ];
  const rows = [head];
  for (const g of r.guests) {
    const by = new Map(g.phases.map((p) => [p.name, p.ms]));
    const passed = Object.values(g.checks).filter(Boolean).length;
    rows.push([
      g.name,
      `${g.ramMiB} MiB`,
      ...PHASES.map((p) => ms(by.get(p))),
      ms(g.blackoutMs),
      ms(g.dmaBlackoutMs),
      String(g.pagesHandedOver),
      String(g.pagesCopied),
      g.outcome === "updated" ? `${g.dmaJobs} (${g.dmaResubmitted} resubmitted)` : "-",
      g.outcome === "updated" ? g.inFlight : g.outcome,
      `${passed}/${Object.keys(g.checks).length}`,
    ]);
  }
  lines.push("phase durations in ms");
  lines.push(table(rows));
  lines.push("");
  const t = r.totals;
  lines.push(
    `fleet: ${t.updated}/${r.guests.length} guests updated` +
      (t.resumed ? `, ${t.resumed} resumed on kernel 1` : "") +
      (t.lost ? `, ${t.lost} lost` : "") +
      `; max guest blackout ${ms(t.maxBlackoutMs)} ms, max DMA blackout ${ms(t.maxDmaBlackoutMs)} ms; ` +
      `pages handed over ${t.pagesHandedOver}, pages copied ${t.pagesCopied}; checks passed ${t.checksPassed}/${t.checksTotal}`,
  );
  for (const g of r.guests) for (const p of g.problems) lines.push(`  ${g.name}: ${p}`);
  lines.push(r.ok ? "result: every check passed" : "result: FAILED");
  return lines.join("\n");
}
