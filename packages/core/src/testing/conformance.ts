/**
 * The handler conformance kit: the lifecycle checks every file handler must pass, runnable
 * against any third-party handler on emulated machines.
 *
 * A handler author describes the handler under test as a {@link ConformanceSubject} — the plugins
 * that register it, how to make a preservable file with known content and how to check one — and
 * calls {@link describeHandlerConformance} in a vitest test file. The kit registers one
 * `describe` block; each of its tests boots fresh machines and drives the whole live update
 * through the public API: preserve, close → unpreserve (file intact, page accounting back to the
 * baseline), double preservation (`EBUSY`), the freeze failure of a neighbouring file in the same
 * or a later session (the handler's files are unfrozen, the kernel stays usable, a later kexec
 * succeeds), kexec, retrieve twice (one file object, two fds), sticky retrieve failures, finish
 * with and without retrieve, a neighbour's finish veto, preserving a retrieved file again, FLB
 * reference counts, and a leak check after every live update (no unrestored incoming page, no
 * file owned by LUO, no warning, `machine.stats()` equal to a fresh boot's). The same checks are
 * available as plain async functions through {@link handlerConformanceCases}.
 *
 * How the kit observes a foreign handler: it wraps the subject's plugins so the handlers they
 * register through `ctx.registerFileHandler` are recorded (every callback, its session and token,
 * whether it threw) and then delegate to the original callbacks (which therefore see the
 * recording wrapper as `args.handler`); FLBs are observed through the
 * orchestrator's `flb:*` events. The neighbour is the core test handler's logic under the
 * compatible {@link CONFORMANCE_NEIGHBOUR_COMPATIBLE}, registered first and claiming only its own
 * file type, with a {@link TestControl} to inject its faults.
 *
 * This module imports `describe`, `it` and `expect` from `vitest`, an optional peer dependency of
 * `@luo/core`: install it to use `@luo/core/testing`.
 *
 * @module
 */
import { describe, expect, it } from "vitest";
import { LiveUpdateError, type ErrnoCode } from "../errors.js";
import type { KernelFile, Process } from "../kernel/index.js";
import type { KhoIncoming } from "../kho/index.js";
import { Machine, type MachineStats, type MemorySize } from "../machine/index.js";
import {
  defineFileHandler,
  type Awaitable,
  type FileHandler,
  type FileHandlerSpec,
  type Flb,
  type HandlerContext,
  type LiveUpdateDevice,
  type RetrieveStatus,
  type SessionHandle,
} from "../liveupdate/index.js";
import { definePlugin, type Plugin } from "../plugin/index.js";
import { Kernel } from "../system/index.js";
import { TestControl, TestFile, createTestHandler } from "./test-handler.js";

/** A file made by {@link ConformanceSubject.create}: its fd and what `verify` should expect. */
export interface ConformanceFile<S = unknown> {
  /** The new file's fd in the process given to `create`. */
  readonly fd: number;
  /** Anything `verify` needs to check a copy of this file (e.g. its content). */
  readonly expected?: S;
}

/** What the kit gives back to {@link ConformanceSubject.verify} about the original file. */
export interface ConformanceOriginal<S = unknown> {
  /** The `index` the file was created with. */
  readonly index: number;
  /** What `create` returned as `expected`, if anything. */
  readonly expected: S | undefined;
}

/** Where the handler's serialized state of one file lies after a live update (for `corrupt`). */
export interface ConformanceCorruptArgs {
  /** The new kernel (booted from the handover; /dev/liveupdate already opened once). */
  readonly kernel: Kernel;
  /** The machine. */
  readonly machine: Machine;
  /** The incoming KHO handover: `covers`, `restore`, … */
  readonly incoming: KhoIncoming;
  /** The file's serialized data: the u64 `preserve`/`freeze` returned (usually a physical address). */
  readonly data: bigint;
  /** Session of the file. */
  readonly session: string;
  /** Token of the file. */
  readonly token: bigint;
}

/**
 * The handler under test, as a third party describes it. The factory given to
 * {@link describeHandlerConformance} returns a new one for every test (and for every fresh
 * boot the leak check compares against), so `plugins` and `flbs` must be fresh objects that
 * belong together.
 */
export interface ConformanceSubject<S = unknown> {
  /** Compatible string of the handler under test, e.g. `"memfd-v2"`. */
  readonly compatible: string;
  /** Title of the `describe` block (default: the compatible). */
  readonly name?: string;
  /**
   * Plugins that register the handler (through `ctx.registerFileHandler`, so the kit can observe
   * it) and everything it needs. Booted on every kernel of a test.
   */
  readonly plugins: readonly Plugin[];
  /**
   * FLBs linked to the handler (the objects `plugins` link), checked for reference counts;
   * empty or absent: the FLB check does not apply.
   */
  readonly flbs?: readonly Flb[];
  /** RAM of each test machine (default `"64 MiB"`). */
  readonly memory?: MemorySize;
  /**
   * Makes a preservable file in `proc` and returns its fd (or `{ fd, expected }`). `index`
   * counts the files of one test from 0: give each a different content so a mix-up is caught.
   */
  create(proc: Process, index: number): Awaitable<number | ConformanceFile<S>>;
  /**
   * Checks (with `expect`) that `fd` in `proc` is intact: the same content as the file `create`
   * made, either the user's original after an unpreserve or a failed kexec, or the copy
   * retrieved after a live update.
   */
  verify(proc: Process, fd: number, original: ConformanceOriginal<S>): Awaitable<void>;
  /**
   * Optional: damages the handed-over state of one file so that the handler's `retrieve`
   * fails — e.g. overwrite a magic number or checksum it validates — without destroying what
   * `finish` needs to release the file's memory. Without it, the sticky-failure test of the
   * handler itself does not apply (a neighbour's sticky failure is always tested).
   */
  corrupt?(args: ConformanceCorruptArgs): Awaitable<void>;
}

