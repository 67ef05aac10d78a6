// The generated fault-injection matrix .
//
// Scenario: 3 sessions × 4 test-handler files, 2 test FLBs linked to the handler; create and
// preserve everything, kexec, retrieve every session and file (probing the FLBs with getIncoming
// after one session's files, or never: "lazy"), finish and close every session. The scenario is a
// list of steps (one API call each). A fault-free run of it records which callback runs in which
// step, and every recorded call of a failing callback is a position: the matrix is
//   {preserve, freeze, retrieve, canFinish, flbPreserve, flbRetrieve} × every recorded position ×
//   every failure mode (errno, plain Error, and for canFinish also the veto),
// generated from that log, never listed by hand. flbRetrieve positions come from every probe
// placement (after session 0, 1, 2, or never: then FINISH retrieves the FLB), the others from
// the default placement (after session 0).
//
// Each case arms the fault for exactly its position, runs the scenario and checks at the failing
// step: the error surfaced (the fault's code; EIO with the plain Error as `cause`; EBUSY for a
// veto), the exact callbacks of that step (rollback FIFO/LIFO, as the module comments of liveupdate/file.ts and flb.ts say), and that the
// state went back to what it was before the step: machine pages, KHO-preserved pages, unrestored
// incoming pages, the double-preservation registry, session counts and the FLB refcounts and
// objects. Then it heals, retries the step (it succeeds, except a retrieve, whose failure is
// sticky by design), runs the rest and checks that every later step makes exactly the calls and
// reaches exactly the state of the fault-free run, ending with everything retrieved, finished,
// closed and every handed-over page given back.
import { describe, expect, it } from "vitest";
import {
  ERRNO,
  LiveUpdateError,
  Machine,
  type ErrnoCode,
  type Kernel,
  type LiveUpdateDevice,
  type Process,
  type SessionHandle,
} from "@luo/core";
import { TEST_FLB_MAGIC, TestControl, createTestFile, type TestOp } from "@luo/core/testing";
import { faultPlugin, fmtCall, type FaultPlugin } from "./helpers/faults.js";
import { TEST_BLOCK_PAGES as BLOCK_PAGES, dec, enc } from "./helpers/luo.js";

const SESSIONS = 3;
const FILES = 4;
const FLBS = 2;
const MEMORY = "16 MiB";

const sname = (s: number) => `S${s}`;
const tok = (s: number, f: number) => BigInt(10 * s + f + 1);
const initial = (s: number, f: number) => `file ${s}.${f} preserved`;
const SUFFIX = " +written-before-kexec";
const finalContent = (s: number, f: number) => initial(s, f) + SUFFIX;
const indexes = (n: number) => Array.from({ length: n }, (_, i) => i);
const range = (from: number, to: number) => (from <= to ? indexes(to - from + 1).map((i) => from + i) : []);
const flbName = (j: number) => `liveupdate-test-flb-v${j}`;

// ---------------------------------------------------------------------------------------------
// The scenario

/** Where the FLBs are first asked for with getIncoming: after session `n`'s files, or never. */
type Probe = number | "lazy";

interface World {
  readonly machine: Machine;
  readonly plugin: FaultPlugin;
  readonly control: TestControl;
  readonly warnings: LiveUpdateError[];
  readonly k1: Kernel;
  readonly p: Process;
  readonly dev: LiveUpdateDevice;
  readonly fds: number[][];
  readonly out: SessionHandle[];
  k2?: Kernel;
  q?: Process;
  dev2?: LiveUpdateDevice;
  readonly inc: SessionHandle[];
  readonly got: Map<bigint, number>;
  readonly flbObjs: Map<number, { magic: bigint }>;
}

interface Step {
  readonly label: string;
  run(w: World): Promise<void>;
}

