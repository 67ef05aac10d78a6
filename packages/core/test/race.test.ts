// Race exploration with fast-check's scheduler .
//
// A small async file handler ("race-v1") and FLB ("race-flb-v1") whose every callback awaits a
// promise scheduled by fc.scheduler(), so the scheduler decides how concurrent operations
// interleave inside the core's locks. Each run starts a handful of operations at once, each
// behind its own scheduled start, and one kexec:
//   - old kernel: create, preserve, close (outgoing), handler / FLB (un)registration, kexec;
//   - new kernel: retrieve session, retrieve-fd, finish, close (incoming), create, preserve of
//     fresh and of retrieved files, close (outgoing), registration, kexec to a third kernel;
// in some runs a handler's freeze fails (the reboot must roll back).
//
// Properties, each checked on every run:
//   1. No mutation is committed after freeze starts. Commit points are the core's events
//      (session:created, file:preserved, file:unpreserved, session:closed, session:retrieved,
//      session:finished, file:retrieved, file:finished); freeze starts when the reboot gets the
//      serialize lock for writing (instrumented) and ends only if the reboot fails. No commit
//      lies inside a freeze window; every committed event belongs to exactly one operation that
//      resolved successfully; nothing commits on a session after its close committed; every
//      serialize-lock reader that settles after `reboot:done` rejected with ESHUTDOWN (a waiter
//      on the serialize lock never completes after a successful kexec). Registration is not a
//      serialize-lock reader; it is covered by properties 4 and 5.
//   2. The handover equals a serial order of the committed operations: applying the commits in
//      their order to a model (sessions → tokens → content) is consistent at every step (a
//      preserve lands in a live session, with a fresh token, of a file owned by nobody — a closing
//      session gives up each file at its file:unpreserved, before its close commits; a retrieved
//      file is preserved again only after its FINISH), and the next kernel's incoming sessions,
//      tokens and file contents are exactly the model's. The old kernel's FLB refcount and
//      double-preservation registry match the model too, and finishing everything in the next
//      kernel gives back every handed-over page.
//   3. A failed reboot leaves every session usable: after the injected freeze failure, every
//      live session takes another preserve, a new session can be created, incoming sessions can
//      still be finished and closed, and a later kexec succeeds (and is checked as in 2).
//   4. No deadlock: once the scheduler has nothing left to run, every operation has settled.
//   5. The lock hierarchy is never violated: no rejection or warning carries EDEADLK anywhere in
//      its cause chain, every handler/FLB callback runs with a strictly ordered heldLocks()
//      chain rooted at the serialize lock and holding its session/file/FLB lock, and
//      heldLocks() is empty after the run. Every rejection is a LiveUpdateError with an errno
//      the operation can legitimately fail with.
//
// The operations call the orchestrator (kernel.liveupdate: createSession, preserveFd,
// releaseSession, retrieveFile, finish, registry) directly with Session objects, as the fd layer
// (SessionHandle / ioctl) does, so the core's own guarantees are what is checked — including
// EBADF for an operation on a session whose close has begun.
//
// Runs: LUO_RACE_RUNS (default 1000) per property. Local soak of 100,000 runs:
//   LUO_RACE_RUNS=100000 corepack pnpm exec vitest run --project core test/race
// (or `corepack pnpm test:race`). fast-check prints the seed and path of any failure; replay
// with LUO_RACE_SEED=<seed> LUO_RACE_PATH=<path>.
import fc from "fast-check";
import { setImmediate as macrotask } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import {
  LiveUpdateError,
  Machine,
  PAGE_SIZE,
  defineFileHandler,
  defineFlb,
  definePlugin,
  type ErrnoCode,
  type FileHandler,
  type Flb,
  type Kernel,
  type KernelFile,
  type Plugin,
  type Process,
} from "@luo/core";
import { heldLocks, type Session } from "@luo/core/internal";
import { TestFile, createTestFile, testHandlerPlugin } from "@luo/core/testing";
import { assertHierarchy, chainHasCode } from "./helpers/faults.js";
import { dec, enc, rejects } from "./helpers/luo.js";

const RUNS = Number(process.env.LUO_RACE_RUNS ?? 1000);
const SEED = process.env.LUO_RACE_SEED === undefined ? undefined : Number(process.env.LUO_RACE_SEED);
const PATH = process.env.LUO_RACE_PATH;
const MEMORY = "8 MiB";
const FILE_MAGIC = 0x52414345;
const FLB_MAGIC = 0x7261636566_6c6200n;
const FREEZE_FAULT: ErrnoCode = "EOVERFLOW";

const sessionLock = (name: string) => `session "${name}"`;
const fileLock = (name: string, token: bigint) => `file ${token} of session "${name}"`;
const FLB_OUT = `FLB "race-flb-v1" outgoing`;
const FLB_IN = `FLB "race-flb-v1" incoming`;

// ---------------------------------------------------------------------------------------------
// The rig: scheduler gate, global sequence, trace of commits, collected errors and violations

interface TraceEntry {
  readonly seq: number;
  readonly kernel: string;
  readonly what: string;
  readonly session?: string;
  readonly token?: bigint;
  readonly kind?: string;
}

class Rig {
  seq = 0;
  /** When false, callbacks do not go through the scheduler (serial setup and checks). */
  gate = false;
  freezeFault: bigint | undefined;
  readonly trace: TraceEntry[] = [];
  readonly violations: string[] = [];
  readonly errors: unknown[] = [];
  constructor(readonly s: fc.Scheduler) {}

  tick(label: string): Promise<void> {
    return this.gate ? this.s.schedule(Promise.resolve(), label) : Promise.resolve();
  }

  next(): number {
    return ++this.seq;
  }

  record(kernel: string, what: string, extra: Partial<TraceEntry> = {}): void {
    this.trace.push({ seq: this.next(), kernel, what, ...extra });
  }

  /** Checks the locks held by a callback: ordered, rooted at serialize, containing `required`. */
  held(where: string, required: readonly string[]): void {
    const h = heldLocks();
    try {
      assertHierarchy(h, where);
    } catch (e) {
      this.violations.push((e as Error).message);
    }
    if (h[h.length - 1] !== "serialize")
      this.violations.push(`${where} runs outside the serialize lock: ${h.join(" <- ")}`);
    for (const r of required)
      if (!h.includes(r)) this.violations.push(`${where} does not hold ${r}: ${h.join(" <- ")}`);
  }
}

// ---------------------------------------------------------------------------------------------
// The async handler and FLB

interface RaceKit {
  readonly plugin: Plugin;
  readonly handler: FileHandler<TestFile, undefined>;
  readonly flb: Flb<{ magic: bigint }>;
}

