/**
 * File-Lifecycle-Bound (FLB) global state: definition, per-kernel state, and its lifecycle.
 *
 * The lifecycle, with its happy and unhappy paths, is documented on {@link defineFlb}.
 *
 * @module
 */
import { describeValue, LiveUpdateError, toLiveUpdateError } from "../errors.js";
import type { Kho, KhoIncoming } from "../kho/index.js";
import type { FlbRecord, IncomingFlbRecord } from "../abi/index.js";
import { LevelMutex, LockLevel } from "./locks.js";
import type { Awaitable } from "./handler.js";
import type { LiveUpdateEvents } from "./events.js";
import { checkShape, defineShape } from "./define-shape.js";

/**
 * Arguments of an FLB's `preserve`.
 *
 * @category Handlers and FLBs
 */
export interface FlbPreserveArgs {
  /** Outgoing KHO allocator. */
  readonly kho: Kho;
}

/**
 * What an FLB's `preserve` returns.
 *
 * @category Handlers and FLBs
 */
export interface FlbPreserveResult<T> {
  /** Opaque u64 handed over. */
  readonly data: bigint;
  /** The live object, returned by `getOutgoing`. */
  readonly obj: T;
}

/**
 * The four FLB callbacks and its compatible string.
 *
 * @category Handlers and FLBs
 */
export interface FlbSpec<T = unknown> {
  /** FLB compatible, 1..47 bytes. */
  readonly compatible: string;
  /** First dependent file is being preserved. */
  preserve(args: FlbPreserveArgs): Awaitable<FlbPreserveResult<T>>;
  /** Last dependent file was unpreserved. */
  unpreserve(args: { readonly kho: Kho; readonly data: bigint; readonly obj: T }): Awaitable<void>;
  /** New kernel: rebuild the object from `data`. */
  retrieve(args: { readonly incoming: KhoIncoming; readonly data: bigint }): Awaitable<T>;
  /** New kernel: the last dependent file finished. */
  finish(args: { readonly incoming: KhoIncoming; readonly data: bigint; readonly obj: T }): Awaitable<void>;
}

/**
 * A validated FLB definition (made by {@link defineFlb}).
 *
 * @category Handlers and FLBs
 */
export interface Flb<T = unknown> extends FlbSpec<T> {
  /** Validated compatible bytes. */
  readonly compatibleBytes: Uint8Array;
}

const FLB_REQUIRED = ["preserve", "unpreserve", "retrieve", "finish"] as const;

/**
 * Validates an FLB definition. `EINVAL` if a callback is missing or the compatible is not
 * 1..47 bytes.
 *
 * An FLB is global state (e.g. IOMMU or PCI core state) that must live exactly as long as some
 * preserved file needs it. Old kernel: the outgoing count is the number of preserved files (in all
 * sessions) whose handler is linked to the FLB; `preserve` runs on 0→1, `unpreserve` on 1→0. At
 * reboot every FLB with a count > 0 is serialized as {compatible, data, count}. New kernel: the
 * incoming count starts at the serialized count (the kernel starts it at zero; see
 * docs/differences.md); `getIncoming`
 * retrieves once and caches (`ENODATA` if nothing came over or after finish, `ENOENT` if this FLB
 * was not handed over); every finished dependent file drops one reference, and at zero the FLB is
 * retrieved if nobody did, then finished — exactly once.
 *
 * Locks: one outgoing and one incoming lock per FLB, the innermost level of the hierarchy.
 *
 * @example
 * ```ts
 * import { defineFlb } from "@luo/core";
 *
 * // Global state shared by every preserved file of one handler (e.g. an IOMMU domain table).
 * interface Domains {
 *   readonly page: bigint;
 * }
 *
 * const domains = defineFlb<Domains>({
 *   compatible: "example-domains-v1",
 *   // First dependent file: allocate and preserve one page, hand its address over.
 *   preserve({ kho }) {
 *     const { phys } = kho.allocPreserve(4096);
 *     return { data: phys, obj: { page: phys } };
 *   },
 *   // Last dependent file went away before the reboot.
 *   unpreserve({ kho, obj }) {
 *     kho.unpreserveFree(obj.page);
 *   },
 *   // Next kernel, first user: read the page (here: nothing to read), then give it back.
 *   retrieve({ incoming, data }) {
 *     incoming.restoreFree(data);
 *     return { page: data };
 *   },
 *   // Next kernel, last dependent file finished.
 *   finish() {},
 * });
 * // Link it to a handler in a plugin's register: `await ctx.registerFlb(handler, domains)`.
 * console.log(domains.compatible);
 * ```
 *
 * @category Entry points
 */