function scenario(probe: Probe): Step[] {
  const steps: Step[] = [];
  for (const s of indexes(SESSIONS)) {
    steps.push({
      label: `create ${sname(s)}`,
      run: async (w) => {
        w.out[s] = await w.dev.createSession(sname(s));
      },
    });
  }
  for (const s of indexes(SESSIONS))
    for (const f of indexes(FILES)) {
      steps.push({
        label: `preserve ${sname(s)}/${tok(s, f)}`,
        run: (w) => w.out[s]!.preserveFd(w.fds[s]![f]!, tok(s, f)),
      });
    }
  steps.push({
    label: "kexec",
    run: async (w) => {
      // Written after preserve: the test handler captures content at freeze (idempotent on retry).
      for (const s of indexes(SESSIONS))
        for (const f of indexes(FILES)) w.p.pwrite(w.fds[s]![f]!, enc(SUFFIX), initial(s, f).length);
      const k2 = (await w.k1.kexec()) as Kernel;
      w.k2 = k2;
      k2.liveupdate.events.on("warning", (e) => w.warnings.push(e.error));
      w.q = k2.spawn("vmm-next");
      w.dev2 = await w.q.openLiveUpdate();
    },
  });
  for (const s of indexes(SESSIONS)) {
    steps.push({
      label: `retrieve ${sname(s)}`,
      run: async (w) => {
        w.inc[s] = await w.dev2!.retrieveSession(sname(s));
      },
    });
    for (const f of indexes(FILES)) {
      steps.push({
        label: `retrieveFd ${sname(s)}/${tok(s, f)}`,
        run: async (w) => {
          w.got.set(tok(s, f), await w.inc[s]!.retrieveFd(tok(s, f)));
        },
      });
    }
    if (probe === s)
      for (const j of indexes(FLBS)) {
        steps.push({
          label: `getIncoming ${flbName(j)}`,
          run: async (w) => {
            w.flbObjs.set(j, await w.k2!.liveupdate.flbs.getIncoming(w.plugin.testFlbs[j]!));
          },
        });
      }
  }
  for (const s of indexes(SESSIONS))
    steps.push({ label: `finish ${sname(s)}`, run: (w) => w.inc[s]!.finish() });
  for (const s of indexes(SESSIONS))
    steps.push({ label: `close ${sname(s)}`, run: (w) => w.inc[s]!.close() });
  return steps;
}

async function newWorld(): Promise<World> {
  const control = new TestControl();
  const plugin = faultPlugin(control, FLBS);
  const machine = new Machine({ memory: MEMORY });
  const k1 = await machine.boot({ plugins: [plugin] });
  const warnings: LiveUpdateError[] = [];
  k1.liveupdate.events.on("warning", (e) => warnings.push(e.error));
  const p = k1.spawn("vmm");
  const dev = await p.openLiveUpdate();
  const fds = indexes(SESSIONS).map((s) =>
    indexes(FILES).map((f) => createTestFile(p, `${s}.${f}`, enc(initial(s, f)))),
  );
  return {
    machine,
    plugin,
    control,
    warnings,
    k1,
    p,
    dev,
    fds,
    out: [],
    inc: [],
    got: new Map(),
    flbObjs: new Map(),
  };
}

// ---------------------------------------------------------------------------------------------
// Observed state: page accounting, registry, refcounts

interface Snapshot {
  kernel: string;
  allocatedPages: number;
  preservedPages: number;
  freePages: number;
  khoPreservedPages: number;
  unrestoredPages: number;
  ownedFiles: number;
  outgoingSessions: number;
  incomingSessions: number;
  flbs: {
    outCount: number;
    outgoing: boolean;
    inCount: bigint;
    inRetrieved: boolean;
    inFinished: boolean;
  }[];
}