function raceKit(rig: Rig): RaceKit {
  const flb = defineFlb<{ magic: bigint }>({
    compatible: "race-flb-v1",
    async preserve() {
      rig.held("FLB preserve", [FLB_OUT]);
      await rig.tick("flb preserve");
      return { data: FLB_MAGIC, obj: { magic: FLB_MAGIC } };
    },
    async unpreserve() {
      rig.held("FLB unpreserve", [FLB_OUT]);
      await rig.tick("flb unpreserve");
    },
    async retrieve({ data }) {
      rig.held("FLB retrieve", [FLB_IN]);
      await rig.tick("flb retrieve");
      return { magic: data };
    },
    async finish() {
      rig.held("FLB finish", [FLB_IN]);
      await rig.tick("flb finish");
    },
  });
  const handler = defineFileHandler<TestFile, undefined>({
    compatible: "race-v1",
    canPreserve: (file) => file instanceof TestFile,
    async preserve({ kho, token, session, flb: access }) {
      const where = `preserve ${session.sessionName}/${token}`;
      rig.held(where, [sessionLock(session.sessionName)]);
      await rig.tick(where);
      // The FLB is preserved before its first dependent file: its object is live.
      if ((await access.getOutgoing(flb))?.magic !== FLB_MAGIC)
        rig.violations.push(`${where}: no FLB object`);
      return { data: kho.allocPreserve(PAGE_SIZE).phys };
    },
    async unpreserve({ kho, data, token, session }) {
      const where = `unpreserve ${session.sessionName}/${token}`;
      rig.held(where, [sessionLock(session.sessionName)]);
      await rig.tick(where);
      kho.unpreserveFree(data);
    },
    async freeze({ machine, data, file, token, session }) {
      const where = `freeze ${session.sessionName}/${token}`;
      rig.held(where, [sessionLock(session.sessionName), fileLock(session.sessionName, token)]);
      await rig.tick(where);
      if (rig.freezeFault === token)
        throw new LiveUpdateError(FREEZE_FAULT, `injected freeze failure (${token})`);
      const page = machine.view(data, PAGE_SIZE);
      const dv = new DataView(page.buffer, page.byteOffset, 8);
      dv.setUint32(0, FILE_MAGIC, true);
      dv.setUint32(4, file.content.length, true);
      page.set(file.content, 8);
    },
    async unfreeze({ machine, data, token, session }) {
      const where = `unfreeze ${session.sessionName}/${token}`;
      rig.held(where, [sessionLock(session.sessionName), fileLock(session.sessionName, token)]);
      await rig.tick(where);
      machine.view(data, PAGE_SIZE).fill(0);
    },
    async retrieve({ incoming, data, token, session, flb: access }) {
      const where = `retrieve ${session.sessionName}/${token}`;
      rig.held(where, [sessionLock(session.sessionName), fileLock(session.sessionName, token)]);
      await rig.tick(where);
      if ((await access.getIncoming(flb)).magic !== FLB_MAGIC)
        rig.violations.push(`${where}: bad FLB object`);
      const page = incoming!.machine.view(data, PAGE_SIZE);
      const dv = new DataView(page.buffer, page.byteOffset, 8);
      if (dv.getUint32(0, true) !== FILE_MAGIC) rig.violations.push(`${where}: block was not frozen`);
      const file = new TestFile(`retrieved-${token}`, page.slice(8, 8 + dv.getUint32(4, true)));
      incoming!.restoreFree(data);
      return file;
    },
    async canFinish({ token, session }) {
      const where = `canFinish ${session.sessionName}/${token}`;
      rig.held(where, [sessionLock(session.sessionName), fileLock(session.sessionName, token)]);
      await rig.tick(where);
      return true;
    },
    async finish({ incoming, data, retrieveStatus, token, session }) {
      const where = `finish ${session.sessionName}/${token}`;
      rig.held(where, [sessionLock(session.sessionName), fileLock(session.sessionName, token)]);
      await rig.tick(where);
      if (retrieveStatus !== 1 && incoming?.covers(data, PAGE_SIZE)) incoming.restoreFree(data);
    },
  });
  const plugin = definePlugin({
    name: "race",
    async register(ctx) {
      await ctx.registerFileHandler(handler);
      await ctx.registerFlb(handler, flb);
    },
  });
  return { plugin, handler, flb };
}

/** A handler and FLB registered and unregistered at run time (they never preserve anything). */
function extraKit(): { handler: FileHandler; flb: Flb } {
  const fail = () => {
    throw new LiveUpdateError("EINVAL", "the extra handler preserves nothing");
  };
  const handler = defineFileHandler({
    compatible: "extra-v1",
    canPreserve: () => false,
    preserve: fail,
    unpreserve: fail,
    retrieve: fail,
    finish: fail,
  });
  const flb = defineFlb({
    compatible: "extra-flb-v1",
    preserve: fail,
    unpreserve: fail,
    retrieve: fail,
    finish: fail,
  });
  return { handler, flb };
}

// ---------------------------------------------------------------------------------------------
// Kernels: event trace and freeze-window instrumentation

const TRACED = [
  "session:created",
  "session:retrieved",
  "session:closed",
  "session:finished",
  "session:stuck",
  "file:preserved",
  "file:unpreserved",
  "file:retrieved",
  "file:finished",
  "reboot:failed",
  "reboot:done",
] as const;
/** Events that commit a session mutation (readers of the serialize lock). */
const MUTATIONS = new Set<string>(TRACED.filter((e) => !e.startsWith("reboot:")));

/** Traces `kernel`'s events as `label`, and marks when a reboot holds the serialize lock. */
function watch(rig: Rig, kernel: Kernel, label: string): void {
  const ev = kernel.liveupdate.events;
  for (const name of TRACED) {
    const listener = (e: { session?: string; token?: bigint; kind?: string }) =>
      rig.record(label, name, { session: e.session, token: e.token, kind: e.kind });
    ev.on(name, listener as never);
  }
  ev.on("warning", (e) => {
    rig.errors.push(e.error);
    rig.record(label, "warning");
  });
  const lock = kernel.liveupdate.serializeLock;
  const acquire = lock.acquireWrite.bind(lock);
  lock.acquireWrite = async () => {
    const w = await acquire();
    rig.record(label, "freeze:start");
    return {
      inside: w.inside,
      release: () => {
        rig.record(label, "freeze:end");
        w.release();
      },
    };
  };
}

// ---------------------------------------------------------------------------------------------
// Operations: scheduled starts, outcomes, settling

const SKIP = Symbol("skipped: a prerequisite failed");

type OpKind =
  | "create"
  | "preserve"
  | "closeOut"
  | "register"
  | "registerFlb"
  | "unregister"
  | "kexec"
  | "retrieveSession"
  | "retrieveFd"
  | "finish"
  | "closeIn";