export function defineFlb<T>(spec: FlbSpec<T>): Flb<T> {
  return defineShape(spec, FLB_REQUIRED, "FLB");
}

/**
 * Validates the shape of an FLB and returns its compatible bytes (`EINVAL` otherwise).
 *
 * @category Handlers and FLBs
 */
export function checkFlbShape(flb: FlbSpec): Uint8Array {
  return checkShape(flb, FLB_REQUIRED, "FLB");
}

/**
 * Read access to FLB objects, given to handler callbacks.
 *
 * @category Handlers and FLBs
 */
export interface FlbAccess {
  /** The live outgoing object, or undefined when no dependent file is preserved. */
  getOutgoing<T>(flb: Flb<T>): Promise<T | undefined>;
  /** The incoming object, retrieved on first use. `ENODATA`, `ENOENT` or the retrieve error. */
  getIncoming<T>(flb: Flb<T>): Promise<T>;
}

/**
 * Per-kernel state of one registered FLB.
 *
 * @category Handlers and FLBs
 */
export class FlbState {
  /** Number of handlers linked to this FLB. */
  users = 0;
  /** Outgoing: dependent preserved files. */
  outCount = 0;
  outData = 0n;
  outObj: unknown = undefined;
  readonly outLock: LevelMutex;
  /** Incoming: references left (initialised from the handover). */
  inCount = 0n;
  inRecord: IncomingFlbRecord | undefined;
  inObj: unknown = undefined;
  inRetrieved = false;
  inFinished = false;
  readonly inLock: LevelMutex;

  constructor(readonly flb: Flb) {
    this.outLock = new LevelMutex(`FLB "${flb.compatible}" outgoing`, LockLevel.Flb);
    this.inLock = new LevelMutex(`FLB "${flb.compatible}" incoming`, LockLevel.Flb);
  }
}

/**
 * The FLB registry and lifecycle of one kernel.
 *
 * @category Handlers and FLBs
 */
export class FlbManager implements FlbAccess {
  private readonly states = new Map<Flb, FlbState>();
  private readonly byCompatible = new Map<string, FlbState>();
  private readonly incomingRecords: Map<string, IncomingFlbRecord> | undefined;

  /**
   * @param kho - outgoing KHO
   * @param incoming - incoming KHO handover, if any
   * @param records - FLB records handed over, if any
   * @param events - lifecycle events
   */
  constructor(
    private readonly kho: Kho,
    private readonly incoming: KhoIncoming | undefined,
    records: readonly IncomingFlbRecord[] | undefined,
    private readonly events: LiveUpdateEvents,
  ) {
    this.incomingRecords = records ? new Map(records.map((r) => [r.compatible, r])) : undefined;
  }

  /** Registered FLBs in registration order. */
  registered(): FlbState[] {
    return [...this.byCompatible.values()];
  }

  /** State of a registered FLB, if registered. */
  state(flb: Flb): FlbState | undefined {
    return this.states.get(flb);
  }

  /**
   * Adds a link from a handler (bookkeeping only; the caller holds the registration locks).
   * `EEXIST` for another FLB with the same compatible; `ENOSPC` beyond `max` FLBs.
   */
  link(flb: Flb, max: number): FlbState {
    let st = this.states.get(flb);
    if (!st) {
      if (this.byCompatible.has(flb.compatible)) {
        throw new LiveUpdateError("EEXIST", `another FLB with compatible "${flb.compatible}" is registered`);
      }
      if (this.byCompatible.size >= max) {
        throw new LiveUpdateError(
          "ENOSPC",
          `cannot register FLB "${flb.compatible}": ${max} FLBs already registered`,
        );
      }
      st = new FlbState(flb);
      const rec = this.incomingRecords?.get(flb.compatible);
      if (rec) {
        st.inRecord = rec;
        st.inCount = rec.count;
      }
      this.states.set(flb, st);
      this.byCompatible.set(flb.compatible, st);
    }
    st.users++;
    return st;
  }

  /** Removes one handler link; the FLB is unregistered when its last user goes. */
  unlink(flb: Flb): void {
    const st = this.states.get(flb);
    if (!st) return;
    if (--st.users === 0) {
      this.states.delete(flb);
      this.byCompatible.delete(flb.compatible);
    }
  }