/** One conformance check as a plain function (see {@link handlerConformanceCases}). */
export interface ConformanceCase {
  /** What the check verifies (the vitest test title). */
  readonly name: string;
  /** Why the check does not apply to this subject, if it does not (it is then not registered). */
  readonly skipReason: string | undefined;
  /** Runs the check on fresh machines; rejects with the failed expectation. */
  run(): Promise<void>;
}

/** Compatible of the neighbour handler the kit preserves next to the subject's files. */
export const CONFORMANCE_NEIGHBOUR_COMPATIBLE = "luo-conformance-neighbour-v1";

const NEIGHBOUR_PLUGIN = "luo-conformance-neighbour";
const DEFAULT_MEMORY = "64 MiB";
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

/** The neighbour's file type: a test file only the neighbour handler claims. */
class NeighbourFile extends TestFile {
  override get description(): string {
    return `conformance-neighbour:${this.label}`;
  }
}

/** The neighbour plugin: the test handler's callbacks under another compatible and file type. */
function neighbourPlugin(control: TestControl): Plugin {
  const base = createTestHandler(control);
  const handler = defineFileHandler<TestFile, undefined>({
    ...base,
    compatible: CONFORMANCE_NEIGHBOUR_COMPATIBLE,
    canPreserve: (file) => file instanceof NeighbourFile,
  });
  return definePlugin({ name: NEIGHBOUR_PLUGIN, register: (ctx) => ctx.registerFileHandler(handler) });
}

/** One observed handler callback or FLB event. */
interface Call {
  /** Handler or FLB compatible. */
  readonly compatible: string;
  /** Callback name, or the FLB event name (`flb:preserved`, …). */
  readonly op: string;
  /** `<session>/<token>` for file callbacks, `""` for FLB events. */
  readonly at: string;
  /** False when the callback threw (or `canFinish` vetoed). */
  ok: boolean;
  /** `retrieveStatus` seen by `canFinish` and `finish`. */
  readonly retrieveStatus?: RetrieveStatus;
}

const OBSERVED_OPS = [
  "preserve",
  "unpreserve",
  "freeze",
  "unfreeze",
  "retrieve",
  "canFinish",
  "finish",
] as const;
type ObservedOp = (typeof OBSERVED_OPS)[number];
type FlbEvent = "flb:preserved" | "flb:unpreserved" | "flb:retrieved" | "flb:finished";

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return (
    (typeof v === "object" || typeof v === "function") &&
    v !== null &&
    typeof (v as { then?: unknown }).then === "function"
  );
}

/** A handler that records every callback in `log` and delegates to `h`. */
function observeHandler(h: FileHandler, log: Call[]): FileHandler {
  const spec: Record<string, unknown> = {
    compatible: h.compatible,
    canPreserve: (file: KernelFile) => h.canPreserve(file),
  };
  if (typeof h.getId === "function") spec.getId = (file: KernelFile) => h.getId!(file);
  for (const op of OBSERVED_OPS) {
    const fn = h[op] as ((args: HandlerContext) => unknown) | undefined;
    if (typeof fn !== "function") continue;
    spec[op] = (args: HandlerContext & { readonly retrieveStatus?: RetrieveStatus }) => {
      const call: Call = {
        compatible: h.compatible,
        op,
        at: `${args.session.sessionName}/${args.token}`,
        ok: true,
        ...(op === "canFinish" || op === "finish" ? { retrieveStatus: args.retrieveStatus } : {}),
      };
      log.push(call);
      const settle = (r: unknown): unknown => {
        if (op === "canFinish" && r === false) call.ok = false;
        return r;
      };
      try {
        const r = fn.call(h, args);
        if (!isThenable(r)) return settle(r);
        return Promise.resolve(r).then(settle, (e: unknown) => {
          call.ok = false;
          throw e;
        });
      } catch (e) {
        call.ok = false;
        throw e;
      }
    };
  }
  return defineFileHandler(spec as unknown as FileHandlerSpec);
}

/** A file the kit made through the subject. */
interface Made<S> {
  readonly fd: number;
  readonly original: ConformanceOriginal<S>;
}

/** One test's machine, observed plugins, logs and helpers. */
class Run<S> {
  readonly log: Call[] = [];
  readonly warnings: LiveUpdateError[] = [];
  readonly neighbour = new TestControl();
  readonly machine: Machine;
  readonly plugins: Plugin[];
  readonly flbs: readonly Flb[];
  /** Registered (observed) handlers by compatible: the originals. */
  readonly handlers = new Map<string, FileHandler>();
  kernel!: Kernel;
  private readonly wrapped = new Map<FileHandler, FileHandler>();
  private nextIndex = 0;

  private constructor(
    readonly subject: ConformanceSubject<S>,
    private readonly factory: () => ConformanceSubject<S>,
  ) {
    this.machine = new Machine({ memory: subject.memory ?? DEFAULT_MEMORY });
    this.flbs = subject.flbs ?? [];
    this.plugins = [neighbourPlugin(this.neighbour), ...subject.plugins].map((p) => this.observePlugin(p));
  }

