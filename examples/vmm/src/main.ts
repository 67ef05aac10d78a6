#!/usr/bin/env node
/**
 * `./dev demo`: the fleet live update from the command line (see `fleet.ts`). Prints the report
 * (or `--json`), writes the Chrome/Perfetto trace and the HTML timeline, and exits 1 when a check
 * failed, 2 on bad usage.
 *
 * @module
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { isLiveUpdateError } from "@luo/core";
import type { VmmFaults } from "./vmm.js";
import { runFleet } from "./fleet.js";
import { fleetConfig } from "./host.js";
import { formatFleetReport } from "./report.js";
import { renderTimelineHtml } from "./timeline-html.js";
import { timelineFromTrace } from "./trace.js";

const USAGE = `usage: ./dev demo [options]          (./dev demo quickstart: the small memfd example)

A fleet of VMMs with guest RAM (memfd), IOMMU (iommufd) and a vfio DMA device, live-updated
under luod through one kexec, with a report per guest and a trace + HTML timeline.

  --guests N          number of guests (default 4, at most 31)
  --sizes A,B,...     guest RAM in MiB, used in turn (default 8,16,32,64; at least 8)
  --mode M            vfio live-update mode: reset | continuous (default reset)
  --iommu B           iommufd behaviour of the next kernel: restore | phase1 (default restore)
  --image             boot the next kernel and the new VMMs in a child process from the image
  --steps N           guest steps before and after the update (default 12)
  --gap-ms N          machine time between the kernels, ms (default 20)
  --fault F           inject a fault: crash:I (VMM I dies while preparing) or
                      irqs-on:I (VMM I leaves its device's interrupts on: its freeze fails)
  --out DIR           where the trace and the timeline go (default .tmp/vmm-demo)
  --json              print the report as JSON (without the trace)
  -h, --help          this help
`;

function usage(message: string): never {
  process.stderr.write(`${message}\n\n${USAGE}`);
  process.exit(2);
}

function int(v: string | undefined, what: string): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) usage(`${what}: not a number: ${v}`);
  return Number(v);
}

let parsed;
try {
  // A leading "--" (pnpm demo -- --guests 2) is dropped.
  const argv = process.argv.slice(2);
  parsed = parseArgs({
    args: argv[0] === "--" ? argv.slice(1) : argv,
    allowPositionals: false,
    options: {
      guests: { type: "string" },
      sizes: { type: "string" },
      mode: { type: "string" },
      iommu: { type: "string" },
      image: { type: "boolean" },
      steps: { type: "string" },
      "gap-ms": { type: "string" },
      fault: { type: "string", multiple: true },
      out: { type: "string" },
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
} catch (e) {
  usage((e as Error).message);
}
const v = parsed.values;
if (v.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const faults: Record<number, VmmFaults> = {};
for (const f of v.fault ?? []) {
  const m = /^(crash|irqs-on):(\d+)$/.exec(f);
  if (!m) usage(`--fault: expected crash:I or irqs-on:I, not ${f}`);
  const i = Number(m[2]);
  faults[i] = { ...faults[i], ...(m[1] === "crash" ? { crashInPrepare: true } : { leaveIrqsOn: true }) };
}
const steps = int(v.steps, "--steps");
const gapMs = int(v["gap-ms"], "--gap-ms");
let options;
try {
  options = fleetConfig({
    guests: int(v.guests, "--guests"),
    sizesMiB: v.sizes?.split(",").map((s) => int(s.trim(), "--sizes")!),
    mode: v.mode as "reset" | "continuous" | undefined,
    iommu: v.iommu as "restore" | "phase1" | undefined,
    image: v.image,
    stepsBefore: steps,
    stepsAfter: steps,
    gapNs: gapMs === undefined ? undefined : gapMs * 1_000_000,
    faults,
  });
} catch (e) {
  if (isLiveUpdateError(e, "EINVAL")) usage(e.message);
  throw e;
}
const report = await runFleet(options);
const out = resolve(v.out ?? join(".tmp", "vmm-demo"));
await mkdir(out, { recursive: true });
const tracePath = join(out, "trace.json");
const htmlPath = join(out, "timeline.html");
await writeFile(tracePath, JSON.stringify(report.trace));
const title = `VMM fleet live update: ${report.config.guests} guests, vfio ${report.config.mode}`;
await writeFile(htmlPath, renderTimelineHtml(timelineFromTrace(report.trace, title)));
if (v.json) {
  const { trace: _trace, ...rest } = report;
  process.stdout.write(
    `${JSON.stringify({ ...rest, files: { trace: tracePath, timeline: htmlPath } }, null, 2)}\n`,
  );
} else {
  process.stdout.write(`${formatFleetReport(report)}\n`);
  process.stdout.write(`trace: ${tracePath} (open in https://ui.perfetto.dev)\ntimeline: ${htmlPath}\n`);
}
process.exit(report.ok ? 0 : 1);