  /**
   * Per-file preserve hook: for each FLB in order, count++ and `preserve` on 0→1. A failure rolls
   * back the FLBs already processed, in reverse, and rethrows.
   */
  async preserveFor(flbs: readonly FlbState[]): Promise<void> {
    const done: FlbState[] = [];
    try {
      for (const st of flbs) {
        await st.outLock.lock(async () => {
          if (st.outCount === 0) {
            let r: FlbPreserveResult<unknown>;
            try {
              r = await st.flb.preserve({ kho: this.kho });
            } catch (e) {
              throw toLiveUpdateError(e, `FLB "${st.flb.compatible}" preserve`);
            }
            st.outData = r.data;
            st.outObj = r.obj;
            this.events.emitEvent("flb:preserved", { compatible: st.flb.compatible, data: r.data });
          }
          st.outCount++;
        });
        done.push(st);
      }
    } catch (e) {
      await this.unpreserveFor(done);
      throw e;
    }
  }

  /** Per-file unpreserve hook: reverse order, count--, `unpreserve` on 1→0. Never throws. */
  async unpreserveFor(flbs: readonly FlbState[]): Promise<void> {
    for (let i = flbs.length - 1; i >= 0; i--) {
      const st = flbs[i]!;
      await st.outLock.lock(async () => {
        if (st.outCount === 0) return;
        if (--st.outCount === 0) {
          const { outData: data, outObj: obj } = st;
          st.outData = 0n;
          st.outObj = undefined;
          try {
            await st.flb.unpreserve({ kho: this.kho, data, obj });
          } catch (e) {
            this.events.warn(toLiveUpdateError(e, `FLB "${st.flb.compatible}" unpreserve`));
          }
          this.events.emitEvent("flb:unpreserved", { compatible: st.flb.compatible });
        }
      });
    }
  }

  /** Records to serialize at reboot: every registered FLB with an outgoing count > 0. */
  serialize(): FlbRecord[] {
    return this.registered()
      .filter((st) => st.outCount > 0)
      .map((st) => ({ compatible: st.flb.compatibleBytes, data: st.outData, count: BigInt(st.outCount) }));
  }

  /** {@inheritDoc FlbAccess.getOutgoing} */
  async getOutgoing<T>(flb: Flb<T>): Promise<T | undefined> {
    const st = this.require(flb);
    return st.outLock.lock(() => st.outObj as T | undefined);
  }

  private require(flb: Flb): FlbState {
    if (typeof flb !== "object" || flb === null) {
      throw new LiveUpdateError("EINVAL", `expected an FLB object, not ${describeValue(flb)}`);
    }
    const st = this.states.get(flb as Flb);
    if (!st) throw new LiveUpdateError("ENOENT", `FLB "${flb.compatible}" is not registered`);
    return st;
  }

  private async retrieveLocked(st: FlbState): Promise<unknown> {
    if (st.inFinished)
      throw new LiveUpdateError("ENODATA", `FLB "${st.flb.compatible}" was already finished`);
    if (st.inRetrieved) return st.inObj;
    if (!this.incoming || !this.incomingRecords) {
      throw new LiveUpdateError("ENODATA", `no FLB data was handed over (FLB "${st.flb.compatible}")`);
    }
    if (!st.inRecord) throw new LiveUpdateError("ENOENT", `FLB "${st.flb.compatible}" was not handed over`);
    try {
      st.inObj = await st.flb.retrieve({ incoming: this.incoming, data: st.inRecord.data });
    } catch (e) {
      throw toLiveUpdateError(e, `FLB "${st.flb.compatible}" retrieve`);
    }
    st.inRetrieved = true;
    this.events.emitEvent("flb:retrieved", { compatible: st.flb.compatible, data: st.inRecord.data });
    return st.inObj;
  }

  /** {@inheritDoc FlbAccess.getIncoming} */
  async getIncoming<T>(flb: Flb<T>): Promise<T> {
    const st = this.require(flb);
    return st.inLock.lock(() => this.retrieveLocked(st)) as Promise<T>;
  }

  /**
   * Per-file finish hook: reverse order, one reference dropped each; at zero the FLB is retrieved
   * if needed and finished exactly once. Failures are reported as warnings (finish cannot fail).
   */
  async finishFor(flbs: readonly FlbState[]): Promise<void> {
    for (let i = flbs.length - 1; i >= 0; i--) {
      const st = flbs[i]!;
      await st.inLock.lock(async () => {
        if (st.inFinished || st.inCount === 0n) return;
        st.inCount--;
        if (st.inCount > 0n) return;
        try {
          const obj = await this.retrieveLocked(st);
          await st.flb.finish({ incoming: this.incoming!, data: st.inRecord!.data, obj });
        } catch (e) {
          this.events.warn(toLiveUpdateError(e, `FLB "${st.flb.compatible}" finish`));
        }
        st.inFinished = true;
        st.inObj = undefined;
        this.events.emitEvent("flb:finished", { compatible: st.flb.compatible });
      });
    }
  }
}
