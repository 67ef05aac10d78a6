/**
 * The conformance harness: one {@link Run} per check boots a fresh machine with the subject's
 * plugins next to a neighbour handler, observes every callback, and offers the steps and leak
 * checks the cases are written with.
 *
 * How the kit observes a foreign handler: it wraps the subject's plugins so the handlers they
 * register through `ctx.registerFileHandler` are recorded (see `observe.ts`) and then delegate
 * to the original callbacks (which therefore see the recording wrapper as `args.handler`); FLBs
 * are observed through the orchestrator's `flb:*` events. The neighbour handler is registered
 * first, with one shared {@link TestControl} (across the check's kernels) to inject its faults.
 *
 * A subject callback that must not fail (`unpreserve`, `unfreeze`, `finish`) and throws fails
 * the check with its own message and the thrown error as `cause`, not as a later mismatch.
 *
 * @module
 */
import { LiveUpdateError, type ErrnoCode } from "../../errors.js";
import type { Process } from "../../kernel/index.js";
import { Machine, type MachineStats } from "../../machine/index.js";
import type { FileHandler, Flb, LiveUpdateDevice, SessionHandle } from "../../liveupdate/index.js";
import { definePlugin, type Plugin } from "../../plugin/index.js";
import { Kernel } from "../../system/index.js";
import { TestControl } from "../test-control.js";
import { ConformanceFailure, check } from "./check.js";
import {
  CONFORMANCE_NEIGHBOUR_COMPATIBLE,
  MUST_NOT_FAIL,
  NeighbourFile,
  neighbourPlugin,
  observeHandler,
  type Call,
  type FlbEvent,
  type ObservedOp,
} from "./observe.js";
import type { ConformanceOriginal, ConformanceSubject } from "./subject.js";

export { CONFORMANCE_NEIGHBOUR_COMPATIBLE };

const DEFAULT_MEMORY = "64 MiB";
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

/** A file the kit made through the subject. */
export interface Made<S> {
  readonly fd: number;
  readonly original: ConformanceOriginal<S>;
}

/** One check's machine, observed plugins, logs and helpers. */
export class Run<S> {
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
    check(entry, `subject.plugins register no handler with compatible "${compatible}"`).toBeDefined();
    check(
      run.handlers.has(compatible),
      `handler "${compatible}" must be registered through ctx.registerFileHandler so the kit can observe it`,
    ).toBe(true);
    for (const flb of run.flbs) {
      check(
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
    check(next, "kexec booted the next kernel").toBeDefined();
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
    try {
      proc.file(fd);
    } catch (e) {
      throw new ConformanceFailure(`subject.create(${index}) returned fd ${fd}, which is not open`, {
        cause: e,
      });
    }
    return { fd, original: { index, expected, mutated: false } };
  }

  /** `subject.mutate` on `made.fd`; returns the file as `verify` must now see it. */
  async mutate(proc: Process, made: Made<S>): Promise<Made<S>> {
    const r = await this.subject.mutate!(proc, made.fd, made.original);
    const expected = r === undefined ? made.original.expected : r;
    return { fd: made.fd, original: { index: made.original.index, expected, mutated: true } };
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
    check(new TextDecoder().decode(proc.pread(fd, 256, 0)), "neighbour file content").toBe(label);
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
    check(
      this.claimedBy(s.name, token),
      `the subject's file was claimed by another handler (canPreserve order or plugins?)`,
    ).toBe(this.subject.compatible);
  }

  /** PRESERVE_FD of a neighbour file. */
  async preserveNeighbour(s: SessionHandle, fd: number, token: bigint): Promise<void> {
    await s.preserveFd(fd, token);
    check(
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

  /**
   * `<session>/<token>` of the subject's calls of `op` (successful ones unless `all`). First
   * reports a callback of the subject that must not fail but threw, with its own error.
   */
  calls(op: ObservedOp, all = false, compatible = this.subject.compatible): string[] {
    this.expectNoThrows();
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

  /**
   * No `unpreserve`, `unfreeze` or `finish` of the subject threw: those cannot fail, the core
   * only reports them as warnings. The first one that threw fails the check with its message
   * (and the thrown error as `cause`).
   */
  expectNoThrows(): void {
    const bad = this.log.find(
      (c) =>
        c.compatible === this.subject.compatible &&
        MUST_NOT_FAIL.includes(c.op as ObservedOp) &&
        c.error !== undefined,
    );
    if (bad) {
      const msg = bad.error instanceof Error ? bad.error.message : String(bad.error);
      throw new ConformanceFailure(
        `handler "${bad.compatible}" ${bad.op} of ${bad.at} threw (it must not fail): ${msg}`,
        { cause: bad.error },
      );
    }
  }

  /** No handler or FLB callback ended in a warning; the first one fails the check with its message. */
  expectNoWarnings(): void {
    this.expectNoThrows();
    const first = this.warnings[0];
    if (first) {
      throw new ConformanceFailure(
        `a callback that cannot fail reported an error (${this.warnings.length} warning(s)): ${first.message}`,
        { cause: first },
      );
    }
  }

  /**
   * The leak check after a live update, once every session is closed: exits `procs` (closing
   * the retrieved fds), then nothing handed over is left unrestored, LUO owns nothing, no
   * warning, and the page accounting equals a fresh boot's.
   */
  async expectClean(procs: readonly Process[]): Promise<void> {
    this.expectNoThrows();
    const incoming = this.kernel.incoming;
    check(incoming, "the kernel booted from a handover").toBeDefined();
    check(
      incoming!.unrestoredPages,
      "handed-over pages never restored: finish must release the memory of every file, retrieved or not",
    ).toBe(0);
    for (const p of procs) p.exit();
    check(this.luoStats(), "LUO holds nothing after every session was finished and closed").toEqual({
      outgoingSessions: 0,
      incomingSessions: 0,
      ownedFiles: 0,
    });
    check(
      this.machine.stats(),
      "page accounting after finish and closing every fd equals a fresh boot's",
    ).toEqual(await this.freshBootStats());
    this.expectNoWarnings();
  }
}

/** Expects `p` to reject with a {@link LiveUpdateError} of `code` (any code when absent). */
export async function rejection(p: Promise<unknown>, code?: ErrnoCode): Promise<LiveUpdateError> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  check(e, "expected a rejection with a LiveUpdateError").toBeInstanceOf(LiveUpdateError);
  if (code !== undefined) check((e as LiveUpdateError).code).toBe(code);
  return e as LiveUpdateError;
}