/** Errnos an operation may legitimately fail with in these runs. */
const ALLOWED: Record<OpKind, readonly ErrnoCode[]> = {
  create: ["ESHUTDOWN"],
  preserve: ["EEXIST", "EBUSY", "EBADF", "ESHUTDOWN"],
  closeOut: ["ESHUTDOWN"],
  register: ["EBUSY", "EEXIST", "ESHUTDOWN"],
  registerFlb: ["EBUSY", "EINVAL", "EEXIST", "ESHUTDOWN"],
  unregister: ["EBUSY", "ENOENT", "ESHUTDOWN"],
  kexec: [FREEZE_FAULT],
  retrieveSession: ["ESHUTDOWN"],
  retrieveFd: ["ENOENT", "EBADF", "ESHUTDOWN"],
  finish: ["EBADF", "ESHUTDOWN"],
  closeIn: ["ESHUTDOWN"],
};

/**
 * Operations that take the serialize lock as readers. Registration takes only the
 * session-list locks: a registration that got them while a reboot was between freeze and commit
 * finishes with its own result (it can only succeed when no session exists, so it cannot change
 * the handover); it is checked for deadlock, hierarchy and errno only.
 */
const SERIALIZE_READERS = new Set<OpKind>([
  "create",
  "preserve",
  "closeOut",
  "retrieveSession",
  "retrieveFd",
  "finish",
  "closeIn",
]);

interface Op {
  readonly label: string;
  readonly kind: OpKind;
  readonly kernel: string;
  readonly session?: string;
  readonly token?: bigint;
  /** preserve: the model content of the file. */
  readonly content?: () => string;
  /** preserve of a retrieved file: where it came from. */
  readonly source?: { session: string; token: bigint };
  state: "pending" | "ok" | "err" | "skipped";
  value?: unknown;
  error?: unknown;
  settleSeq?: number;
  readonly promise: Promise<unknown>;
}

class Ops {
  readonly all: Op[] = [];
  constructor(private readonly rig: Rig) {}

  /** A scheduled start: the operation begins when the scheduler releases it. */
  start(label: string): Promise<void> {
    return this.rig.s.schedule(Promise.resolve(), `start ${label}`);
  }

  /** Starts after `delay` scheduled steps: spreads the kexec over the other operations. */
  async startLate(label: string, delay: number): Promise<void> {
    for (let i = 0; i < delay; i++) await this.rig.s.schedule(Promise.resolve(), `${label}: wait ${i}`);
    await this.start(label);
  }

  track(spec: Omit<Op, "state" | "promise">, run: Promise<unknown>): Op {
    const op = { ...spec, state: "pending", promise: run } as Op;
    run.then(
      (v) => {
        op.settleSeq = this.rig.next();
        if (v === SKIP) op.state = "skipped";
        else {
          op.state = "ok";
          op.value = v;
        }
      },
      (e: unknown) => {
        op.settleSeq = this.rig.next();
        op.state = "err";
        op.error = e;
        this.rig.errors.push(e);
      },
    );
    this.all.push(op);
    return op;
  }

  /** `run` once `after` succeeded (behind a scheduled start); SKIP if `after` failed. */
  after<T>(spec: Omit<Op, "state" | "promise">, after: Op, run: (v: T) => Promise<unknown>): Op {
    const p = after.promise.then(
      (v) => (v === SKIP ? SKIP : this.start(spec.label).then(() => run(v as T))),
      () => SKIP,
    );
    return this.track(spec, p);
  }

  now(spec: Omit<Op, "state" | "promise">, run: () => Promise<unknown>): Op {
    return this.track(
      spec,
      this.start(spec.label).then(() => run()),
    );
  }
}

/** Runs the scheduler until nothing is scheduled and every microtask has run. */
async function drain(s: fc.Scheduler): Promise<void> {
  for (let i = 0; i < 100_000; i++) {
    await s.waitIdle();
    await macrotask();
    if (s.count() === 0) return;
  }
  throw new Error("the scheduler never became idle (livelock)");
}

/** Runs one operation to completion; a promise still pending once idle is a deadlock. */
async function drive<T>(rig: Rig, p: Promise<T>, what: string): Promise<T> {
  let done = false;
  p.then(
    () => (done = true),
    () => (done = true),
  );
  await drain(rig.s);
  if (!done) throw new Error(`deadlock: ${what} never settled`);
  return p;
}

// ---------------------------------------------------------------------------------------------
// Checks shared by both phases

/** Property 4, 5 and the errno sets: every op settled, no EDEADLK, errors are allowed ones. */
function checkSettled(rig: Rig, ops: Ops, problems: string[]): void {
  for (const op of ops.all) {
    if (op.state === "pending") problems.push(`deadlock: ${op.label} never settled`);
    if (op.state !== "err") continue;
    const e = op.error;
    if (!(e instanceof LiveUpdateError)) {
      problems.push(`${op.label} rejected with a non-LiveUpdateError: ${String(e)}`);
      continue;
    }
    if (!ALLOWED[op.kind].includes(e.code)) problems.push(`${op.label} failed with ${e.code}: ${e.message}`);
  }
  for (const e of rig.errors)
    if (chainHasCode(e, "EDEADLK")) problems.push(`lock hierarchy violation: ${(e as Error).message}`);
  problems.push(...rig.violations);
  if (heldLocks().length > 0) problems.push(`locks still held: ${heldLocks().join(", ")}`);
}

interface Windows {
  /** [start, end) of every time a reboot held the serialize lock; end is Infinity on success. */
  readonly windows: { start: number; end: number }[];
  /** Seq of `reboot:done`, if the kernel was replaced. */
  readonly done: number | undefined;
  /** Seq of the successful freeze start, if any. */
  readonly committedAt: number | undefined;
}

function freezeWindows(rig: Rig, kernel: string): Windows {
  const windows: { start: number; end: number }[] = [];
  let done: number | undefined;
  for (const e of rig.trace) {
    if (e.kernel !== kernel) continue;
    if (e.what === "freeze:start") windows.push({ start: e.seq, end: Infinity });
    if (e.what === "freeze:end") windows[windows.length - 1]!.end = e.seq;
    if (e.what === "reboot:done") done = e.seq;
  }
  const open = windows.filter((w) => w.end === Infinity);
  return { windows, done, committedAt: open.length === 1 ? open[0]!.start : undefined };
}

/** Property 1. */
function checkFreeze(rig: Rig, ops: Ops, kernel: string, problems: string[]): Windows {
  const w = freezeWindows(rig, kernel);
  if (w.windows.filter((x) => x.end === Infinity).length > 1)
    problems.push(`${kernel}: two reboots kept the lock`);
  if ((w.done === undefined) !== (w.committedAt === undefined))
    problems.push(`${kernel}: reboot:done and the kept serialize lock disagree`);
  for (const e of rig.trace) {
    if (e.kernel !== kernel || !MUTATIONS.has(e.what)) continue;
    const inside = w.windows.find((x) => e.seq > x.start && e.seq < x.end);
    if (inside)
      problems.push(`${kernel}: ${e.what} ${e.session ?? ""}/${e.token ?? ""} committed during freeze`);
  }
  if (w.done !== undefined)
    for (const op of ops.all) {
      if (
        op.kernel !== kernel ||
        !SERIALIZE_READERS.has(op.kind) ||
        op.settleSeq === undefined ||
        op.settleSeq < w.done
      )
        continue;
      const code = op.state === "err" && op.error instanceof LiveUpdateError ? op.error.code : op.state;
      if (op.state !== "skipped" && code !== "ESHUTDOWN")
        problems.push(`${op.label} settled after the successful kexec with ${code}, not ESHUTDOWN`);
    }
  return w;
}