  /** Boots the first kernel of a test and checks that the subject registered as described. */
  static async start<S>(factory: () => ConformanceSubject<S>): Promise<Run<S>> {
    const run = new Run(factory(), factory);
    run.kernel = await Kernel.boot(run.machine, { plugins: run.plugins });
    run.watch(run.kernel);
    const { compatible } = run.subject;
    const entry = run.kernel.liveupdate.registry.find(compatible);
    expect(entry, `subject.plugins register no handler with compatible "${compatible}"`).toBeDefined();
    expect(
      run.handlers.has(compatible),
      `handler "${compatible}" must be registered through ctx.registerFileHandler so the kit can observe it`,
    ).toBe(true);
    for (const flb of run.flbs) {
      expect(
        entry!.flbs.some((st) => st.flb === flb),
        `subject.flbs: FLB "${flb.compatible}" is not linked to "${compatible}" by subject.plugins`,
      ).toBe(true);
    }
    return run;
  }

  private wrap(h: FileHandler): FileHandler {
    let w = this.wrapped.get(h);
    if (!w) {
      w = observeHandler(h, this.log);
      this.wrapped.set(h, w);
    }
    return w;
  }

  private observePlugin(p: Plugin): Plugin {
    return definePlugin({
      name: p.name,
      dependencies: p.dependencies,
      register: (ctx) =>
        p.register({
          ...ctx,
          registerFileHandler: async (h) => {
            await ctx.registerFileHandler(this.wrap(h));
            this.handlers.set(h.compatible, h);
          },
          registerFlb: (h, flb) => ctx.registerFlb(this.wrap(h), flb),
        }),
    });
  }

  /** Records FLB events and warnings of `kernel`. */
  private watch(kernel: Kernel): void {
    const events = kernel.liveupdate.events;
    const record =
      (op: FlbEvent) =>
      (e: { readonly compatible: string }): void => {
        this.log.push({ compatible: e.compatible, op, at: "", ok: true });
      };
    events.on("flb:preserved", record("flb:preserved"));
    events.on("flb:unpreserved", record("flb:unpreserved"));
    events.on("flb:retrieved", record("flb:retrieved"));
    events.on("flb:finished", record("flb:finished"));
    events.on("warning", (e) => {
      if (e.error.code !== "ESHUTDOWN") this.warnings.push(e.error);
    });
  }

  /** Live update to the next kernel (same plugins). */
  async kexec(): Promise<Kernel> {
    const next = await this.kernel.kexec();
    expect(next, "kexec booted the next kernel").toBeDefined();
    this.kernel = next!;
    this.watch(this.kernel);
    return this.kernel;
  }

  /** A new process on the current kernel with /dev/liveupdate open. */
  async open(): Promise<{ proc: Process; dev: LiveUpdateDevice }> {
    const proc = this.kernel.spawn("conformance");
    return { proc, dev: await proc.openLiveUpdate() };
  }

  /** Makes the next file of the test through `subject.create`. */
  async create(proc: Process): Promise<Made<S>> {
    const index = this.nextIndex++;
    const r = await this.subject.create(proc, index);
    const { fd, expected } = typeof r === "number" ? { fd: r, expected: undefined } : r;
    expect(
      () => proc.file(fd),
      `subject.create(${index}) returned fd ${fd}, which is not open`,
    ).not.toThrow();
    return { fd, original: { index, expected } };
  }

  /** `subject.verify` on `fd`. */
  async verify(proc: Process, fd: number, made: Made<S>): Promise<void> {
    await this.subject.verify(proc, fd, made.original);
  }

  /** A neighbour file whose content is its label. */
  neighbourFile(proc: Process, label: string): number {
    return proc.installFile(new NeighbourFile(label, enc(label)));
  }

  /** Checks a (retrieved) neighbour file's content. */
  verifyNeighbour(proc: Process, fd: number, label: string): void {
    expect(new TextDecoder().decode(proc.pread(fd, 256, 0)), "neighbour file content").toBe(label);
  }

  /** Which handler owns the outgoing file `token` of session `name` (undefined if none). */
  claimedBy(name: string, token: bigint): string | undefined {
    return this.kernel.liveupdate
      .handingOver()
      .sessions.find((s) => s.name === name)
      ?.files.find((f) => f.token === token)?.compatible;
  }

  /** PRESERVE_FD of a subject file, checking that the subject's handler took it. */
  async preserve(s: SessionHandle, fd: number, token: bigint): Promise<void> {
    await s.preserveFd(fd, token);
    expect(
      this.claimedBy(s.name, token),
      `the subject's file was claimed by another handler (canPreserve order or plugins?)`,
    ).toBe(this.subject.compatible);
  }

  /** PRESERVE_FD of a neighbour file. */
  async preserveNeighbour(s: SessionHandle, fd: number, token: bigint): Promise<void> {
    await s.preserveFd(fd, token);
    expect(
      this.claimedBy(s.name, token),
      `the neighbour file was claimed by "${this.claimedBy(s.name, token)}", whose canPreserve accepts foreign files`,
    ).toBe(CONFORMANCE_NEIGHBOUR_COMPATIBLE);
  }

  /** True when the subject's handler defines `op`. */
  has(op: ObservedOp): boolean {
    return typeof this.handlers.get(this.subject.compatible)?.[op] === "function";
  }

  /** Every logged call of `op` by `compatible` (default: the subject's handler), in order. */
  entries(op: ObservedOp, compatible = this.subject.compatible): Call[] {
    return this.log.filter((c) => c.compatible === compatible && c.op === op);
  }

