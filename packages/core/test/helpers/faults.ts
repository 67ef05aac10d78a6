// Shared pieces of the fault-injection matrix and the race exploration: a test-handler plugin
// whose canFinish can also *throw* (TestControl only vetoes), the call log as comparable strings,
// error-chain walking, and the lock hierarchy as numbers for checking heldLocks() snapshots.
import { LiveUpdateError, definePlugin, defineFileHandler, type ErrnoCode } from "@luo/core";
import { LockLevel } from "@luo/core/internal";
import type { Kernel, FileHandler, Flb } from "@luo/core";
import {
  TestControl,
  createTestFlb,
  createTestHandler,
  type TestCall,
  type TestFile,
  type TestFlbObject,
  type TestPlugin,
} from "@luo/core/testing";

/** How an armed canFinish fault behaves: TestControl's veto, or a thrown errno / plain Error. */
export type CanFinishThrow = { readonly plain: true } | { readonly plain: false; readonly code: ErrnoCode };

/** The test handler + test FLBs, with a switch that turns a canFinish veto into a throw. */
export interface FaultPlugin extends TestPlugin {
  /** When set, an armed canFinish fault throws this instead of returning false. */
  canFinishThrow: CanFinishThrow | undefined;
}

/**
 * The plugin of `testHandlerPlugin({ control, flbs })` (one control shared by every kernel), except that its handler's canFinish can
 * throw: it asks the test handler (which logs the call and returns false when a canFinish fault
 * is armed) and converts that false into a throw while {@link FaultPlugin.canFinishThrow} is set.
 */
export function faultPlugin(control: TestControl, flbCount: number): FaultPlugin {
  const base = createTestHandler(control);
  const testFlbs: Flb<TestFlbObject>[] = Array.from({ length: flbCount }, (_, i) =>
    createTestFlb(control, i),
  );
  const out: { canFinishThrow: CanFinishThrow | undefined } = { canFinishThrow: undefined };
  const handler: FileHandler<TestFile, undefined> = defineFileHandler<TestFile, undefined>({
    ...base,
    async canFinish(args) {
      const ok = await base.canFinish!(args);
      const t = out.canFinishThrow;
      if (ok || t === undefined) return ok;
      if (t.plain) throw new Error(`injected plain failure in canFinish (${args.token})`);
      throw new LiveUpdateError(t.code, `injected failure in canFinish (${args.token})`);
    },
  });
  const plugin = definePlugin({
    name: "luo-test",
    async register(ctx) {
      await ctx.registerFileHandler(handler);
      for (const flb of testFlbs) await ctx.registerFlb(handler, flb);
    },
  });
  return Object.assign(out, { ...plugin, control, controlOf: () => control, handler, testFlbs });
}

/** A call as `op:session:key`, with `!` when the call failed by injection (FLB calls: no session). */
export function fmtCall(c: TestCall): string {
  return `${c.op}:${c.session ?? ""}:${c.key}${c.failed ? "!" : ""}`;
}

/** `e`, its `cause`, the cause's cause, … */
export function errorChain(e: unknown): unknown[] {
  const out: unknown[] = [];
  for (let x = e; x !== undefined && out.length < 32; x = (x as { cause?: unknown }).cause) {
    out.push(x);
    if (typeof x !== "object" || x === null) break;
  }
  return out;
}

/** True when `e` or anything in its cause chain is a LiveUpdateError with `code`. */
export function chainHasCode(e: unknown, code: ErrnoCode): boolean {
  return errorChain(e).some((x) => x instanceof LiveUpdateError && x.code === code);
}

/**
 * The hierarchy level of a lock from its name as heldLocks() reports it: serialize 1,
 * incoming list 2.1, outgoing list 2.2, session 3, file 4.x, FLB 5.
 */
export function lockLevelOf(name: string): number {
  if (name === "serialize") return LockLevel.Serialize;
  if (name === "incoming session list") return LockLevel.IncomingList;
  if (name === "outgoing session list") return LockLevel.OutgoingList;
  if (name.startsWith("session ")) return LockLevel.Session;
  if (name.startsWith("file ")) return LockLevel.File;
  if (name.startsWith("FLB ")) return LockLevel.Flb;
  throw new Error(`unknown lock name ${JSON.stringify(name)}`);
}

/** Throws unless `held` (innermost first, as heldLocks() returns it) is strictly ordered by level. */
export function assertHierarchy(held: readonly string[], where: string): void {
  const levels = held.map(lockLevelOf);
  for (let i = 1; i < levels.length; i++) {
    // Innermost first: every outer lock must be at a strictly lower level. Two file mutexes
    // (dependency API) share the integer level 4 here, which the core orders by file index.
    const inner = levels[i - 1]!;
    const outer = levels[i]!;
    if (!(outer < inner || (outer === LockLevel.File && inner === LockLevel.File))) {
      throw new Error(`lock hierarchy violated in ${where}: ${held.join(" <- ")}`);
    }
  }
}

/** Collects every `warning` event of `kernel` into `sink`. */
export function collectWarnings(kernel: Kernel, sink: LiveUpdateError[]): void {
  kernel.liveupdate.events.on("warning", (e) => sink.push(e.error));
}