const key = (...parts: unknown[]) => parts.map(String).join("/");

/**
 * Property 1 (bijection): every commit event of `kernel` belongs to exactly one successful
 * operation of its kind and vice versa.
 */
function checkCommits(rig: Rig, ops: Ops, kernel: string, problems: string[]): void {
  const events = new Map<string, number>();
  const oks = new Map<string, number>();
  const bump = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
  for (const e of rig.trace) {
    if (e.kernel !== kernel) continue;
    if (e.what === "session:created") bump(events, key("create", e.session));
    if (e.what === "file:preserved") bump(events, key("preserve", e.session, e.token));
    if (e.what === "session:closed")
      bump(events, key(e.kind === "outgoing" ? "closeOut" : "closeIn", e.session));
    if (e.what === "session:retrieved") bump(events, key("retrieveSession", e.session));
    if (e.what === "session:finished") bump(events, key("finish", e.session));
  }
  for (const op of ops.all) {
    if (op.kernel !== kernel || op.state !== "ok") continue;
    if (op.kind === "preserve") bump(oks, key("preserve", op.session, op.token));
    else if (["create", "closeOut", "closeIn", "retrieveSession", "finish"].includes(op.kind))
      bump(oks, key(op.kind, op.session));
  }
  for (const k of new Set([...events.keys(), ...oks.keys()])) {
    if ((events.get(k) ?? 0) !== (oks.get(k) ?? 0))
      problems.push(
        `${kernel}: ${events.get(k) ?? 0} commit events but ${oks.get(k) ?? 0} successful ops for ${k}`,
      );
  }
  // A file is retrieved (handler called successfully) and finished at most once.
  const once = new Map<string, number>();
  for (const e of rig.trace)
    if (e.kernel === kernel && (e.what === "file:retrieved" || e.what === "file:finished"))
      bump(once, key(e.what, e.session, e.token));
  for (const [k, n] of once) if (n > 1) problems.push(`${kernel}: ${k} happened ${n} times`);
  // Serial order: once a session's close committed, nothing else commits on it.
  const closedAt = new Map<string, number>();
  for (const e of rig.trace) {
    if (e.kernel !== kernel || !MUTATIONS.has(e.what) || e.session === undefined) continue;
    const at = closedAt.get(e.session);
    if (at !== undefined)
      problems.push(
        `${kernel}: ${e.what} ${e.session}/${e.token ?? ""} committed after the session was closed`,
      );
    if (e.what === "session:closed") closedAt.set(e.session, e.seq);
  }
}

/** Model of the outgoing sessions: name → token → content. */
type Model = Map<string, Map<bigint, string>>;

/**
 * Property 2: applies the committed create / preserve / close operations of `kernel` in commit
 * order (up to `until`) and checks that each is legal at that point of the serial order.
 */
function buildModel(rig: Rig, ops: Ops, kernel: string, until: number, problems: string[]): Model {
  const model: Model = new Map();
  const owner = new Map<string, string>(); // file content id → session
  const idOf = new Map<string, string>(); // session/token → file content id
  const preserveOp = new Map<string, Op>();
  for (const op of ops.all)
    if (op.kernel === kernel && op.kind === "preserve" && op.state === "ok")
      preserveOp.set(key(op.session, op.token), op);
  const closed = new Set<string>();
  for (const e of rig.trace) {
    if (e.kernel !== kernel || e.seq > until) continue;
    if (e.what === "session:created") {
      if (model.has(e.session!) || closed.has(e.session!))
        problems.push(`serial order: ${e.session} created twice`);
      model.set(e.session!, new Map());
    } else if (e.what === "file:preserved") {
      const files = model.get(e.session!);
      const op = preserveOp.get(key(e.session, e.token));
      if (!files) {
        problems.push(`serial order: file ${e.token} preserved into ${e.session}, which is not live`);
        continue;
      }
      if (files.has(e.token!)) problems.push(`serial order: token ${e.token} reused in ${e.session}`);
      const content = op?.content?.() ?? "?";
      const id = op?.source ? key("retrieved", op.source.session, op.source.token) : key("fresh", content);
      if (owner.has(id)) problems.push(`serial order: ${id} preserved in ${owner.get(id)} and ${e.session}`);
      owner.set(id, e.session!);
      idOf.set(key(e.session, e.token), id);
      files.set(e.token!, content);
    } else if (e.what === "file:unpreserved") {
      // A closing session releases its files one by one (as the kernel's unpreserve loop erases
      // each file from the preserved-files registry): from here the file may be preserved into
      // another session, before the close itself commits.
      const id = idOf.get(key(e.session, e.token));
      if (id === undefined || owner.get(id) !== e.session)
        problems.push(`serial order: ${e.session}/${e.token} unpreserved but not preserved there`);
      else owner.delete(id);
      model.get(e.session!)?.delete(e.token!);
    } else if (e.what === "session:closed" && e.kind === "outgoing") {
      const files = model.get(e.session!);
      if (!files) problems.push(`serial order: ${e.session} closed but not live`);
      for (const [id, s] of owner) if (s === e.session) owner.delete(id);
      model.delete(e.session!);
      closed.add(e.session!);
    }
  }
  return model;
}

const fileCount = (m: Model) => [...m.values()].reduce((n, f) => n + f.size, 0);

/**
 * Property 2, in the next kernel: the incoming sessions, tokens and contents are exactly the
 * model's, the FLB count came over, and finishing everything gives every page back.
 */