  /** `<session>/<token>` of the subject's calls of `op` (successful ones unless `all`). */
  calls(op: ObservedOp, all = false, compatible = this.subject.compatible): string[] {
    return this.entries(op, compatible)
      .filter((c) => all || c.ok)
      .map((c) => c.at);
  }

  /** Index in the log of the first call matching `pred` (-1 if none). */
  indexOf(pred: (c: Call) => boolean): number {
    return this.log.findIndex(pred);
  }

  /** Index in the log of the last call matching `pred` (-1 if none). */
  lastIndexOf(pred: (c: Call) => boolean): number {
    for (let i = this.log.length - 1; i >= 0; i--) if (pred(this.log[i]!)) return i;
    return -1;
  }

  /** LUO's session and ownership counts of the current kernel. */
  luoStats() {
    return this.kernel.liveupdate.stats();
  }

  /** Page accounting of a cold boot of the same machine size with fresh plugins. */
  async freshBootStats(): Promise<MachineStats> {
    const subject = this.factory();
    const machine = new Machine({ memory: subject.memory ?? DEFAULT_MEMORY });
    const kernel = await Kernel.boot(machine, {
      plugins: [neighbourPlugin(new TestControl()), ...subject.plugins],
    });
    const stats = machine.stats();
    await kernel.shutdown();
    return stats;
  }

  /** No handler callback ended in a warning (unpreserve, unfreeze, finish, FLB callbacks). */
  expectNoWarnings(): void {
    expect(
      this.warnings.map((e) => e.message),
      "callbacks that cannot fail reported errors",
    ).toEqual([]);
  }

  /**
   * The leak check after a live update, once every session is closed: exits `procs` (closing
   * the retrieved fds), then nothing handed over is left unrestored, LUO owns nothing, no
   * warning, and the page accounting equals a fresh boot's.
   */
  async expectClean(procs: readonly Process[]): Promise<void> {
    const incoming = this.kernel.incoming;
    expect(incoming, "the kernel booted from a handover").toBeDefined();
    expect(
      incoming!.unrestoredPages,
      "handed-over pages never restored: finish must release the memory of every file, retrieved or not",
    ).toBe(0);
    for (const p of procs) p.exit();
    expect(this.luoStats(), "LUO holds nothing after every session was finished and closed").toEqual({
      outgoingSessions: 0,
      incomingSessions: 0,
      ownedFiles: 0,
    });
    expect(
      this.machine.stats(),
      "page accounting after finish and closing every fd equals a fresh boot's",
    ).toEqual(await this.freshBootStats());
    this.expectNoWarnings();
  }
}

/** Expects `p` to reject with a {@link LiveUpdateError} of `code` (any code when absent). */
async function rejection(p: Promise<unknown>, code?: ErrnoCode): Promise<LiveUpdateError> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e, "expected a rejection with a LiveUpdateError").toBeInstanceOf(LiveUpdateError);
  if (code !== undefined) expect((e as LiveUpdateError).code).toBe(code);
  return e as LiveUpdateError;
}

/** Case: preserve, then close the session → unpreserve, file intact, accounting back. */
async function preserveAndUnpreserve<S>(run: Run<S>): Promise<void> {
  const k = run.kernel;
  const { proc: p, dev: dev } = await run.open();
  const a = await run.create(p);
  const afterA = run.machine.stats();
  const b = await run.create(p);
  const fileA = p.file(a.fd);
  const fileB = p.file(b.fd);
  for (const flb of run.flbs) expect(await k.liveupdate.flbs.getOutgoing(flb)).toBeUndefined();

  const s = await dev.createSession("conf-a");
  await run.preserve(s, a.fd, 1n);
  await run.preserve(s, b.fd, 2n);
  expect(run.calls("preserve")).toEqual(["conf-a/1", "conf-a/2"]);
  expect(run.luoStats().ownedFiles).toBe(2);
  for (const flb of run.flbs) expect(await k.liveupdate.flbs.getOutgoing(flb)).toBeDefined();
  p.close(b.fd);
  expect(fileB.isReleased, "LUO keeps its own reference to a preserved file").toBe(false);

  await s.close();
  expect(run.calls("unpreserve"), "closing the session unpreserves every file, LIFO").toEqual([
    "conf-a/2",
    "conf-a/1",
  ]);
  expect(run.luoStats().ownedFiles).toBe(0);
  expect(fileB.isReleased, "after unpreserve LUO's reference is dropped").toBe(true);
  expect(fileA.refCount, "the user's file is back to the user's single reference").toBe(1);
  await run.verify(p, a.fd, a);
  expect(run.machine.stats(), "page accounting after unpreserve").toEqual(afterA);
  for (const flb of run.flbs) expect(await k.liveupdate.flbs.getOutgoing(flb)).toBeUndefined();

  const s2 = await dev.createSession("conf-b");
  await run.preserve(s2, a.fd, 7n);
  await s2.close();
  await run.verify(p, a.fd, a);
  expect(run.machine.stats(), "page accounting after a second preserve/unpreserve").toEqual(afterA);
  run.expectNoWarnings();
}