async function snapshot(w: World): Promise<Snapshot> {
  const k = w.k2 ?? w.k1;
  const m = w.machine.stats();
  const st = k.liveupdate.stats();
  const flbs = [];
  for (const flb of w.plugin.testFlbs) {
    const s = k.liveupdate.flbs.state(flb)!;
    flbs.push({
      outCount: s.outCount,
      outgoing: (await k.liveupdate.flbs.getOutgoing(flb)) !== undefined,
      inCount: s.inCount,
      inRetrieved: s.inRetrieved,
      inFinished: s.inFinished,
    });
  }
  return {
    kernel: w.k2 ? "next" : "first",
    allocatedPages: m.allocatedPages,
    preservedPages: m.preservedPages,
    freePages: m.freePages,
    khoPreservedPages: k.kho.preservedPages,
    unrestoredPages: k.incoming?.unrestoredPages ?? 0,
    ownedFiles: st.ownedFiles,
    outgoingSessions: st.outgoingSessions,
    incomingSessions: st.incomingSessions,
    flbs,
  };
}

/** What one fault-free run records: the calls of each step and the state after each step. */
interface CleanRun {
  readonly steps: Step[];
  readonly calls: string[][];
  readonly raw: { op: TestOp; key: bigint; session: string | undefined }[][];
  readonly after: Snapshot[];
  readonly before0: Snapshot;
}

async function cleanRun(probe: Probe): Promise<CleanRun> {
  const steps = scenario(probe);
  const w = await newWorld();
  const before0 = await snapshot(w);
  const calls: string[][] = [];
  const raw: CleanRun["raw"] = [];
  const after: Snapshot[] = [];
  for (const step of steps) {
    const mark = w.control.log.length;
    await step.run(w);
    const slice = w.control.log.slice(mark);
    calls.push(slice.map(fmtCall));
    raw.push(slice.map((c) => ({ op: c.op, key: c.key, session: c.session })));
    after.push(await snapshot(w));
  }
  await checkFinal(w, undefined);
  return { steps, calls, raw, after, before0 };
}

// ---------------------------------------------------------------------------------------------
// The generator

type Mode = { kind: "errno"; code: ErrnoCode } | { kind: "plain" } | { kind: "veto" };
type FaultOp = "preserve" | "freeze" | "retrieve" | "canFinish" | "flbPreserve" | "flbRetrieve";

interface Case {
  readonly op: FaultOp;
  readonly probe: Probe;
  readonly step: number;
  readonly key: bigint;
  readonly session: string | undefined;
  readonly mode: Mode;
}

const FAULT_OPS: readonly FaultOp[] = [
  "preserve",
  "freeze",
  "retrieve",
  "canFinish",
  "flbPreserve",
  "flbRetrieve",
];
const PROBES: readonly Probe[] = [...indexes(SESSIONS), "lazy"];
const DEFAULT_PROBE: Probe = 0;
/** Errnos injected (rotated over the cases); the message check pins the code to the injected fault. */
const CODES: readonly ErrnoCode[] = ["ENOMEM", "EAGAIN", "EPERM", "ERANGE", "EOVERFLOW", "ENODEV", "EFAULT"];

function modesOf(op: FaultOp, n: number): Mode[] {
  const errno: Mode = { kind: "errno", code: CODES[n % CODES.length]! };
  return op === "canFinish" ? [{ kind: "veto" }, errno, { kind: "plain" }] : [errno, { kind: "plain" }];
}

function generate(runs: ReadonlyMap<Probe, CleanRun>): Case[] {
  const cases: Case[] = [];
  for (const op of FAULT_OPS) {
    for (const probe of op === "flbRetrieve" ? PROBES : [DEFAULT_PROBE]) {
      const run = runs.get(probe)!;
      run.raw.forEach((calls, step) => {
        for (const c of calls) {
          if (c.op !== op) continue;
          for (const mode of modesOf(op, cases.length))
            cases.push({ op, probe, step, key: c.key, session: c.session, mode });
        }
      });
    }
  }
  return cases;
}

/**
 * The matrix size computed from the scenario's dimensions: each file is
 * preserved, frozen, retrieved and asked canFinish once; the FLBs are preserved once each (with
 * the first file) and retrieved once each per probe placement (S sessions + lazy); two modes per
 * callback, three for canFinish.
 */
