/**
 * The test handler's switchboard: {@link TestControl} (fault switches and the call log) and
 * {@link TestControls} (one control per kernel, found again from what a callback is given).
 *
 * Happy path: a callback calls `control.hit(op, key, session, value)`, which logs the call and
 * returns. Unhappy paths: an armed fault makes `hit` throw (a `LiveUpdateError` with the fault's
 * errno, or a plain `Error`), or return false for `canFinish` (a veto); asking
 * {@link TestControls} for a kernel that never registered the plugin is `ENOENT`.
 *
 * @module
 */
import type { DependencyContainer } from "tsyringe";
import { LiveUpdateError, type ErrnoCode } from "../errors.js";
import type { PluginContext } from "../plugin/index.js";

/** Callbacks that can be made to fail. */
export type TestOp =
  | "preserve"
  | "unpreserve"
  | "freeze"
  | "unfreeze"
  | "retrieve"
  | "canFinish"
  | "finish"
  | "flbPreserve"
  | "flbUnpreserve"
  | "flbRetrieve"
  | "flbFinish";

/** How a callback fails. */
export interface TestFault {
  /** Fail with this errno (default `EIO`); ignored for `canFinish`, which vetoes. */
  readonly code?: ErrnoCode;
  /** Throw a plain `Error` instead of a `LiveUpdateError`. */
  readonly plain?: boolean;
  /** Only for these tokens (file callbacks) or FLB indexes (FLB callbacks); default: all. */
  readonly only?: readonly bigint[];
}

/** One recorded callback. */
export interface TestCall {
  /** Which callback. */
  readonly op: TestOp;
  /** File token, or FLB index for FLB callbacks. */
  readonly key: bigint;
  /** Session name (file callbacks). */
  readonly session?: string;
  /** Whether the call failed by injection. */
  readonly failed: boolean;
  /**
   * FLB callbacks: the value the callback saw — `flbPreserve` the data it produces,
   * `flbUnpreserve` the data it was given, `flbRetrieve` the incoming data (recorded before it is
   * checked), `flbFinish` the magic of the object it finishes.
   */
  readonly value?: bigint;
}

/** Fault switches and a call log: one per kernel of a `testHandlerPlugin`, or shared. */
export class TestControl {
  /** Active faults by callback. */
  readonly faults = new Map<TestOp, TestFault>();
  /** Every callback, in call order. */
  readonly log: TestCall[] = [];

  /** Arms one fault: makes `op` fail (see {@link TestFault}), replacing an armed fault of `op`. */
  fail(op: TestOp, fault: TestFault = {}): this {
    this.faults.set(op, fault);
    return this;
  }

  /** Clears the fault of `op` only; the others stay armed. */
  clear(op: TestOp): this {
    this.faults.delete(op);
    return this;
  }

  /** Removes every fault. */
  heal(): this {
    this.faults.clear();
    return this;
  }

  /** The log filtered to one callback, as keys. */
  calls(op: TestOp): bigint[] {
    return this.log.filter((c) => c.op === op && !c.failed).map((c) => c.key);
  }

  /** The values (see {@link TestCall.value}) of the successful calls of `op`, in call order. */
  values(op: TestOp): bigint[] {
    return this.log.filter((c) => c.op === op && !c.failed && c.value !== undefined).map((c) => c.value!);
  }

  /**
   * Records a call (with the `value` it saw, if any) and throws if a fault applies. For
   * `canFinish` returns false instead.
   */
  hit(op: TestOp, key: bigint, session?: string, value?: bigint): boolean {
    const f = this.faults.get(op);
    const failing = f !== undefined && (f.only === undefined || f.only.includes(key));
    this.log.push(
      value === undefined
        ? { op, key, session, failed: failing }
        : { op, key, session, failed: failing, value },
    );
    if (!failing) return true;
    if (op === "canFinish") return false;
    // A plain Error on purpose: the core must wrap foreign errors as EIO.
    // eslint-disable-next-line no-restricted-syntax
    if (f.plain) throw new Error(`injected plain failure in ${op} (${key})`);
    throw new LiveUpdateError(f.code ?? "EIO", `injected failure in ${op} (${key})`);
  }
}

/** The kernel a control belongs to: a `Kernel` (or anything with its DI container). */
export interface TestKernelKey {
  /** The kernel's DI container. */
  readonly container: DependencyContainer;
}

/**
 * One {@link TestControl} per kernel: a fresh one for every kernel that registers the test
 * plugin, found again from the kernel's container, outgoing KHO or incoming handover (what the
 * handler and FLB callbacks are given).
 */
export class TestControls {
  private readonly byKey = new WeakMap<object, TestControl>();
  private newest: TestControl | undefined;

  /** Makes the control of the kernel `ctx` registers into (called by the plugin's `register`). */
  attach(ctx: PluginContext): TestControl {
    const control = new TestControl();
    for (const key of [ctx.container, ctx.kho, ctx.incoming]) if (key) this.byKey.set(key, control);
    this.newest = control;
    return control;
  }

  /** The control of the newest kernel that registered the plugin. `ENOENT` before any boot. */
  get current(): TestControl {
    if (!this.newest)
      throw new LiveUpdateError("ENOENT", "the test plugin was not registered by any kernel yet");
    return this.newest;
  }

  /**
   * The control of the kernel `key` belongs to: a `Kernel` (or anything with its `container`),
   * or the `kho` / `incoming` a callback was given. `ENOENT` if that kernel did not register the
   * plugin.
   */
  of(key: TestKernelKey | object): TestControl {
    const direct = this.byKey.get(key);
    const c = direct ?? ("container" in key ? this.byKey.get((key as TestKernelKey).container) : undefined);
    if (!c) throw new LiveUpdateError("ENOENT", "this kernel did not register the test plugin");
    return c;
  }
}

/** Where a handler or FLB finds its control: one shared {@link TestControl} or one per kernel. */
export type TestControlSource = TestControl | TestControls;

/** The control `source` gives for the kernel `key` belongs to. */
export const controlFor = (source: TestControlSource, key: object): TestControl =>
  source instanceof TestControl ? source : source.of(key);