/** Case: two fds of one file, or one fd twice → EBUSY before the handler is called. */
async function doublePreservation<S>(run: Run<S>): Promise<void> {
  const { proc: p, dev: dev } = await run.open();
  const a = await run.create(p);
  const dupFd = p.dup(a.fd);
  const sa = await dev.createSession("conf-a");
  const sb = await dev.createSession("conf-b");
  await run.preserve(sa, a.fd, 1n);
  const after = run.machine.stats();
  await rejection(sa.preserveFd(dupFd, 2n), "EBUSY");
  await rejection(sa.preserveFd(a.fd, 3n), "EBUSY");
  await rejection(sb.preserveFd(dupFd, 1n), "EBUSY");
  expect(run.calls("preserve", true), "the handler is not asked to preserve a file LUO owns").toEqual([
    "conf-a/1",
  ]);
  expect(run.luoStats().ownedFiles).toBe(1);
  expect(run.machine.stats(), "failed preservations leave no trace").toEqual(after);
  await sa.close();
  await run.preserve(sb, dupFd, 1n);
  await sb.close();
  await run.verify(p, a.fd, a);
  run.expectNoWarnings();
}

/** Case: a neighbour's freeze fails (same or later session) → unfreeze, usable kernel, retry. */
async function neighbourFreezeFailure<S>(run: Run<S>, sameSession: boolean): Promise<void> {
  const k1 = run.kernel;
  const { proc: p, dev: dev } = await run.open();
  const a = await run.create(p);
  const n = run.neighbourFile(p, "neighbour");
  const sa = await dev.createSession("conf-a");
  await run.preserve(sa, a.fd, 1n);
  const sn = sameSession ? sa : await dev.createSession("conf-b");
  await run.preserveNeighbour(sn, n, 2n);
  const neighbourAt = `${sn.name}/2`;

  run.neighbour.fail("freeze", { code: "EAGAIN" });
  await rejection(k1.kexec(), "EAGAIN");
  expect(k1.halted, "a failed freeze leaves the old kernel running").toBe(false);
  expect(run.luoStats().ownedFiles).toBe(2);
  for (const flb of run.flbs) {
    expect(k1.liveupdate.flbs.state(flb)?.outCount, "a failed reboot keeps FLB references").toBe(1);
  }
  const failed = run.indexOf(
    (c) => c.compatible === CONFORMANCE_NEIGHBOUR_COMPATIBLE && c.op === "freeze" && !c.ok,
  );
  expect(failed).toBeGreaterThanOrEqual(0);
  if (run.has("freeze")) {
    expect(run.calls("freeze"), "the handler's file is frozen before the neighbour's").toEqual(["conf-a/1"]);
  }
  if (run.has("unfreeze")) {
    expect(run.calls("unfreeze", true), "the handler's file is unfrozen once").toEqual(["conf-a/1"]);
    const unfrozen = run.indexOf((c) => c.compatible === run.subject.compatible && c.op === "unfreeze");
    expect(unfrozen, "unfreeze runs after the neighbour's freeze failed").toBeGreaterThan(failed);
  }
  expect(
    run.calls("unfreeze", true, CONFORMANCE_NEIGHBOUR_COMPATIBLE),
    "the file that failed to freeze is not unfrozen",
  ).not.toContain(neighbourAt);
  await run.verify(p, a.fd, a);

  // The kernel stays usable: sessions answer, new files can be preserved.
  expect(await sa.getName()).toBe("conf-a");
  const c = await run.create(p);
  await run.preserve(sa, c.fd, 3n);
  run.neighbour.heal();
  p.close(a.fd);
  p.close(c.fd);
  p.close(n);

  await run.kexec();
  const { proc: q, dev: dev2 } = await run.open();
  const ra = await dev2.retrieveSession("conf-a");
  await run.verify(q, await ra.retrieveFd(1n), a);
  await run.verify(q, await ra.retrieveFd(3n), c);
  const rn = sameSession ? ra : await dev2.retrieveSession("conf-b");
  run.verifyNeighbour(q, await rn.retrieveFd(2n), "neighbour");
  await ra.close();
  if (!sameSession) await rn.close();
  await run.expectClean([q]);
}

/** Case: a session closed after a failed live update unpreserves cleanly. */
async function closeAfterFailedKexec<S>(run: Run<S>): Promise<void> {
  const k1 = run.kernel;
  const { proc: p, dev: dev } = await run.open();
  const a = await run.create(p);
  const n = run.neighbourFile(p, "neighbour");
  const before = run.machine.stats();
  const sa = await dev.createSession("conf-a");
  await run.preserve(sa, a.fd, 1n);
  await run.preserveNeighbour(sa, n, 2n);
  run.neighbour.fail("freeze");
  await rejection(k1.kexec(), "EIO");
  await sa.close();
  expect(run.calls("unpreserve")).toEqual(["conf-a/1"]);
  expect(run.luoStats().ownedFiles).toBe(0);
  expect(run.machine.stats(), "page accounting after unfreeze + unpreserve").toEqual(before);
  await run.verify(p, a.fd, a);
  run.expectNoWarnings();
}