const EXPECTED_CASES =
  SESSIONS * FILES * 2 + // preserve
  SESSIONS * FILES * 2 + // freeze
  SESSIONS * FILES * 2 + // retrieve
  SESSIONS * FILES * 3 + // canFinish: veto, errno, plain
  FLBS * 2 + // flbPreserve
  FLBS * (SESSIONS + 1) * 2; // flbRetrieve: after each session's files, or lazily at FINISH

// ---------------------------------------------------------------------------------------------
// The oracle: what the failing step must call

const C = (op: TestOp, s: number | undefined, key: bigint | number, failed = false) =>
  `${op}:${s === undefined ? "" : sname(s)}:${key}${failed ? "!" : ""}`;

const sessionOfKey = (key: bigint) => Math.floor(Number(key) / 10);
const fileOfKey = (key: bigint) => (Number(key) % 10) - 1;

function expectedFailingCalls(c: Case): string[] {
  const s = sessionOfKey(c.key);
  const f = fileOfKey(c.key);
  const g = s * FILES + f;
  switch (c.op) {
    case "preserve":
      // FLB preserve runs only for the first dependent file (0→1) and unwinds in reverse.
      return g === 0
        ? [
            ...indexes(FLBS).map((j) => C("flbPreserve", undefined, j)),
            C("preserve", s, c.key, true),
            ...indexes(FLBS)
              .reverse()
              .map((j) => C("flbUnpreserve", undefined, j)),
          ]
        : [C("preserve", s, c.key, true)];
    case "flbPreserve": {
      const j = Number(c.key);
      return [
        ...range(0, j - 1).map((i) => C("flbPreserve", undefined, i)),
        C("flbPreserve", undefined, j, true),
        ...range(0, j - 1)
          .reverse()
          .map((i) => C("flbUnpreserve", undefined, i)),
      ];
    }
    case "freeze": {
      // Sessions in creation order, files FIFO; unfreeze the failed session's files FIFO up to
      // (not including) the failed one, then the earlier sessions in reverse, each FIFO.
      const frozen = indexes(g).map((i) =>
        C("freeze", Math.floor(i / FILES), tok(Math.floor(i / FILES), i % FILES)),
      );
      const unfreeze = [
        ...range(0, f - 1).map((i) => C("unfreeze", s, tok(s, i))),
        ...range(0, s - 1)
          .reverse()
          .flatMap((t) => indexes(FILES).map((i) => C("unfreeze", t, tok(t, i)))),
      ];
      return [...frozen, C("freeze", s, c.key, true), ...unfreeze];
    }
    case "retrieve":
      return [C("retrieve", s, c.key, true)];
    case "canFinish":
      // canFinish FIFO, stops at the veto; nothing finished (no finish, no FLB finish).
      return [...range(0, f - 1).map((i) => C("canFinish", s, tok(s, i))), C("canFinish", s, c.key, true)];
    case "flbRetrieve": {
      const j = Number(c.key);
      if (c.probe !== "lazy") return [C("flbRetrieve", undefined, j, true)];
      // Lazy: the last session's FINISH drops the last references; FLBs are handled in reverse
      // link order, each retrieved (nobody did) then finished — the failing one is not finished.
      const last = SESSIONS - 1;
      return [
        ...indexes(FILES).map((i) => C("canFinish", last, tok(last, i))),
        ...indexes(FILES)
          .reverse()
          .map((i) => C("finish", last, tok(last, i))),
        ...indexes(FLBS)
          .reverse()
          .flatMap((i) =>
            i === j
              ? [C("flbRetrieve", undefined, i, true)]
              : [C("flbRetrieve", undefined, i), C("flbFinish", undefined, i)],
          ),
      ];
    }
  }
}