async function checkHandover(next: Kernel, kit: RaceKit, model: Model, problems: string[]): Promise<void> {
  const luo = next.liveupdate;
  const q = next.spawn("verify");
  await q.openLiveUpdate();
  const got = new Map([...luo.incomingSessions.values()].map((s) => [s.name, s] as const));
  const names = (m: Iterable<string>) => [...m].sort().join(",");
  if (names(got.keys()) !== names(model.keys()))
    problems.push(`handover sessions [${names(got.keys())}] != committed [${names(model.keys())}]`);
  const st = luo.flbs.state(kit.flb)!;
  const n = fileCount(model);
  if (st.inCount !== BigInt(n)) problems.push(`handover FLB count ${st.inCount} != ${n} committed files`);
  for (const [name, files] of model) {
    const inc = got.get(name);
    if (!inc) continue;
    const tokens = inc.files.list().map((f) => f.token);
    if (names(tokens.map(String)) !== names([...files.keys()].map(String)))
      problems.push(
        `session ${name}: tokens [${tokens.join(",")}] != committed [${[...files.keys()].join(",")}]`,
      );
    const s = await luo.retrieveSession(name);
    for (const [token, content] of files) {
      if (!tokens.includes(token)) continue;
      const file = (await luo.retrieveFile(s, token)) as TestFile;
      if (dec(file.content) !== content)
        problems.push(`session ${name} token ${token}: content "${dec(file.content)}" != "${content}"`);
      file.put();
    }
  }
  for (const s of got.values()) {
    if (!model.has(s.name) && !s.retrieved) await luo.retrieveSession(s.name);
    await luo.finish(s);
    await luo.releaseSession(s);
  }
  if (n > 0 && !st.inFinished) problems.push("the FLB was not finished after every file finished");
  if (next.incoming!.unrestoredPages !== 0)
    problems.push(`${next.incoming!.unrestoredPages} handed-over pages leaked`);
  if (luo.stats().ownedFiles !== 0) problems.push(`${luo.stats().ownedFiles} identities still owned`);
}

/** The old kernel's FLB refcount and registry after a successful kexec equal the model. */
function checkOldKernel(
  old: Kernel,
  kit: RaceKit,
  model: Model,
  retainedIncoming: number,
  problems: string[],
): void {
  const n = fileCount(model);
  const stats = old.liveupdate.stats();
  if (stats.outgoingSessions !== model.size)
    problems.push(`old kernel: ${stats.outgoingSessions} outgoing sessions, ${model.size} committed`);
  const out = old.liveupdate.flbs.state(kit.flb)!.outCount;
  if (out !== n) problems.push(`old kernel: FLB refcount ${out} != ${n} committed files`);
  if (stats.ownedFiles !== n + retainedIncoming)
    problems.push(
      `old kernel: ${stats.ownedFiles} owned identities != ${n} committed + ${retainedIncoming} retrieved`,
    );
}

