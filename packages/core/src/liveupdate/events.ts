/**
 * Typed lifecycle events of the orchestrator (eventemitter3).
 *
 * Every event carries `time` (milliseconds since the epoch, sub-millisecond precision) and the
 * kernel's live-update number. Listeners must be synchronous (an emitter cannot await them); a
 * throwing listener is isolated and reported as a `warning` so it cannot break the orchestrator.
 * The `warning` payload's `error` is always a `LiveUpdateError`: anything else (a listener's
 * plain `Error`, a callback's string) is wrapped as `EIO` with the original as `cause`.
 * {@link LiveUpdateEvents.emitEvent} returns at once when nobody listens (no timestamp, no copy).
 * The per-file call sites also test {@link LiveUpdateEvents.listening} first, so they do not even
 * build the payload; the session, FLB and reboot events (rarer) build theirs unconditionally.
 *
 * @module
 */
import { EventEmitter } from "eventemitter3";
import { toLiveUpdateError, type LiveUpdateError } from "../errors.js";

/**
 * Fields common to every event.
 *
 * @category Events and tracing
 */
export interface EventBase {
  /** Wall-clock time in milliseconds (performance.timeOrigin + performance.now()). */
  readonly time: number;
}

/**
 * Payloads by event name.
 *
 * @category Events and tracing
 */
export interface LiveUpdateEventPayloads {
  "session:created": { session: string };
  "session:retrieved": { session: string };
  "session:closed": { session: string; kind: "outgoing" | "incoming" };
  "session:finished": { session: string };
  "session:stuck": { session: string; error: LiveUpdateError };
  "file:preserved": { session: string; token: bigint; compatible: string };
  "file:unpreserved": { session: string; token: bigint; compatible: string };
  "file:frozen": { session: string; token: bigint; compatible: string };
  "file:freeze-failed": { session: string; token: bigint; compatible: string; error: LiveUpdateError };
  "file:unfrozen": { session: string; token: bigint; compatible: string };
  "file:retrieved": { session: string; token: bigint; compatible: string };
  "file:retrieve-failed": { session: string; token: bigint; compatible: string; error: LiveUpdateError };
  "file:finished": { session: string; token: bigint; compatible: string };
  "flb:preserved": { compatible: string; data: bigint };
  "flb:unpreserved": { compatible: string };
  "flb:retrieved": { compatible: string; data: bigint };
  "flb:finished": { compatible: string };
  "reboot:started": { sessions: number };
  "reboot:failed": { error: LiveUpdateError };
  "reboot:done": { sessions: number; files: number; flbs: number };
  "boot:handover": { liveupdateNumber: bigint; sessions: number };
  warning: { error: LiveUpdateError };
}

/**
 * Names of the events.
 *
 * @category Events and tracing
 */
export type LiveUpdateEventName = keyof LiveUpdateEventPayloads;

// A record keyed by every event name, so the compiler rejects a list that misses one.
const EVENT_KEYS: Record<LiveUpdateEventName, true> = {
  "session:created": true,
  "session:retrieved": true,
  "session:closed": true,
  "session:finished": true,
  "session:stuck": true,
  "file:preserved": true,
  "file:unpreserved": true,
  "file:frozen": true,
  "file:freeze-failed": true,
  "file:unfrozen": true,
  "file:retrieved": true,
  "file:retrieve-failed": true,
  "file:finished": true,
  "flb:preserved": true,
  "flb:unpreserved": true,
  "flb:retrieved": true,
  "flb:finished": true,
  "reboot:started": true,
  "reboot:failed": true,
  "reboot:done": true,
  "boot:handover": true,
  warning: true,
};

/**
 * Every event name, in declaration order.
 *
 * @category Events and tracing
 */
export const LIVE_UPDATE_EVENT_NAMES: readonly LiveUpdateEventName[] = Object.freeze(
  Object.keys(EVENT_KEYS) as LiveUpdateEventName[],
);

/**
 * Listener signatures, for `EventEmitter<Events>`.
 *
 * @category Events and tracing
 */
export type LiveUpdateEventMap = {
  [K in LiveUpdateEventName]: (event: LiveUpdateEventPayloads[K] & EventBase) => void;
};

/**
 * The emitter exposed as `kernel.liveupdate.events`.
 *
 * @category Events and tracing
 */
export class LiveUpdateEvents extends EventEmitter<LiveUpdateEventMap> {
  /** True when `name` has listeners: hot loops test this before building a payload. */
  listening(name: LiveUpdateEventName): boolean {
    return this.listenerCount(name) > 0;
  }

  /** Emits `name` with a timestamp, only if someone listens; listener failures become warnings. */
  emitEvent<K extends LiveUpdateEventName>(name: K, payload: LiveUpdateEventPayloads[K]): void {
    if (this.listenerCount(name) === 0) return;
    const event = { ...payload, time: performance.timeOrigin + performance.now() };
    for (const fn of this.listeners(name)) {
      try {
        (fn as (e: typeof event) => void)(event);
      } catch (e) {
        if (name !== "warning") this.warn(e, `"${name}" event listener`);
      }
    }
  }

  /**
   * Reports a failure that cannot be returned to a caller (teardown paths) as a `warning`. A
   * `LiveUpdateError` is passed on as is; anything else becomes `EIO` naming `context`, with
   * `cause`.
   *
   * @param error - what was thrown
   * @param context - who threw it, for the message of a wrapped error
   */
  warn(error: unknown, context = "a callback"): void {
    this.emitEvent("warning", { error: toLiveUpdateError(error, context) });
  }
}