function arm(w: World, c: Case): void {
  const only = [c.key];
  if (c.mode.kind === "plain") w.control.fail(c.op, { only, plain: true });
  else if (c.mode.kind === "errno") w.control.fail(c.op, { only, code: c.mode.code });
  else w.control.fail(c.op, { only });
  if (c.op === "canFinish" && c.mode.kind !== "veto")
    w.plugin.canFinishThrow = c.mode.kind === "plain" ? { plain: true } : { plain: false, code: c.mode.code };
}

function heal(w: World): void {
  w.control.heal();
  w.plugin.canFinishThrow = undefined;
}

function describeCase(c: Case): string {
  const mode = c.mode.kind === "errno" ? c.mode.code : c.mode.kind;
  const where = c.session === undefined ? `FLB ${c.key}` : `${c.session}/${c.key}`;
  return `${c.op} fails (${mode}) at ${where}, probe ${c.probe}`;
}

/** The error the failing step must surface, checked in full. */
function checkError(c: Case, e: unknown): void {
  expect(e, "a LiveUpdateError").toBeInstanceOf(LiveUpdateError);
  const err = e as LiveUpdateError;
  const what = `(${c.key})`;
  if (c.mode.kind === "veto") {
    expect(err.code).toBe("EBUSY");
    expect(err.message).toContain(`vetoed finishing session "${c.session}" token ${c.key}`);
  } else if (c.mode.kind === "errno") {
    expect(err.code).toBe(c.mode.code);
    expect(err.message).toContain(`injected failure in ${c.op} ${what}`);
  } else {
    expect(err.code).toBe("EIO");
    expect(err.cause).toBeInstanceOf(Error);
    expect(err.cause).not.toBeInstanceOf(LiveUpdateError);
    expect((err.cause as Error).message).toContain(`injected plain failure in ${c.op} ${what}`);
    // The wrapper names the object.
    if (c.session === undefined) expect(err.message).toContain(`FLB "${flbName(Number(c.key))}"`);
    else expect(err.message).toContain(`session "${c.session}" token ${c.key}`);
  }
  expect(err.errno).toBe(-ERRNO[err.code]);
}

/** End state: everything retrieved (but a sticky failure), finished, closed, pages given back. */
async function checkFinal(w: World, c: Case | undefined): Promise<void> {
  const k2 = w.k2!;
  expect(w.k1.halted).toBe(true);
  expect(k2.halted).toBe(false);
  const failedRetrieve = c?.op === "retrieve" ? c.key : undefined;
  for (const s of indexes(SESSIONS))
    for (const f of indexes(FILES)) {
      const t = tok(s, f);
      if (t === failedRetrieve) {
        expect(w.got.has(t)).toBe(false);
        continue;
      }
      expect(dec(w.q!.pread(w.got.get(t)!, 200, 0)), `content of ${sname(s)}/${t}`).toBe(finalContent(s, f));
    }
  for (const [j, obj] of w.flbObjs) expect(obj.magic).toBe(TEST_FLB_MAGIC + BigInt(j));
  const snap = await snapshot(w);
  expect(snap.ownedFiles).toBe(0);
  expect(snap.incomingSessions).toBe(0);
  expect(snap.outgoingSessions).toBe(0);
  expect(snap.unrestoredPages).toBe(0);
  const lazyFailed = c?.op === "flbRetrieve" && c.probe === "lazy" ? Number(c.key) : undefined;
  const k2Calls = w.control.log.slice(w.control.log.findIndex((x) => x.op === "retrieve"));
  for (const j of indexes(FLBS)) {
    expect(snap.flbs[j]!.inFinished).toBe(true);
    expect(snap.flbs[j]!.inCount).toBe(0n);
    // FLB finish exactly once — except when its lazy retrieve failed (flb.ts: warn, no finish).
    const finishes = k2Calls.filter((x) => x.op === "flbFinish" && x.key === BigInt(j)).length;
    expect(finishes, `flbFinish ${j}`).toBe(j === lazyFailed ? 0 : 1);
    await expect(k2.liveupdate.flbs.getIncoming(w.plugin.testFlbs[j]!)).rejects.toMatchObject({
      code: "ENODATA",
    });
  }
  // Every file of the handover finished exactly once, in the new kernel.
  const finished = k2Calls.filter((x) => x.op === "finish").map((x) => x.key);
  expect(new Set(finished).size).toBe(SESSIONS * FILES);
  expect(finished.length).toBe(SESSIONS * FILES);
}