function report(all: string[], ops: Ops, rig: Rig): void {
  if (all.length === 0) return;
  const problems = [...new Set(all)];
  const outcome = (o: Op) =>
    o.state === "err" ? `err ${(o.error as LiveUpdateError).code ?? String(o.error)}` : o.state;
  const lines = [
    ...problems,
    "-- operations:",
    ...ops.all.map((o) => `  ${o.label}: ${outcome(o)} @${o.settleSeq ?? "-"}`),
    "-- trace:",
    ...rig.trace.map(
      (e) => `  ${e.seq} ${e.kernel} ${e.what} ${e.session ?? ""} ${e.token ?? ""} ${e.kind ?? ""}`,
    ),
  ];
  throw new Error(lines.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Steps shared by both phases

/** One run's concurrent part: its rig and operations, the kernel that kexecs, the problems found. */
interface Run {
  readonly rig: Rig;
  readonly kit: RaceKit;
  readonly ops: Ops;
  readonly kernel: Kernel;
  /** `kernel`'s label in the trace. */
  readonly label: string;
  readonly problems: string[];
}

/** Arms `rig` for the concurrent part: the freeze fault to inject, callbacks through the scheduler. */
function arm(rig: Rig, kit: RaceKit, kernel: Kernel, label: string, fault: number | undefined): Run {
  rig.freezeFault = fault === undefined ? undefined : BigInt(fault);
  rig.gate = true;
  return { rig, kit, ops: new Ops(rig), kernel, label, problems: [] };
}

/** Runs `what` on session `session` once `opened` (its create or retrieve) succeeded. */
function afterSession(
  run: Run,
  kind: OpKind,
  label: string,
  session: string,
  opened: Op,
  what: (sess: Session) => Promise<unknown>,
): Op {
  return run.ops.after<Session>({ label, kind, kernel: run.label, session }, opened, what);
}

/** A file installed in a process before the run, to be preserved during it. */
interface Installed {
  readonly name: string;
  readonly content: string;
  readonly fd: number;
}

/** Installs one TestFile per content in `proc`, named `${prefix}0`, `${prefix}1`, … */
function installFiles(proc: Process, prefix: string, contents: readonly string[]): Installed[] {
  return contents.map((content, i) => {
    const name = `${prefix}${i}`;
    return { name, content, fd: proc.installFile(new TestFile(name, enc(content))) };
  });
}

/** Preserves `file` (installed in `proc`) as `token` into session `session` once `created` succeeded. */
function preserveInstalled(
  run: Run,
  proc: Process,
  file: Installed,
  session: string,
  created: Op,
  token: bigint,
): Op {
  const spec = {
    label: `preserve ${file.name} as ${session}/${token}`,
    kind: "preserve" as const,
    kernel: run.label,
    session,
    token,
    content: () => file.content,
  };
  return run.ops.after<Session>(spec, created, (sess) =>
    run.kernel.liveupdate.preserveFd(sess, proc, file.fd, token),
  );
}

/** Creates the outgoing sessions `names`, each behind its own scheduled start. */
function createSessions(run: Run, names: readonly string[]): Op[] {
  return names.map((name) =>
    run.ops.now({ label: `create ${name}`, kind: "create", kernel: run.label, session: name }, () =>
      run.kernel.liveupdate.createSession(name),
    ),
  );
}

/**
 * Starts the kexec after `delay` scheduled steps, runs the scheduler until idle and checks that
 * every operation settled (properties 4 and 5). Returns the kexec operation.
 */
async function kexecAndDrain(run: Run, delay: number): Promise<Op> {
  const { rig, ops, kernel, label, problems } = run;
  const kexec = ops.track(
    { label: "kexec", kind: "kexec", kernel: label },
    ops.startLate("kexec", delay).then(() => kernel.kexec()),
  );
  await drain(rig.s);
  checkSettled(rig, ops, problems);
  report(problems, ops, rig);
  return kexec;
}

/** Property 3, first step: the kexec failed with the injected fault; the fault is cleared. */
function expectFailedReboot(run: Run): void {
  expect(run.kernel.halted).toBe(false);
  expect(run.rig.freezeFault).toBeDefined();
  run.rig.freezeFault = undefined;
}

/**
 * Property 3, after the failed reboot: every committed session is still live and takes another
 * preserve (of a file installed in `proc`), a new session "R" can be created and preserved into,
 * and a second kexec succeeds. Returns the next kernel.
 */
async function retryAfterFailedReboot(run: Run, proc: Process): Promise<Kernel> {
  const { rig, ops, kernel, label, problems } = run;
  const luo = kernel.liveupdate;
  const model = buildModel(rig, ops, label, Infinity, problems);
  report(problems, ops, rig);
  let fresh = 0;
  const preserveFresh = async (name: string, sess: Session) => {
    const content = `after the failed reboot ${fresh++}`;
    const fd = proc.installFile(new TestFile(`r${fresh}`, enc(content)));
    const token = 100n + BigInt(fresh);
    const op = ops.track(
      {
        label: `preserve after failure into ${name}/${token}`,
        kind: "preserve",
        kernel: label,
        session: name,
        token,
        content: () => content,
      },
      luo.preserveFd(sess, proc, fd, token),
    );
    await drive(rig, op.promise, op.label);
  };
  for (const name of model.keys()) {
    const sess = luo.outgoingSessions.get(name);
    if (sess) await preserveFresh(name, sess);
    else problems.push(`committed session ${name} is not in the outgoing list`);
  }
  const create = ops.track(
    { label: "create R", kind: "create", kernel: label, session: "R" },
    luo.createSession("R"),
  );
  await preserveFresh("R", (await drive(rig, create.promise, create.label)) as Session);
  const again = ops.track({ label: "kexec again", kind: "kexec", kernel: label }, kernel.kexec());
  return (await drive(rig, again.promise, again.label)) as Kernel;
}

/**
 * Properties 1 and 2 once the run is over: no commit inside a freeze window, the commits match
 * the successful operations, the old kernel matches the model of the committed operations, and
 * so does the handover in `next` (traced as `nextLabel`). `retainedIncoming` counts the incoming
 * files the old kernel still owns.
 */
async function checkOutcome(
  run: Run,
  next: Kernel,
  nextLabel: string,
  retainedIncoming: number,
): Promise<void> {
  const { rig, kit, ops, kernel, label, problems } = run;
  rig.gate = false;
  const w = checkFreeze(rig, ops, label, problems);
  checkCommits(rig, ops, label, problems);
  const model = buildModel(rig, ops, label, w.committedAt ?? Infinity, problems);
  checkOldKernel(kernel, kit, model, retainedIncoming, problems);
  checkSettled(rig, ops, problems);
  report(problems, ops, rig);
  watch(rig, next, nextLabel);
  await checkHandover(next, kit, model, problems);
  report(problems, ops, rig);
}

/**
 * A command of weight `weight` for fc.oneof: `{ k }`, plus one value from each of `fields`
 * (generated in their order, after `k`).
 */
function command<K extends string>(weight: number, k: K): fc.WeightedArbitrary<{ k: K }>;
function command<K extends string, F extends object>(
  weight: number,
  k: K,
  fields: { [P in keyof F]: fc.Arbitrary<F[P]> },
): fc.WeightedArbitrary<{ k: K } & F>;
function command(
  weight: number,
  k: string,
  fields?: Record<string, fc.Arbitrary<unknown>>,
): fc.WeightedArbitrary<unknown> {
  const arbitrary = fields === undefined ? fc.constant({ k }) : fc.record({ k: fc.constant(k), ...fields });
  return { weight, arbitrary };
}

/** What every phase's input holds besides its own fields. */
interface PhaseInput<C> {
  readonly cmds: C[];
  readonly kexecDelay: number;
  readonly fault: number | undefined;
}

/**
 * A phase's inputs: its own `fields`, then up to `maxCmds` commands, the kexec's delay in
 * scheduled steps and the token whose freeze fails, if any (generated in that order).
 */
function phase<F extends object, C>(
  fields: { [P in keyof F]: fc.Arbitrary<F[P]> },
  cmd: fc.Arbitrary<C>,
  maxCmds: number,
): fc.Arbitrary<F & PhaseInput<C>> {
  // fc.record types the spread of a generic model as its fixed fields only.
  return fc.record({
    ...fields,
    cmds: fc.array(cmd, { maxLength: maxCmds }),
    kexecDelay: fc.nat(8),
    fault: fc.option(fc.nat(2), { nil: undefined }),
  }) as fc.Arbitrary<F & PhaseInput<C>>;
}

/** A rig on scheduler `s` with its race kit and the extra handler, and a first kernel with the kit. */
async function bootRig(
  s: fc.Scheduler,
): Promise<{ rig: Rig; kit: RaceKit; extra: ReturnType<typeof extraKit>; k1: Kernel }> {
  const rig = new Rig(s);
  const kit = raceKit(rig);
  const extra = extraKit();
  const k1 = await new Machine({ memory: MEMORY }).boot({ plugins: [kit.plugin] });
  return { rig, kit, extra, k1 };
}

// ---------------------------------------------------------------------------------------------
// Phase A: the old kernel — create, preserve, close, registration, kexec

type CmdA =
  | { k: "preserve"; s: number; file: number; token: number }
  | { k: "close"; s: number }
  | { k: "register" }
  | { k: "registerFlb" }
  | { k: "unregister" };

const cmdA: fc.Arbitrary<CmdA> = fc.oneof(
  command(5, "preserve", { s: fc.nat(2), file: fc.nat(3), token: fc.nat(2) }),
  command(2, "close", { s: fc.nat(2) }),
  command(1, "register"),
  command(1, "registerFlb"),
  command(1, "unregister"),
);

const phaseA = phase({ sessions: fc.integer({ min: 1, max: 3 }) }, cmdA, 6);

async function runPhaseA(s: fc.Scheduler, input: { sessions: number } & PhaseInput<CmdA>): Promise<void> {
  const { rig, kit, extra, k1 } = await bootRig(s);
  watch(rig, k1, "k1");
  const luo = k1.liveupdate;
  const p = k1.spawn("vmm");
  const files = installFiles(p, "f", ["file 0", "file 1", "file 2", "file 3"]);
  const run = arm(rig, kit, k1, "k1", input.fault);
  const { ops, problems } = run;
  const names = Array.from({ length: input.sessions }, (_, i) => `A${i}`);
  const creates = createSessions(run, names);
  const closed = new Set<number>();
  for (const cmd of input.cmds) {
    if (cmd.k === "preserve") {
      const i = cmd.s % names.length;
      preserveInstalled(run, p, files[cmd.file]!, names[i]!, creates[i]!, BigInt(cmd.token));
    } else if (cmd.k === "close") {
      const i = cmd.s % names.length;
      if (closed.has(i)) continue; // a session fd is released once
      closed.add(i);
      afterSession(run, "closeOut", `close ${names[i]}`, names[i]!, creates[i]!, (sess) =>
        luo.releaseSession(sess),
      );
    } else if (cmd.k === "register") {
      ops.now({ label: "register extra handler", kind: "register", kernel: "k1" }, () =>
        luo.registry.registerHandler(extra.handler),
      );
    } else if (cmd.k === "registerFlb") {
      ops.now({ label: "register extra FLB", kind: "registerFlb", kernel: "k1" }, () =>
        luo.registry.registerFlb(extra.handler, extra.flb),
      );
    } else {
      ops.now({ label: "unregister extra handler", kind: "unregister", kernel: "k1" }, () =>
        luo.registry.unregisterHandler(extra.handler),
      );
    }
  }
  const kexec = await kexecAndDrain(run, input.kexecDelay);

  let next: Kernel;
  if (kexec.state === "ok") {
    next = kexec.value as Kernel;
  } else {
    // Property 3: the failed reboot left the kernel and every session usable.
    expectFailedReboot(run);
    const w = freezeWindows(rig, "k1");
    next = await retryAfterFailedReboot(run, p);
    if (w.windows.length !== 1 || w.windows[0]!.end === Infinity)
      problems.push("the failed reboot did not release the lock once");
  }
  await checkOutcome(run, next, "k2", 0);
}

// ---------------------------------------------------------------------------------------------
// Phase B: the new kernel — retrieve, retrieve-fd, finish, close, re-preserve, kexec

type CmdB =
  | { k: "retrieveFd"; x: number; token: number }
  | { k: "finish"; x: number }
  | { k: "closeIn"; x: number }
  | { k: "preserveRetrieved"; y: number; r: number; token: number }
  | { k: "preserveFresh"; y: number; file: number; token: number }
  | { k: "closeOut"; y: number }
  | { k: "register" };

const cmdB: fc.Arbitrary<CmdB> = fc.oneof(
  command(4, "retrieveFd", { x: fc.nat(1), token: fc.nat(2) }),
  command(2, "finish", { x: fc.nat(1) }),
  command(1, "closeIn", { x: fc.nat(1) }),
  command(3, "preserveRetrieved", { y: fc.nat(1), r: fc.nat(5), token: fc.nat(2) }),
  command(2, "preserveFresh", { y: fc.nat(1), file: fc.nat(1), token: fc.nat(2) }),
  command(1, "closeOut", { y: fc.nat(1) }),
  command(1, "register"),
);

const phaseB = phase(
  {
    incoming: fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 1, maxLength: 2 }),
    outgoing: fc.integer({ min: 1, max: 2 }),
  },
  cmdB,
  7,
);