/** Case: kexec, retrieve twice → one file object on two fds; finish; leak check. */
async function retrieveTwice<S>(run: Run<S>): Promise<void> {
  const { proc: p, dev: dev } = await run.open();
  const a = await run.create(p);
  const s = await dev.createSession("conf-a");
  await run.preserve(s, a.fd, 1n);
  p.close(a.fd); // LUO's reference keeps the file alive

  await run.kexec();
  const { proc: q, dev: dev2 } = await run.open();
  const s2 = await dev2.retrieveSession("conf-a");
  const fd1 = await s2.retrieveFd(1n);
  const fd2 = await s2.retrieveFd(1n);
  expect(fd2).not.toBe(fd1);
  expect(q.file(fd2), "a second retrieve returns the same file object").toBe(q.file(fd1));
  expect(run.calls("retrieve", true), "the handler retrieves a file once").toEqual(["conf-a/1"]);
  await run.verify(q, fd1, a);
  await run.verify(q, fd2, a);
  expect(run.luoStats().ownedFiles).toBe(1);

  const out = await dev2.createSession("conf-out");
  await rejection(out.preserveFd(fd1, 1n), "EBUSY"); // retrieved, not finished: still LUO's
  await out.close();

  await s2.finish();
  expect(run.calls("finish")).toEqual(["conf-a/1"]);
  const fin = run.entries("finish")[0];
  expect(fin?.retrieveStatus, "finish sees the file as retrieved").toBe(1);
  await s2.finish(); // FINISH again: success, nothing finished twice
  expect(run.calls("finish", true)).toEqual(["conf-a/1"]);
  await run.verify(q, fd1, a);
  const file = q.file(fd1);
  await s2.close();
  q.close(fd1);
  q.close(fd2);
  expect(file.isReleased, "closing the last fd after finish releases the retrieved file").toBe(true);
  await run.expectClean([q]);
}

/** Case: finish with and without retrieve, explicit and implicit; leak check. */
async function finishAll<S>(run: Run<S>): Promise<void> {
  const { proc: p, dev: dev } = await run.open();
  const made = [await run.create(p), await run.create(p), await run.create(p), await run.create(p)];
  const sa = await dev.createSession("conf-a");
  const sb = await dev.createSession("conf-b");
  await dev.createSession("conf-empty");
  for (let i = 0; i < 3; i++) await run.preserve(sa, made[i]!.fd, BigInt(i + 1));
  await run.preserve(sb, made[3]!.fd, 1n);
  for (const m of made) p.close(m.fd);

  await run.kexec();
  const { proc: q, dev: dev2 } = await run.open();
  const ra = await dev2.retrieveSession("conf-a");
  const fd = await ra.retrieveFd(2n);
  await run.verify(q, fd, made[1]!);
  await ra.finish();
  expect(run.calls("finish"), "FINISH finishes every file, retrieved or not, LIFO").toEqual([
    "conf-a/3",
    "conf-a/2",
    "conf-a/1",
  ]);
  const statuses = run.entries("finish").map((c) => c.retrieveStatus);
  expect(statuses).toEqual([0, 1, 0]);
  await ra.finish();
  expect(run.calls("finish", true), "a second FINISH finishes nothing").toHaveLength(3);
  expect(run.luoStats().ownedFiles).toBe(0);
  await run.verify(q, fd, made[1]!);

  const rb = await dev2.retrieveSession("conf-b");
  await rb.close(); // implicit FINISH of a file never retrieved
  expect(run.calls("finish")).toEqual(["conf-a/3", "conf-a/2", "conf-a/1", "conf-b/1"]);
  await (await dev2.retrieveSession("conf-empty")).close();
  await ra.close();
  await run.expectClean([q]);
}

/** Case: retrieve, finish, preserve again, second live update. */
async function preserveAgain<S>(run: Run<S>): Promise<void> {
  const { proc: p, dev: dev } = await run.open();
  const a = await run.create(p);
  const s = await dev.createSession("conf-a");
  await run.preserve(s, a.fd, 1n);
  p.close(a.fd);

  const k2 = await run.kexec();
  const { proc: q, dev: dev2 } = await run.open();
  const s2 = await dev2.retrieveSession("conf-a");
  const fd = await s2.retrieveFd(1n);
  await s2.finish();
  await s2.close();
  const out = await dev2.createSession("conf-a"); // the name is free again
  await run.preserve(out, fd, 5n);
  q.close(fd);
  expect(k2.incoming!.unrestoredPages, "the first handover was fully released").toBe(0);

  const k3 = await run.kexec();
  expect(k3.liveupdate.liveupdateNumber).toBe(2n);
  const { proc: r, dev: dev3 } = await run.open();
  const s3 = await dev3.retrieveSession("conf-a");
  await run.verify(r, await s3.retrieveFd(5n), a);
  await s3.finish();
  await s3.close();
  await run.expectClean([r]);
}

/** Case: a neighbour's retrieve failure is sticky and does not disturb the subject's files. */
async function neighbourStickyRetrieve<S>(run: Run<S>): Promise<void> {
  const { proc: p, dev: dev } = await run.open();
  const a = await run.create(p);
  const c = await run.create(p);
  const n = run.neighbourFile(p, "neighbour");
  const s = await dev.createSession("conf-a");
  await run.preserve(s, a.fd, 1n);
  await run.preserveNeighbour(s, n, 2n);
  await run.preserve(s, c.fd, 3n);
  for (const fd of [a.fd, c.fd, n]) p.close(fd);

  await run.kexec();
  const { proc: q, dev: dev2 } = await run.open();
  const s2 = await dev2.retrieveSession("conf-a");
  run.neighbour.fail("retrieve", { code: "ENODEV" });
  const e1 = await rejection(s2.retrieveFd(2n), "ENODEV");
  run.neighbour.heal();
  const e2 = await rejection(s2.retrieveFd(2n), "ENODEV");
  expect(e2.message, "a failed retrieve is sticky").toBe(e1.message);
  expect(run.calls("retrieve", true, CONFORMANCE_NEIGHBOUR_COMPATIBLE)).toEqual(["conf-a/2"]);
  await run.verify(q, await s2.retrieveFd(3n), c);
  await run.verify(q, await s2.retrieveFd(1n), a);
  await s2.finish();
  expect(run.calls("finish")).toEqual(["conf-a/3", "conf-a/1"]);
  await s2.close();
  await run.expectClean([q]);
}