// ---------------------------------------------------------------------------------------------
// One case

/** `clean` adjusted by the known, temporary effect of the fault on the state after step `i`. */
function expectedAfter(c: Case, run: CleanRun, i: number): Snapshot {
  const want = structuredClone(run.after[i]!);
  if (c.op === "retrieve") {
    // The failed file's block stays handed over until its session's FINISH frees it.
    const finishStep = run.steps.findIndex((st) => st.label === `finish ${c.session}`);
    if (i >= c.step && i < finishStep) {
      want.allocatedPages += BLOCK_PAGES;
      want.freePages -= BLOCK_PAGES;
      want.unrestoredPages += BLOCK_PAGES;
      want.ownedFiles -= 1;
    }
  }
  if (c.op === "flbRetrieve" && c.probe === "lazy" && i >= c.step)
    want.flbs[Number(c.key)]!.inRetrieved = false;
  return want;
}

async function runCase(c: Case, run: CleanRun): Promise<void> {
  const w = await newWorld();
  expect(await snapshot(w)).toEqual(run.before0);
  const { steps } = run;
  for (let i = 0; i < steps.length; i++) {
    const step = steps[i]!;
    const ctx = `${describeCase(c)}: step "${step.label}"`;
    if (i !== c.step) {
      const mark = w.control.log.length;
      await step.run(w);
      expect(w.control.log.slice(mark).map(fmtCall), ctx).toEqual(run.calls[i]);
      expect(await snapshot(w), ctx).toEqual(expectedAfter(c, run, i));
      continue;
    }
    // The failing step.
    const before = await snapshot(w);
    arm(w, c);
    let mark = w.control.log.length;
    const lazy = c.op === "flbRetrieve" && c.probe === "lazy";
    const outcome = await step.run(w).then(
      () => undefined,
      (e: unknown) => e ?? new Error("rejected with nothing"),
    );
    expect(w.control.log.slice(mark).map(fmtCall), ctx).toEqual(expectedFailingCalls(c));
    if (lazy) {
      // FINISH cannot fail: the FLB's retrieve error comes out as the one warning.
      expect(outcome, ctx).toBeUndefined();
      expect(w.warnings, ctx).toHaveLength(1);
      checkError(c, w.warnings[0]);
      expect(await snapshot(w), ctx).toEqual(expectedAfter(c, run, i));
    } else {
      expect(outcome, ctx).toBeDefined();
      checkError(c, outcome);
      expect(w.warnings, ctx).toEqual([]);
      // Rolled back to the state before the step.
      expect(await snapshot(w), ctx).toEqual(before);
      if (c.op === "freeze") expect(w.k1.halted).toBe(false);
    }
    heal(w);
    mark = w.control.log.length;
    if (c.op === "retrieve") {
      // A failed retrieve is sticky: the same error forever, the handler is not called again.
      await expect(step.run(w), ctx).rejects.toBe(outcome);
      expect(w.control.log.slice(mark).map(fmtCall), ctx).toEqual([]);
      expect(await snapshot(w), ctx).toEqual(before);
    } else if (lazy) {
      // FINISH again is a no-op success; the FLB was finished without its object.
      await step.run(w);
      expect(w.control.log.slice(mark).map(fmtCall), ctx).toEqual([]);
      expect(await snapshot(w), ctx).toEqual(expectedAfter(c, run, i));
    } else {
      await step.run(w);
      expect(w.control.log.slice(mark).map(fmtCall), ctx).toEqual(run.calls[i]);
      expect(await snapshot(w), ctx).toEqual(expectedAfter(c, run, i));
    }
  }
  expect(w.warnings).toHaveLength(c.op === "flbRetrieve" && c.probe === "lazy" ? 1 : 0);
  await checkFinal(w, c);
}