async function runPhaseB(
  s: fc.Scheduler,
  input: { incoming: number[]; outgoing: number } & PhaseInput<CmdB>,
): Promise<void> {
  const { rig, kit, extra, k1 } = await bootRig(s);
  // Serial setup: the old kernel hands over sessions X<i> with files 0..n-1.
  const p = k1.spawn("vmm");
  const xNames = input.incoming.map((_, i) => `X${i}`);
  const original = (x: string, t: bigint) => `${x} file ${t}`;
  for (const [i, n] of input.incoming.entries()) {
    const sess = await k1.liveupdate.createSession(xNames[i]!);
    for (let t = 0n; t < BigInt(n); t++) {
      const fd = p.installFile(new TestFile(`x${i}.${t}`, enc(original(xNames[i]!, t))));
      await k1.liveupdate.preserveFd(sess, p, fd, t);
    }
  }
  const k2 = (await k1.kexec()) as Kernel;
  watch(rig, k2, "k2");
  const luo = k2.liveupdate;
  const q = k2.spawn("vmm");
  await q.openLiveUpdate();
  const fresh = installFiles(q, "fresh", ["fresh 0", "fresh 1"]);
  const run = arm(rig, kit, k2, "k2", input.fault);
  const { ops, problems } = run;
  const usedX = new Set(input.cmds.flatMap((c) => ("x" in c ? [c.x % xNames.length] : [])));
  const retrieves = new Map<number, Op>();
  for (const i of [...usedX].sort()) {
    retrieves.set(
      i,
      ops.now(
        { label: `retrieve ${xNames[i]}`, kind: "retrieveSession", kernel: "k2", session: xNames[i] },
        () => luo.retrieveSession(xNames[i]!),
      ),
    );
  }
  const yNames = Array.from({ length: input.outgoing }, (_, i) => `Y${i}`);
  const creates = createSessions(run, yNames);
  const retrieveFds: { op: Op; session: string; token: bigint }[] = [];
  const closedX = new Set<number>();
  const closedY = new Set<number>();
  for (const cmd of input.cmds) {
    if (cmd.k === "retrieveFd") {
      const i = cmd.x % xNames.length;
      const token = BigInt(cmd.token);
      const spec = {
        label: `retrieveFd ${xNames[i]}/${token}#${retrieveFds.length}`,
        kind: "retrieveFd" as const,
        kernel: "k2",
        session: xNames[i],
        token,
      };
      const op = ops.after<Session>(spec, retrieves.get(i)!, (sess) => luo.retrieveFile(sess, token));
      retrieveFds.push({ op, session: xNames[i]!, token });
    } else if (cmd.k === "finish") {
      const i = cmd.x % xNames.length;
      afterSession(run, "finish", `finish ${xNames[i]}`, xNames[i]!, retrieves.get(i)!, (sess) =>
        luo.finish(sess),
      );
    } else if (cmd.k === "closeIn") {
      const i = cmd.x % xNames.length;
      if (closedX.has(i)) continue;
      closedX.add(i);
      afterSession(run, "closeIn", `close ${xNames[i]}`, xNames[i]!, retrieves.get(i)!, (sess) =>
        luo.releaseSession(sess),
      );
    } else if (cmd.k === "preserveRetrieved") {
      if (retrieveFds.length === 0) continue;
      const src = retrieveFds[cmd.r % retrieveFds.length]!;
      const y = cmd.y % yNames.length;
      const token = BigInt(cmd.token);
      const spec = {
        label: `preserve retrieved ${src.session}/${src.token} as ${yNames[y]}/${token}`,
        kind: "preserve" as const,
        kernel: "k2",
        session: yNames[y],
        token,
        content: () => original(src.session, src.token),
        source: { session: src.session, token: src.token },
      };
      const both: Promise<typeof SKIP | [Session, KernelFile]> = Promise.all([
        creates[y]!.promise,
        src.op.promise,
      ]).then(
        ([sess, file]) => (sess === SKIP || file === SKIP ? SKIP : [sess as Session, file as KernelFile]),
        () => SKIP,
      );
      ops.track(
        spec,
        both.then((v): Promise<unknown> | typeof SKIP =>
          typeof v === "symbol"
            ? SKIP
            : ops.start(spec.label).then(() => luo.preserveFd(v[0], q, q.installFile(v[1].get()), token)),
        ),
      );
    } else if (cmd.k === "preserveFresh") {
      const y = cmd.y % yNames.length;
      preserveInstalled(run, q, fresh[cmd.file]!, yNames[y]!, creates[y]!, BigInt(cmd.token));
    } else if (cmd.k === "closeOut") {
      const y = cmd.y % yNames.length;
      if (closedY.has(y)) continue;
      closedY.add(y);
      afterSession(run, "closeOut", `close ${yNames[y]}`, yNames[y]!, creates[y]!, (sess) =>
        luo.releaseSession(sess),
      );
    } else {
      ops.now({ label: "register extra handler", kind: "register", kernel: "k2" }, () =>
        luo.registry.registerHandler(extra.handler),
      );
    }
  }
  const kexec = await kexecAndDrain(run, input.kexecDelay);

  // Retrieved files: the original content, and the same file object for every retrieve of a token.
  const byToken = new Map<string, KernelFile>();
  for (const r of retrieveFds) {
    if (r.op.state !== "ok") continue;
    const file = r.op.value as TestFile;
    const k = key(r.session, r.token);
    if (byToken.has(k) && byToken.get(k) !== file) problems.push(`retrieveFd ${k} returned two file objects`);
    byToken.set(k, file);
    if (dec(file.content) !== original(r.session, r.token)) problems.push(`retrieveFd ${k}: wrong content`);
  }
  // A retrieved file is preserved again only after its session's FINISH released it.
  for (const op of ops.all) {
    if (op.kind !== "preserve" || op.state !== "ok" || !op.source) continue;
    const finished = rig.trace.find(
      (e) =>
        e.kernel === "k2" &&
        e.what === "file:finished" &&
        e.session === op.source!.session &&
        e.token === op.source!.token,
    );
    const preserved = rig.trace.find(
      (e) =>
        e.kernel === "k2" && e.what === "file:preserved" && e.session === op.session && e.token === op.token,
    );
    if (!finished || !preserved || finished.seq > preserved.seq)
      problems.push(`${op.label} succeeded before the retrieved file was finished`);
  }

  let next: Kernel;
  if (kexec.state === "ok") {
    next = kexec.value as Kernel;
  } else {
    // Property 3: finish and close the incoming sessions, preserve more, kexec again.
    expectFailedReboot(run);
    for (const [i, r] of retrieves) {
      if (r.state !== "ok" || closedX.has(i)) continue;
      const sess = r.value as Session;
      const f = ops.track(
        { label: `finish ${sess.name} after failure`, kind: "finish", kernel: "k2", session: sess.name },
        luo.finish(sess),
      );
      await drive(rig, f.promise, f.label);
      const c = ops.track(
        { label: `close ${sess.name} after failure`, kind: "closeIn", kernel: "k2", session: sess.name },
        luo.releaseSession(sess),
      );
      await drive(rig, c.promise, c.label);
    }
    next = await retryAfterFailedReboot(run, q);
  }
  // Incoming sessions are never carried: only the Y sessions (and R) may come over.
  // Retrieved-but-not-finished incoming files stay owned by the old kernel until it halts.
  const retrieved = new Set<string>();
  for (const e of rig.trace) {
    if (e.kernel !== "k2") continue;
    if (e.what === "file:retrieved") retrieved.add(key(e.session, e.token));
    if (e.what === "file:finished") retrieved.delete(key(e.session, e.token));
  }
  await checkOutcome(run, next, "k3", retrieved.size);
}