/** Case: the subject's own retrieve fails on corrupted state; sticky; finish still releases. */
async function stickyRetrieve<S>(run: Run<S>): Promise<void> {
  const { proc: p, dev: dev } = await run.open();
  const a = await run.create(p);
  const b = await run.create(p);
  const s = await dev.createSession("conf-a");
  await run.preserve(s, a.fd, 1n);
  await run.preserve(s, b.fd, 2n);
  p.close(a.fd);
  p.close(b.fd);

  const k2 = await run.kexec();
  const { proc: q, dev: dev2 } = await run.open();
  const s2 = await dev2.retrieveSession("conf-a");
  const lf = k2.liveupdate.received.sessions
    .find((s) => s.name === "conf-a")
    ?.files.find((f) => f.token === 1n);
  expect(lf, "the incoming file record").toBeDefined();
  await run.subject.corrupt!({
    kernel: k2,
    machine: run.machine,
    incoming: k2.incoming!,
    data: lf!.data,
    session: "conf-a",
    token: 1n,
  });
  const e1 = await rejection(s2.retrieveFd(1n));
  const e2 = await rejection(s2.retrieveFd(1n));
  expect(e2.code).toBe(e1.code);
  expect(e2.message, "a failed retrieve is sticky").toBe(e1.message);
  expect(run.calls("retrieve", true), "the handler is not asked again after a failure").toEqual(["conf-a/1"]);
  expect(run.calls("retrieve"), "subject.corrupt made the handler's retrieve fail").toEqual([]);
  await run.verify(q, await s2.retrieveFd(2n), b);
  await s2.finish();
  const fin = run.entries("finish");
  expect(fin.map((c) => c.at)).toEqual(["conf-a/2", "conf-a/1"]);
  expect(fin[1]!.retrieveStatus, "finish sees the sticky error").toBeInstanceOf(LiveUpdateError);
  await s2.close();
  await run.expectClean([q]);
}

/** Case: a neighbour vetoes FINISH → nothing finished; a retry finishes everything. */
async function neighbourVeto<S>(run: Run<S>): Promise<void> {
  const { proc: p, dev: dev } = await run.open();
  const a = await run.create(p);
  const n = run.neighbourFile(p, "neighbour");
  const s = await dev.createSession("conf-a");
  await run.preserve(s, a.fd, 1n);
  await run.preserveNeighbour(s, n, 2n);
  p.close(a.fd);
  p.close(n);

  await run.kexec();
  const { proc: q, dev: dev2 } = await run.open();
  const s2 = await dev2.retrieveSession("conf-a");
  const fd = await s2.retrieveFd(1n);
  run.neighbour.fail("canFinish");
  await rejection(s2.finish(), "EBUSY");
  expect(run.calls("finish", true), "a vetoed FINISH finishes nothing").toEqual([]);
  expect(run.luoStats().ownedFiles).toBe(1);
  await run.verify(q, fd, a);
  run.neighbour.heal();
  await s2.finish();
  expect(run.calls("finish")).toEqual(["conf-a/1"]);
  await s2.close();
  await run.expectClean([q]);
}

/** Case: FLB reference counts in both kernels. */
async function flbRefcounts<S>(run: Run<S>): Promise<void> {
  const k1 = run.kernel;
  const flbs = k1.liveupdate.flbs;
  const count = (op: string, compatible: string): number =>
    run.log.filter((c) => c.op === op && c.compatible === compatible).length;
  const { proc: p, dev: dev } = await run.open();
  const a = await run.create(p);
  const b = await run.create(p);

  const expectOutgoing = async (n: number): Promise<void> => {
    for (const flb of run.flbs) {
      const obj = await flbs.getOutgoing(flb);
      if (n === 0) expect(obj, `FLB "${flb.compatible}" without dependent files`).toBeUndefined();
      else expect(obj, `FLB "${flb.compatible}" with ${n} dependent file(s)`).toBeDefined();
      expect(flbs.state(flb)?.outCount).toBe(n);
    }
  };
  await expectOutgoing(0);
  let sa = await dev.createSession("conf-a");
  let sb = await dev.createSession("conf-b");
  await run.preserve(sa, a.fd, 1n);
  await expectOutgoing(1);
  await run.preserve(sb, b.fd, 1n);
  await expectOutgoing(2);
  for (const flb of run.flbs) expect(count("flb:preserved", flb.compatible)).toBe(1);
  await sb.close();
  await expectOutgoing(1);
  await sa.close();
  await expectOutgoing(0);
  for (const flb of run.flbs) {
    expect(count("flb:preserved", flb.compatible)).toBe(1);
    expect(count("flb:unpreserved", flb.compatible)).toBe(1);
  }

  sa = await dev.createSession("conf-a");
  sb = await dev.createSession("conf-b");
  await run.preserve(sa, a.fd, 1n);
  await run.preserve(sb, b.fd, 1n);
  p.close(a.fd);
  p.close(b.fd);

  const k2 = await run.kexec();
  const flbs2 = k2.liveupdate.flbs;
  const { proc: q, dev: dev2 } = await run.open();
  for (const flb of run.flbs) {
    expect(flbs2.state(flb)?.inCount, `FLB "${flb.compatible}" incoming references`).toBe(2n);
    const obj = await flbs2.getIncoming(flb);
    expect(obj).toBeDefined();
    expect(await flbs2.getIncoming(flb), "getIncoming retrieves once and caches").toBe(obj);
  }
  const ra = await dev2.retrieveSession("conf-a");
  await run.verify(q, await ra.retrieveFd(1n), a);
  await ra.finish();
  for (const flb of run.flbs) {
    expect(count("flb:finished", flb.compatible), "the FLB outlives the first finished file").toBe(0);
    expect(flbs2.state(flb)?.inCount).toBe(1n);
    await expect(flbs2.getIncoming(flb)).resolves.toBeDefined();
  }
  const rb = await dev2.retrieveSession("conf-b");
  await rb.close(); // implicit finish of a file never retrieved
  const lastFinish = run.lastIndexOf((c) => c.compatible === run.subject.compatible && c.op === "finish");
  for (const flb of run.flbs) {
    expect(count("flb:finished", flb.compatible), `FLB "${flb.compatible}" is finished exactly once`).toBe(1);
    expect(
      run.indexOf((c) => c.op === "flb:finished" && c.compatible === flb.compatible),
      "the FLB is finished after the last dependent file",
    ).toBeGreaterThan(lastFinish);
    await rejection(flbs2.getIncoming(flb), "ENODATA");
  }
  await ra.close();
  await run.expectClean([q]);
}

