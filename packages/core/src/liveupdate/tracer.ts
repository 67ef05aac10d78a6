/**
 * Chrome trace-event output for live-update events (open the JSON in Perfetto or
 * chrome://tracing).
 *
 * A {@link LiveUpdateTracer} listens to one or more kernels' event emitters (attach the next
 * kernel after a kexec to follow a live update end to end). The reboot becomes a duration slice
 * (`reboot:started` → `reboot:done`/`reboot:failed`); every other event is an instant event with
 * its payload as arguments (bigints as decimal strings, errors as their message). Each kernel is
 * its own "process" row, named after the kernel. Timestamps are microseconds of the events' own
 * `time` field, so they line up across kernels.
 *
 * @module
 */
import {
  LIVE_UPDATE_EVENT_NAMES,
  type EventBase,
  type LiveUpdateEventPayloads,
  type LiveUpdateEvents,
} from "./events.js";

/**
 * One Chrome trace event.
 *
 * @category Events and tracing
 */
export interface TraceEvent {
  /** Event name. */
  readonly name: string;
  /** Category (the part before the colon, e.g. `file`). */
  readonly cat: string;
  /** Phase: `B`/`E` begin/end of a slice, `i` instant, `M` metadata. */
  readonly ph: "B" | "E" | "i" | "M";
  /** Microseconds. */
  readonly ts: number;
  /** Process id: one per traced kernel. */
  readonly pid: number;
  /** Thread id (always 1). */
  readonly tid: number;
  /** Instant-event scope (`p`: process). */
  readonly s?: "p";
  /** Payload. */
  readonly args?: Readonly<Record<string, string | number | boolean>>;
}

/**
 * The JSON object Perfetto and chrome://tracing open.
 *
 * @category Events and tracing
 */
export interface TraceFile {
  /** Events in recording order. */
  readonly traceEvents: readonly TraceEvent[];
  /** Time unit for display. */
  readonly displayTimeUnit: "ms";
}

function toArgs(payload: object): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const [k, v] of Object.entries(payload)) {
    if (k === "time") continue;
    if (typeof v === "bigint") out[k] = v.toString();
    else if (typeof v === "number" || typeof v === "boolean" || typeof v === "string") out[k] = v;
    else if (v instanceof Error) out[k] = v.message;
    else out[k] = String(v);
  }
  return out;
}

/**
 * Records live-update events of one or more kernels as Chrome trace events.
 *
 * @category Events and tracing
 */
export class LiveUpdateTracer {
  private readonly events: TraceEvent[] = [];
  private readonly detach: Array<() => void> = [];
  private nextPid = 1;

  /**
   * Starts recording `emitter` as a new process row named `label` (e.g. the kernel's name).
   * Returns this tracer for chaining.
   */
  attach(emitter: LiveUpdateEvents, label: string): this {
    const pid = this.nextPid++;
    this.events.push({
      name: "process_name",
      cat: "__metadata",
      ph: "M",
      ts: 0,
      pid,
      tid: 1,
      args: { name: label },
    });
    for (const name of LIVE_UPDATE_EVENT_NAMES) {
      // Fixed per event name: worked out once here, not on every event.
      const cat = name.split(":")[0]!;
      const ph =
        name === "reboot:started" ? "B" : name === "reboot:done" || name === "reboot:failed" ? "E" : "i";
      const listener = (e: LiveUpdateEventPayloads[typeof name] & EventBase): void => {
        const ts = Math.round(e.time * 1000);
        const args = toArgs(e);
        if (ph === "B") this.events.push({ name: "reboot", cat, ph, ts, pid, tid: 1, args });
        else if (ph === "E") {
          this.events.push({ name: "reboot", cat, ph, ts, pid, tid: 1, args: { ...args, outcome: name } });
        } else this.events.push({ name, cat, ph, s: "p", ts, pid, tid: 1, args });
      };
      emitter.on(name, listener);
      this.detach.push(() => emitter.off(name, listener));
    }
    return this;
  }

  /** Stops listening to every attached emitter (the recorded events stay). */
  stop(): void {
    for (const d of this.detach.splice(0)) d();
  }

  /** The recorded trace, ready for `JSON.stringify`. */
  toJSON(): TraceFile {
    return { traceEvents: [...this.events], displayTimeUnit: "ms" };
  }
}