// ---------------------------------------------------------------------------------------------

/** Generous per-test limit that scales with the number of runs (~5 ms each here). */
const TIMEOUT = Math.max(120_000, RUNS * 30);

const params: { numRuns: number; seed?: number; path?: string } = {
  numRuns: RUNS,
  ...(SEED === undefined ? {} : { seed: SEED }),
  ...(PATH === undefined ? {} : { path: PATH }),
};

/** Checks `run` on RUNS inputs from `inputs` under fast-check's scheduler; logs how long it took. */
async function explore<T>(
  what: string,
  inputs: fc.Arbitrary<T>,
  run: (s: fc.Scheduler, input: T) => Promise<void>,
): Promise<void> {
  const t0 = performance.now();
  await fc.assert(
    fc.asyncProperty(fc.scheduler(), inputs, (s, input) => run(s, input)),
    params,
  );
  console.log(`race (${what}): ${RUNS} runs in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

describe(`race exploration (${RUNS} runs per property)`, () => {
  it(
    "old kernel: create / preserve / close / registration interleaved with kexec",
    () => explore("old kernel", phaseA, runPhaseA),
    TIMEOUT,
  );

  it(
    "new kernel: retrieve / retrieve-fd / finish / close / re-preserve interleaved with kexec",
    () => explore("new kernel", phaseB, runPhaseB),
    TIMEOUT,
  );
});

// Minimal reproductions of what the exploration found, deterministic (no scheduler needed: the
// synchronous test handler suffices). The operation is issued while the session's close is in
// progress, i.e. after it in any serial order, so it must fail with EBADF like any operation on
// a closed session (core.ts requireKind) — and must not commit.
describe("session close racing another operation on the same session", () => {
  it("a PRESERVE_FD issued while its outgoing session closes fails with EBADF and leaks nothing", async () => {
    const plugin = testHandlerPlugin({ flbs: 1 });
    const k = await new Machine({ memory: MEMORY }).boot({ plugins: [plugin] });
    const luo = k.liveupdate;
    const p = k.spawn("vmm");
    const fd = createTestFile(p, "f");
    const baseline = k.machine.stats();
    const s = await luo.createSession("A");
    const close = luo.releaseSession(s);
    const preserve = luo.preserveFd(s, p, fd, 1);
    await expect(close).resolves.toBeUndefined();
    await rejects(preserve, "EBADF");
    expect(plugin.control.calls("preserve")).toEqual([]);
    expect(luo.stats()).toEqual({ outgoingSessions: 0, incomingSessions: 0, ownedFiles: 0 });
    expect(luo.flbs.state(plugin.testFlbs[0]!)!.outCount).toBe(0);
    expect(k.machine.stats()).toEqual(baseline);
  });

  it("a FINISH or RETRIEVE_FD issued while its incoming session closes fails with EBADF", async () => {
    const plugin = testHandlerPlugin({ flbs: 1 });
    const k1 = await new Machine({ memory: MEMORY }).boot({ plugins: [plugin] });
    const p = k1.spawn("vmm");
    await k1.liveupdate.preserveFd(await k1.liveupdate.createSession("A"), p, createTestFile(p, "f"), 1);
    const k2 = (await k1.kexec()) as Kernel;
    await k2.spawn("vmm").openLiveUpdate();
    const luo = k2.liveupdate;
    const events: string[] = [];
    luo.events.on("session:closed", () => events.push("closed"));
    luo.events.on("session:finished", () => events.push("finished"));
    const s = await luo.retrieveSession("A");
    const close = luo.releaseSession(s);
    const finish = luo.finish(s);
    const retrieve = luo.retrieveFile(s, 1);
    await expect(close).resolves.toBeUndefined();
    const outcomes = await Promise.allSettled([finish, retrieve]);
    expect(
      outcomes.map((o) => (o.status === "rejected" ? (o.reason as LiveUpdateError).code : "ok")),
    ).toEqual(["EBADF", "EBADF"]);
    expect(events).toEqual(["closed"]);
    expect(s.state).toBe("closed");
  });
});