/**
 * The conformance checks for the handler `factory` describes, as plain functions: each
 * {@link ConformanceCase.run} boots fresh machines (through `factory()`) and rejects with the
 * first failed expectation. Use it to run a subset or to wrap the checks differently;
 * {@link describeHandlerConformance} runs them all as vitest tests. `factory` is called once
 * here (for the subject's name and optional parts) and again for every run.
 */
export function handlerConformanceCases<S>(factory: () => ConformanceSubject<S>): ConformanceCase[] {
  return conformanceCases(factory, factory());
}

function conformanceCases<S>(
  factory: () => ConformanceSubject<S>,
  probe: ConformanceSubject<S>,
): ConformanceCase[] {
  const hasFlbs = (probe.flbs?.length ?? 0) > 0;
  const make = (
    name: string,
    fn: (run: Run<S>) => Promise<void>,
    skipReason: string | undefined = undefined,
  ): ConformanceCase => ({
    name,
    skipReason,
    run: async () => fn(await Run.start(factory)),
  });
  return [
    make(
      "preserve, then closing the session unpreserves and gives the file back intact",
      preserveAndUnpreserve,
    ),
    make("a second preservation of the same file is EBUSY, without calling the handler", doublePreservation),
    make("a neighbour's freeze failure in the same session unfreezes the file; a later kexec succeeds", (r) =>
      neighbourFreezeFailure(r, true),
    ),
    make("a neighbour's freeze failure in a later session unfreezes the file; a later kexec succeeds", (r) =>
      neighbourFreezeFailure(r, false),
    ),
    make("a session closed after a failed live update unpreserves cleanly", closeAfterFailedKexec),
    make("survives kexec; retrieving twice gives one file on two fds; finish releases it", retrieveTwice),
    make("finish releases every file, retrieved or not, and nothing leaks", finishAll),
    make(
      "a retrieved and finished file can be preserved again and survives a second live update",
      preserveAgain,
    ),
    make("a neighbour's sticky retrieve failure leaves the handler's files alone", neighbourStickyRetrieve),
    make(
      "a failed retrieve of the handler is sticky and finish still releases the file",
      stickyRetrieve,
      probe.corrupt ? undefined : "the subject has no corrupt() hook",
    ),
    make("a neighbour's finish veto finishes nothing; a retry finishes everything", neighbourVeto),
    make(
      "FLBs live exactly as long as their dependent files, in both kernels",
      flbRefcounts,
      hasFlbs ? undefined : "the subject lists no FLBs",
    ),
  ];
}

/**
 * Registers a vitest `describe` block, `handler conformance: <name>`, with one test per
 * conformance check (see the module comment and {@link handlerConformanceCases}) for the handler
 * `factory` describes. Call it at the top level of a test file. `factory` must return a fresh
 * {@link ConformanceSubject} (fresh plugins and FLBs) on every call. Checks that do not apply
 * (no `corrupt` hook, no FLBs) are not registered; the describe title lists them.
 *
 * @example
 * ```ts
 * describeHandlerConformance(() => ({
 *   compatible: "memfd-v2",
 *   plugins: [memfdPlugin()],
 *   create(proc, i) {
 *     const fd = memfdCreate(proc, `ram-${i}`);
 *     proc.pwrite(fd, content(i), 0);
 *     return fd;
 *   },
 *   verify: (proc, fd, { index }) => expect(proc.pread(fd, 64, 0)).toEqual(content(index)),
 * }));
 * ```
 */
export function describeHandlerConformance<S>(factory: () => ConformanceSubject<S>): void {
  const probe = factory();
  const cases = conformanceCases(factory, probe);
  // Checks that do not apply are not registered (no skipped tests); the title names them.
  const notApplicable = cases
    .filter((c) => c.skipReason !== undefined)
    .map((c) => `${c.name}: ${c.skipReason}`);
  const title = `handler conformance: ${probe.name ?? probe.compatible}`;
  describe(
    notApplicable.length > 0 ? `${title} (not applicable: ${notApplicable.join("; ")})` : title,
    () => {
      for (const c of cases) if (c.skipReason === undefined) it(c.name, c.run);
    },
  );
}