// ---------------------------------------------------------------------------------------------

// The fault-free runs (one per probe placement) and the matrix generated from their logs.
const runs = new Map<Probe, CleanRun>();
for (const probe of PROBES) runs.set(probe, await cleanRun(probe));
const cases = generate(runs);
const ran = new Map<FaultOp, number>();

describe("fault-injection matrix (3 sessions × 4 files, 2 FLBs)", () => {
  it("the fault-free scenario follows the documented orders and gives every page back", async () => {
    const run = runs.get(DEFAULT_PROBE)!;
    const all = run.calls.flat();
    const files = indexes(SESSIONS).flatMap((s) => indexes(FILES).map((f) => [s, f] as const));
    const finishSession = (s: number, last: boolean) => [
      ...indexes(FILES).map((f) => C("canFinish", s, tok(s, f))),
      ...indexes(FILES)
        .reverse()
        .map((f) => C("finish", s, tok(s, f))),
      ...(last
        ? indexes(FLBS)
            .reverse()
            .map((j) => C("flbFinish", undefined, j))
        : []),
    ];
    expect(all).toEqual([
      ...indexes(FLBS).map((j) => C("flbPreserve", undefined, j)),
      ...files.map(([s, f]) => C("preserve", s, tok(s, f))),
      ...files.map(([s, f]) => C("freeze", s, tok(s, f))),
      ...indexes(SESSIONS).flatMap((s) => [
        ...indexes(FILES).map((f) => C("retrieve", s, tok(s, f))),
        ...(s === 0 ? indexes(FLBS).map((j) => C("flbRetrieve", undefined, j)) : []),
      ]),
      ...indexes(SESSIONS).flatMap((s) => finishSession(s, s === SESSIONS - 1)),
    ]);
    // After the live update and the finish of everything, the machine holds exactly what a cold
    // boot of the same machine holds: no page of the old kernel is left over.
    const cold = await new Machine({ memory: MEMORY }).boot({
      plugins: [faultPlugin(new TestControl(), FLBS)],
    });
    const end = run.after[run.after.length - 1]!;
    expect(end.allocatedPages).toBe(cold.machine.stats().allocatedPages);
    expect(end.preservedPages).toBe(cold.machine.stats().preservedPages);
    expect(end.khoPreservedPages).toBe(cold.kho.preservedPages);
  });

  it("the generator yields the computed number of cases", () => {
    const byOp = Object.fromEntries(FAULT_OPS.map((op) => [op, cases.filter((c) => c.op === op).length]));
    expect(byOp).toEqual({
      preserve: SESSIONS * FILES * 2,
      freeze: SESSIONS * FILES * 2,
      retrieve: SESSIONS * FILES * 2,
      canFinish: SESSIONS * FILES * 3,
      flbPreserve: FLBS * 2,
      flbRetrieve: FLBS * (SESSIONS + 1) * 2,
    });
    expect(cases.length).toBe(EXPECTED_CASES);
    // No two cases are the same.
    const keys = cases.map((c) => describeCase(c));
    expect(new Set(keys).size).toBe(cases.length);
  });

  it.each(cases.map((c) => [describeCase(c), c] as const))("%s", async (_name, c) => {
    ran.set(c.op, (ran.get(c.op) ?? 0) + 1);
    await runCase(c, runs.get(c.probe)!);
  });

  it("ran every case", () => {
    const total = [...ran.values()].reduce((a, b) => a + b, 0);
    console.log(`fault matrix: ${total} cases ran (${[...ran].map(([op, n]) => `${op} ${n}`).join(", ")})`);
    expect(total).toBe(EXPECTED_CASES);
  });
});
