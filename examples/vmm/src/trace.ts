/**
 * One Chrome/Perfetto trace for a whole fleet update: both kernels, luod, every VMM and the DMA
 * device on one clock: wall-clock milliseconds (`performance.timeOrigin + performance.now()`, the
 * clock of the core's live-update events, the same in every process), written as microseconds.
 *
 * Phases are complete events (`ph: "X"`, category `phase`) on the row of the guest they belong to;
 * the guest blackout and the device DMA blackout are complete events of categories `blackout` and
 * `dma-blackout`. The core's {@link LiveUpdateTracer} events of each kernel are merged with their
 * process ids moved past the fleet's own rows, so Perfetto shows every row once.
 * {@link timelineFromTrace} reads the same file back for the HTML page, so the page can never
 * disagree with the trace.
 *
 * @module
 */

/** A Chrome trace event as this example writes it (a superset of the core tracer's). */
export interface FleetTraceEvent {
  /** Event name (a phase name for `phase` events). */
  readonly name: string;
  /** Category: `phase`, `blackout`, `dma-blackout`, `mark`, `__metadata`, or a core category. */
  readonly cat: string;
  /** `X` complete, `B`/`E` begin/end, `i` instant, `M` metadata. */
  readonly ph: "X" | "B" | "E" | "i" | "M";
  /** Start, microseconds. */
  readonly ts: number;
  /** Duration of an `X` event, microseconds. */
  readonly dur?: number;
  /** Row (Chrome "process"). */
  readonly pid: number;
  /** Thread within the row (always 1). */
  readonly tid: number;
  /** Instant scope. */
  readonly s?: "p" | "g" | "t";
  /** Payload. */
  readonly args?: Readonly<Record<string, string | number | boolean>>;
}

/** The trace file. */
export interface FleetTraceFile {
  /** Every event. */
  readonly traceEvents: readonly FleetTraceEvent[];
  /** Display unit. */
  readonly displayTimeUnit: "ms";
}

/** Records rows and spans; times are milliseconds on the caller's clock. */
export class FleetTrace {
  private readonly events: FleetTraceEvent[] = [];
  private nextPid = 1;

  /** Adds a row named `label` and returns its id. `kind` says what it is (`guest`, `kernel`, …). */
  row(label: string, kind: string): number {
    const pid = this.nextPid++;
    this.events.push({
      name: "process_name",
      cat: "__metadata",
      ph: "M",
      ts: 0,
      pid,
      tid: 1,
      args: { name: label, kind },
    });
    return pid;
  }

  /** A complete event from `start` to `end` (ms) on row `pid`. */
  span(
    pid: number,
    cat: string,
    name: string,
    start: number,
    end: number,
    args?: Record<string, string | number | boolean>,
  ): void {
    this.events.push({
      name,
      cat,
      ph: "X",
      ts: Math.round(start * 1000),
      dur: Math.max(0, Math.round((end - start) * 1000)),
      pid,
      tid: 1,
      ...(args ? { args } : {}),
    });
  }

  /** An instant event at `time` (ms) on row `pid`. */
  mark(pid: number, name: string, time: number, args?: Record<string, string | number | boolean>): void {
    this.events.push({
      name,
      cat: "mark",
      ph: "i",
      s: "p",
      ts: Math.round(time * 1000),
      pid,
      tid: 1,
      ...(args ? { args } : {}),
    });
  }

  /**
   * Merges events recorded by another tracer (e.g. the core's `LiveUpdateTracer`): each of its
   * process ids gets a fresh row id here, so rows never collide.
   */
  merge(events: readonly FleetTraceEvent[]): void {
    const remap = new Map<number, number>();
    for (const e of events) {
      let pid = remap.get(e.pid);
      if (pid === undefined) {
        pid = this.nextPid++;
        remap.set(e.pid, pid);
      }
      this.events.push({ ...e, pid });
    }
  }

  /** The trace, ready for `JSON.stringify`. */
  toJSON(): FleetTraceFile {
    return { traceEvents: [...this.events], displayTimeUnit: "ms" };
  }
}

/** A phase of one guest, in milliseconds. */
export interface TimelineSpan {
  /** Phase name (`pause`, `preserve`, `freeze`, `kexec`, `boot`, `retrieve`, `restore`, `resume`). */
  readonly name: string;
  /** Start, ms. */
  readonly start: number;
  /** End, ms. */
  readonly end: number;
}

/** One guest's row on the timeline. */
export interface TimelineGuest {
  /** Guest (VMM) name. */
  readonly name: string;
  /** Phases in time order. */
  readonly phases: readonly TimelineSpan[];
  /** vCPUs paused → resumed, if the guest went through the update. */
  readonly blackout?: TimelineSpan;
  /** Device DMA stopped → flowing again, if the guest has a device. */
  readonly dmaBlackout?: TimelineSpan;
}

/** What the HTML page draws. */
export interface TimelineModel {
  /** Page title. */
  readonly title: string;
  /** One row per guest, in trace order. */
  readonly guests: readonly TimelineGuest[];
  /** Fleet-wide spans drawn as a band behind every row (e.g. the kexec). */
  readonly bands: readonly TimelineSpan[];
}

/**
 * Builds the timeline from a trace written by {@link FleetTrace}: rows of kind `guest` become
 * guests; their `phase`, `blackout` and `dma-blackout` spans become phases and highlights; spans
 * of category `band` on any row become fleet-wide bands.
 */
export function timelineFromTrace(trace: FleetTraceFile, title: string): TimelineModel {
  const guests = new Map<
    number,
    { name: string; phases: TimelineSpan[]; blackout?: TimelineSpan; dmaBlackout?: TimelineSpan }
  >();
  const bands: TimelineSpan[] = [];
  for (const e of trace.traceEvents) {
    if (e.ph === "M" && e.name === "process_name" && e.args?.["kind"] === "guest") {
      guests.set(e.pid, { name: String(e.args["name"]), phases: [] });
    }
  }
  for (const e of trace.traceEvents) {
    if (e.ph !== "X") continue;
    const span = { name: e.name, start: e.ts / 1000, end: (e.ts + (e.dur ?? 0)) / 1000 };
    if (e.cat === "band") {
      bands.push(span);
      continue;
    }
    const g = guests.get(e.pid);
    if (!g) continue;
    if (e.cat === "phase") g.phases.push(span);
    else if (e.cat === "blackout") g.blackout = span;
    else if (e.cat === "dma-blackout") g.dmaBlackout = span;
  }
  return {
    title,
    guests: [...guests.values()].map((g) => ({ ...g, phases: g.phases.sort((a, b) => a.start - b.start) })),
    bands,
  };
}
