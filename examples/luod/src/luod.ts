/**
 * luod: the live-update agent. It is the only opener of /dev/liveupdate, hands session fds to
 * VMMs over {@link LUOD_SOCKET_PATH} and kexecs while holding every session.
 *
 * Before an update: a client says `hello`, asks `create-session` and receives the session fd
 * (luod keeps its own copy); it preserves its own fds into it. `update` (luoctl or
 * {@link Luod.update}): luod writes its mapping (which client owns which session) into a sealed
 * memfd at token 0 of its own session `"luod"`, runs the pre-flight check (every compatible
 * handed over must be served by the next kernel's plugins; else it refuses and names what is
 * missing), tells every VMM client to `prepare` and waits for `ready` (barrier, with a
 * timeout), checks again (clients may have preserved more while preparing), then kexecs.
 * After the reboot the new luod retrieves `"luod"`, reads the mapping, retrieves every session in
 * it, and hands each to the client that reconnects under the owner's name; when every session
 * is done (the client said `done`, or its owner did not come back within the reclaim timeout
 * and luod closed it — an implicit FINISH, or stuck with the reasons shown), luod finishes its
 * own session.
 *
 * Unhappy paths: a refused pre-flight, a client that answers `fail` or not at all, or a freeze
 * failure (reported with session, token, compatible and error) abort the update: clients get
 * `resume`, luod's own session is closed (the mapping unpreserved) and every client session is
 * as it was. A client that disconnects loses its outgoing sessions (luod closes its copies; they
 * are unpreserved once the client's copies are closed too, which exit does); during a barrier
 * the update then continues or stops according to {@link LuodOptions.clientLost}. luod dying
 * ({@link Luod.exit}) closes every fd it holds; clients see the connection end and (by default)
 * close their session fds, so every preserved resource is the VMM's alone again.
 *
 * @module
 */
import {
  LiveUpdateError,
  isLiveUpdateError,
  type ErrnoCode,
  type Kernel,
  type LiveUpdateDevice,
  type Plugin,
  type Process,
  type SessionHandle,
} from "@luo/core";
import { preflight, type MissingCompatible } from "./preflight.js";
import { MAPPING_VERSION, preserveMapping, retrieveMapping, type LuodMapping } from "./mapping.js";
import {
  LineReader,
  LUOD_PROTOCOL_VERSION,
  LUOD_SESSION,
  LUOD_SOCKET_PATH,
  MAX_REQUEST_BYTES,
  encodeLine,
  errorReply,
  parseRequest,
  type ClientRole,
  type Request,
} from "./protocol.js";
import { incomingStatus, type IncomingEntry, type IncomingState, type LuodStatus } from "./status.js";

/** Options of {@link startLuod}. */
export interface LuodOptions {
  /** Socket path (default {@link LUOD_SOCKET_PATH}). */
  readonly socketPath?: string;
  /** Plugins of the next kernel (default: the running kernel's). */
  readonly nextPlugins?: readonly Plugin[];
  /** kexec into this machine image instead of booting the next kernel in this process. */
  readonly saveTo?: string;
  /** How long clients have to answer `prepare` (default 10 000 ms). */
  readonly barrierTimeoutMs?: number;
  /** How long incoming sessions wait for their owners after boot (default 60 000 ms). */
  readonly reclaimTimeoutMs?: number;
  /** A client lost during the barrier: `"continue"` the update without it (default) or `"abort"`. */
  readonly clientLost?: "continue" | "abort";
  /** Runs after a successful kexec with the next kernel (undefined with `saveTo`). */
  readonly onKexec?: (next: Kernel | undefined) => void | Promise<void>;
  /** Operator messages (also kept in {@link Luod.messages}). */
  readonly log?: (message: string) => void;
}

/** A client lost or refusing during the barrier. */
export interface BarrierFailure {
  readonly client: string;
  readonly reason: string;
}

/** What {@link Luod.update} resolves to. */
export type UpdateResult =
  | {
      readonly ok: true;
      readonly update: number;
      readonly kernel: Kernel | undefined;
      readonly lost: readonly string[];
    }
  | {
      readonly ok: false;
      readonly update: number;
      readonly stage: "busy" | "preflight" | "barrier" | "kexec";
      readonly code: ErrnoCode;
      readonly error: string;
      readonly missing?: readonly MissingCompatible[];
      readonly failed?: readonly BarrierFailure[];
      readonly freeze?: { readonly session: string; readonly token: string; readonly compatible: string };
    };

type Outcome = { kind: "ready" } | { kind: "fail" | "timeout" | "lost"; reason: string };

interface Conn {
  readonly fd: number;
  readonly reader: LineReader;
  name: string | undefined;
  role: ClientRole | undefined;
  open: boolean;
  prepare: { update: number; resolve: (o: Outcome) => void } | undefined;
}

/** Starts luod on `kernel` (see the module comment). Errors: `EBUSY` (/dev/liveupdate is open), `EADDRINUSE`. */
export async function startLuod(kernel: Kernel, options: LuodOptions = {}): Promise<Luod> {
  const proc = kernel.spawn("luod");
  try {
    const dev = await proc.openLiveUpdate();
    const luod = new Luod(kernel, proc, dev, options);
    await luod.start();
    return luod;
  } catch (e) {
    proc.exit();
    throw e;
  }
}

/** A running luod. */
export class Luod {
  /** Operator messages, oldest first. */
  readonly messages: string[] = [];
  /**
   * Resolves with the next kernel once an update kexec'd (undefined with `saveTo`), after
   * {@link LuodOptions.onKexec} ran: where the caller starts the next luod.
   */
  readonly next: Promise<Kernel | undefined>;
  private resolveNext!: (k: Kernel | undefined) => void;
  private readonly conns = new Set<Conn>();
  private readonly outgoing = new Map<string, { owner: string; handle: SessionHandle }>();
  private readonly incoming = new Map<string, IncomingEntry>();
  private own: SessionHandle | undefined;
  private ownState: "none" | "waiting" | "finished" | "failed" = "none";
  private ownOut: SessionHandle | undefined;
  private mappingError: string | undefined;
  private kexecsCount = 0;
  private updates = 0;
  private phase: "serving" | "preparing" | "kexec" | "gone" = "serving";
  private listenFd = -1;
  private reclaimTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly path: string;

  /** @internal use {@link startLuod} */
  constructor(
    readonly kernel: Kernel,
    /** luod's process. */
    readonly proc: Process,
    private readonly dev: LiveUpdateDevice,
    private readonly options: LuodOptions,
  ) {
    this.path = options.socketPath ?? LUOD_SOCKET_PATH;
    this.next = new Promise((resolve) => (this.resolveNext = resolve));
  }

  private log(message: string): void {
    this.messages.push(message);
    this.options.log?.(message);
  }

  /** @internal adopt the previous luod's sessions, then listen. */
  async start(): Promise<void> {
    await this.adoptIncoming();
    const { proc } = this;
    this.listenFd = proc.socket();
    try {
      proc.unlink(this.path); // a stale socket of a luod that died on this kernel
    } catch (e) {
      if (!isLiveUpdateError(e, "ENOENT")) throw e;
    }
    proc.bind(this.listenFd, this.path);
    proc.listen(this.listenFd);
    void this.acceptLoop();
    if ([...this.incoming.values()].some((e) => e.state === "waiting")) {
      this.reclaimTimer = setTimeout(() => void this.reclaim(), this.options.reclaimTimeoutMs ?? 60_000);
    }
  }

  private async adoptIncoming(): Promise<void> {
    try {
      this.own = await this.dev.retrieveSession(LUOD_SESSION);
    } catch (e) {
      if (isLiveUpdateError(e, "ENOENT")) return; // cold boot, or no luod before this kernel
      throw e;
    }
    this.ownState = "waiting";
    let mapping: LuodMapping;
    try {
      mapping = await retrieveMapping(this.proc, this.own);
    } catch (e) {
      this.mappingError = (e as Error).message;
      this.log(`cannot read the previous luod's mapping: ${this.mappingError}`);
      await this.finishOwn();
      return;
    }
    this.kexecsCount = mapping.state.kexecsCount;
    for (const [owner, { sessions }] of Object.entries(mapping.clients)) {
      for (const name of sessions) {
        try {
          const handle = await this.dev.retrieveSession(name);
          this.incoming.set(name, { owner, handle, state: "waiting", reasons: [] });
        } catch (e) {
          const reason = `not retrievable: ${(e as Error).message}`;
          this.incoming.set(name, { owner, handle: undefined, state: "lost", reasons: [reason] });
          this.log(`session "${name}" of ${owner} ${reason}`);
        }
      }
    }
    await this.maybeFinishOwn();
  }

  // ---- connections --------------------------------------------------------------------------

  private async acceptLoop(): Promise<void> {
    for (;;) {
      let fd: number;
      try {
        fd = await this.proc.accept(this.listenFd);
      } catch {
        return; // luod exited or the kernel was replaced
      }
      const conn: Conn = {
        fd,
        reader: new LineReader(MAX_REQUEST_BYTES),
        name: undefined,
        role: undefined,
        open: true,
        prepare: undefined,
      };
      this.conns.add(conn);
      void this.serve(conn);
    }
  }

  private async serve(conn: Conn): Promise<void> {
    try {
      for (;;) {
        const m = await this.proc.recvmsg(conn.fd, 65536, { maxFds: 0 }); // clients send no fds
        if (m.data.length === 0) break;
        for (const line of conn.reader.push(m.data)) await this.handleLine(conn, line.text, line.size);
      }
    } catch (e) {
      if (
        !isLiveUpdateError(e, "ESHUTDOWN") &&
        !isLiveUpdateError(e, "ESRCH") &&
        !isLiveUpdateError(e, "EBADF")
      )
        this.log(`connection of ${conn.name ?? "unnamed client"}: ${(e as Error).message}`);
    }
    await this.dropClient(conn);
  }

  private send(conn: Conn, msg: object, fds: number[] = []): void {
    if (!conn.open) return;
    try {
      this.proc.sendmsg(conn.fd, encodeLine(msg), fds);
    } catch {
      // The client is gone (EPIPE) or luod is: its read loop notices and cleans up.
    }
  }

  private async handleLine(conn: Conn, text: string | undefined, size: number): Promise<void> {
    if (text === undefined) {
      const err = new LiveUpdateError("EMSGSIZE", `request of ${size} bytes exceeds ${MAX_REQUEST_BYTES}`);
      this.send(conn, errorReply(null, err));
      return;
    }
    let req: Request;
    try {
      req = parseRequest(text);
    } catch (e) {
      this.send(conn, errorReply(requestId(text), e));
      return;
    }
    try {
      if (req.op !== "hello" && conn.name === undefined) {
        throw new LiveUpdateError("EPROTO", `${req.op} before hello`);
      }
      await this.dispatch(conn, req);
    } catch (e) {
      this.send(conn, errorReply(req.id, e));
    }
  }

  private async dispatch(conn: Conn, req: Request): Promise<void> {
    switch (req.op) {
      case "hello":
        return this.hello(conn, req);
      case "create-session":
        return this.createSession(conn, req.id, req.name);
      case "retrieve-session":
        return this.retrieveSession(conn, req.id, req.name);
      case "done":
        return this.done(conn, req.id, req.name);
      case "ready":
      case "fail":
        return this.answer(conn, req);
      case "status":
        return this.send(conn, { id: req.id, ok: true, status: await this.status() });
      case "update":
        return this.updateRequest(conn, req.id, req.barrierTimeoutMs);
    }
  }

  private hello(conn: Conn, req: Extract<Request, { op: "hello" }>): void {
    if (conn.name !== undefined) throw new LiveUpdateError("EPROTO", "hello was already said");
    if (req.version !== LUOD_PROTOCOL_VERSION) {
      throw new LiveUpdateError(
        "EPROTO",
        `protocol version ${req.version} is not supported (${LUOD_PROTOCOL_VERSION})`,
      );
    }
    for (const c of this.conns) {
      if (c !== conn && c.open && c.name === req.name) {
        throw new LiveUpdateError("EBUSY", `client name ${req.name} is connected already`);
      }
    }
    conn.name = req.name;
    conn.role = req.role;
    const sessions = [...this.incoming].filter(([, e]) => e.owner === req.name && e.handle).map(([n]) => n);
    this.send(conn, {
      id: req.id,
      ok: true,
      version: LUOD_PROTOCOL_VERSION,
      liveupdateNumber: String(this.kernel.liveupdate.liveupdateNumber),
      kexecsCount: this.kexecsCount,
      sessions,
    });
  }

  private async createSession(conn: Conn, id: number, name: string): Promise<void> {
    if (conn.role !== "vmm") throw new LiveUpdateError("EPERM", "only vmm clients own sessions");
    if (name === LUOD_SESSION)
      throw new LiveUpdateError("EPERM", `session name "${LUOD_SESSION}" is luod's own`);
    if (this.phase !== "serving") throw new LiveUpdateError("EBUSY", "an update is in progress");
    let entry = this.outgoing.get(name);
    if (entry && entry.owner !== conn.name) {
      throw new LiveUpdateError("EEXIST", `session "${name}" belongs to ${entry.owner}`);
    }
    if (!entry) {
      entry = { owner: conn.name!, handle: await this.dev.createSession(name) };
      this.outgoing.set(name, entry);
      this.log(`session "${name}" created for ${conn.name}`);
    }
    this.send(conn, { id, ok: true, name }, [entry.handle.fd]);
  }

  private async retrieveSession(conn: Conn, id: number, name: string): Promise<void> {
    const e = this.incoming.get(name);
    if (!e) throw new LiveUpdateError("ENOENT", `no incoming session "${name}"`);
    if (e.owner !== conn.name) throw new LiveUpdateError("EPERM", `session "${name}" belongs to ${e.owner}`);
    if (!e.handle || (e.state !== "waiting" && e.state !== "handed")) {
      throw new LiveUpdateError("ENOENT", `incoming session "${name}" is ${e.state}`);
    }
    e.state = "handed";
    this.send(conn, { id, ok: true, name }, [e.handle.fd]);
  }

  private async done(conn: Conn, id: number, name: string): Promise<void> {
    const e = this.incoming.get(name);
    if (!e || e.owner !== conn.name || !e.handle) {
      throw new LiveUpdateError("ENOENT", `no incoming session "${name}" of ${conn.name}`);
    }
    await this.closeIncoming(name, e, "done");
    await this.maybeFinishOwn();
    this.send(conn, { id, ok: true, name, state: e.state, reasons: e.reasons });
  }

  /** Closes luod's copy of an incoming session; a veto of the implicit FINISH leaves it stuck. */
  private async closeIncoming(
    name: string,
    e: IncomingEntry,
    state: "done" | "reclaimed",
  ): Promise<IncomingState> {
    const handle = e.handle!;
    const before = await incomingStatus(handle); // the reasons, while the session can still be asked
    e.handle = undefined;
    try {
      await handle.close();
      e.state = state;
    } catch (err) {
      e.state = "stuck";
      e.reasons = [...before, (err as Error).message];
      this.log(`session "${name}" of ${e.owner} is stuck: ${e.reasons.join("; ")}`);
    }
    return e.state;
  }

  private answer(conn: Conn, req: Extract<Request, { op: "ready" | "fail" }>): void {
    const p = conn.prepare;
    if (!p || p.update !== req.update) {
      throw new LiveUpdateError("EINVAL", `no prepare ${req.update} is pending for ${conn.name}`);
    }
    conn.prepare = undefined;
    p.resolve(req.op === "ready" ? { kind: "ready" } : { kind: "fail", reason: req.reason });
    this.send(conn, { id: req.id, ok: true });
  }

  private async dropClient(conn: Conn): Promise<void> {
    if (!conn.open) return;
    conn.open = false;
    this.conns.delete(conn);
    conn.prepare?.resolve({ kind: "lost", reason: "disconnected" });
    conn.prepare = undefined;
    if (this.phase === "gone" || this.kernel.halted) return;
    try {
      this.proc.close(conn.fd);
    } catch {
      // luod itself exited
    }
    if (conn.role !== "vmm" || this.proc.hasExited) return;
    const lost = [...this.outgoing].filter(([, e]) => e.owner === conn.name);
    for (const [name] of lost) this.outgoing.delete(name); // before any await: the mapping is current
    for (const [, e] of lost) await e.handle.close().catch(() => undefined); // cannot fail (outgoing)
    if (lost.length > 0) {
      this.log(
        `client ${conn.name} disconnected: closed its sessions ${lost.map(([n]) => `"${n}"`).join(", ")}`,
      );
    }
  }

  // ---- after the reboot ------------------------------------------------------------------------

  private async reclaim(): Promise<void> {
    this.reclaimTimer = undefined;
    if (this.phase === "gone" || this.kernel.halted) return;
    for (const [name, e] of this.incoming) {
      if (e.state !== "waiting" && e.state !== "handed") continue;
      const was = e.state;
      if ((await this.closeIncoming(name, e, "reclaimed")) === "reclaimed") {
        this.log(
          `session "${name}" of ${e.owner} reclaimed after the timeout (${was === "waiting" ? "never reconnected" : "not done"})`,
        );
      }
    }
    await this.maybeFinishOwn();
  }

  private async maybeFinishOwn(): Promise<void> {
    if (this.ownState !== "waiting") return;
    if ([...this.incoming.values()].some((e) => e.state === "waiting" || e.state === "handed")) return;
    await this.finishOwn();
  }

  private async finishOwn(): Promise<void> {
    const own = this.own!;
    try {
      await own.finish();
      await own.close();
      this.ownState = "finished";
      this.own = undefined;
      this.log(`luod's own session finished`);
    } catch (e) {
      this.ownState = "failed";
      this.log(`finishing luod's own session failed: ${(e as Error).message}`);
    }
  }

  // ---- the update --------------------------------------------------------------------------

  private mapping(): LuodMapping {
    const clients: Record<string, { sessions: string[] }> = {};
    for (const [name, { owner }] of this.outgoing) (clients[owner] ??= { sessions: [] }).sessions.push(name);
    return { version: MAPPING_VERSION, state: { kexecsCount: this.kexecsCount + 1 }, clients };
  }

  private async closeOwnOutgoing(): Promise<void> {
    const s = this.ownOut;
    this.ownOut = undefined;
    if (s) await s.close();
  }

  private async writeMapping(): Promise<void> {
    await this.closeOwnOutgoing();
    const s = await this.dev.createSession(LUOD_SESSION);
    try {
      await preserveMapping(this.proc, s, this.mapping());
    } catch (e) {
      await s.close();
      throw e;
    }
    this.ownOut = s;
  }

  private async updateRequest(conn: Conn, id: number, barrierTimeoutMs: number | undefined): Promise<void> {
    if (conn.role !== "control")
      throw new LiveUpdateError("EPERM", "only control clients may start an update");
    const r = await this.update({
      barrierTimeoutMs,
      progress: (step) => this.send(conn, { event: "progress", id, step }),
    });
    if (!r.ok) this.send(conn, { id, ...r });
    // On success this kernel is gone, and with it the connection: the client sees it end.
  }

  /**
   * Runs an update: pre-flight, barrier, pre-flight again, kexec (see the module comment).
   * Resolves with the next kernel, or with why nothing happened (the old kernel keeps running
   * with every session as it was).
   */
  async update(
    opts: { barrierTimeoutMs?: number; progress?: (step: string) => void } = {},
  ): Promise<UpdateResult> {
    const update = ++this.updates;
    if (this.phase !== "serving") {
      return { ok: false, update, stage: "busy", code: "EBUSY", error: `luod is ${this.phase}` };
    }
    this.phase = "preparing";
    const nextPlugins = this.options.nextPlugins ?? this.kernel.plugins;
    const progress = opts.progress ?? (() => {});
    let prepared: Conn[] = [];
    const abort = async (r: Extract<UpdateResult, { ok: false }>): Promise<UpdateResult> => {
      for (const c of prepared) {
        c.prepare = undefined;
        this.send(c, { event: "resume", update, reason: r.error });
      }
      await this.closeOwnOutgoing().catch(() => undefined);
      this.phase = "serving";
      this.log(`update ${update} aborted (${r.stage}): ${r.error}`);
      return r;
    };
    try {
      await this.writeMapping();
      let pf = await preflight(this.kernel, nextPlugins);
      if (!pf.ok) return abort(refusal(update, pf.missing));
      progress("preflight");
      const targets = [...this.conns].filter((c) => c.open && c.role === "vmm");
      prepared = targets;
      const timeoutMs = opts.barrierTimeoutMs ?? this.options.barrierTimeoutMs ?? 10_000;
      const outcomes = await this.barrier(update, targets, timeoutMs);
      const failed: BarrierFailure[] = [];
      const lost: string[] = [];
      outcomes.forEach((o, i) => {
        const client = targets[i]!.name!;
        if (o.kind === "lost") lost.push(client);
        if (
          o.kind === "fail" ||
          o.kind === "timeout" ||
          (o.kind === "lost" && this.options.clientLost === "abort")
        ) {
          failed.push({
            client,
            reason: o.kind === "timeout" ? `no answer within ${timeoutMs} ms` : o.reason,
          });
        }
      });
      if (failed.length > 0) {
        const error = `barrier failed: ${failed.map((f) => `${f.client} (${f.reason})`).join(", ")}`;
        return abort({ ok: false, update, stage: "barrier", code: "EAGAIN", error, failed });
      }
      progress("barrier");
      if (lost.length > 0) await this.writeMapping(); // the lost clients' sessions are gone
      pf = await preflight(this.kernel, nextPlugins);
      if (!pf.ok) return abort(refusal(update, pf.missing));
      return await this.kexec(update, nextPlugins, lost, progress, abort);
    } catch (e) {
      const err = e instanceof LiveUpdateError ? e : new LiveUpdateError("EIO", String(e));
      if (this.kernel.halted) throw err;
      return abort({ ok: false, update, stage: "kexec", code: err.code, error: err.message });
    }
  }

  private async kexec(
    update: number,
    plugins: readonly Plugin[],
    lost: readonly string[],
    progress: (step: string) => void,
    abort: (r: Extract<UpdateResult, { ok: false }>) => Promise<UpdateResult>,
  ): Promise<UpdateResult> {
    progress("kexec");
    this.phase = "kexec";
    let freeze: { session: string; token: string; compatible: string } | undefined;
    const onFreezeFail = (e: { session: string; token: bigint; compatible: string }): void => {
      freeze = { session: e.session, token: String(e.token), compatible: e.compatible };
    };
    const events = this.kernel.liveupdate.events;
    events.on("file:freeze-failed", onFreezeFail);
    let next: Kernel | undefined;
    try {
      next = await this.kernel.kexec({ plugins, saveTo: this.options.saveTo });
    } catch (e) {
      const err = e as LiveUpdateError;
      const where = freeze
        ? ` (session "${freeze.session}", token ${freeze.token}, ${freeze.compatible})`
        : "";
      return abort({
        ok: false,
        update,
        stage: "kexec",
        code: err.code,
        error: `${err.message}${where}`,
        freeze,
      });
    } finally {
      events.off("file:freeze-failed", onFreezeFail);
    }
    this.gone();
    await this.options.onKexec?.(next);
    this.resolveNext(next);
    return { ok: true, update, kernel: next, lost };
  }

  private barrier(update: number, targets: readonly Conn[], timeoutMs: number): Promise<Outcome[]> {
    const waits = targets.map(
      (c) =>
        new Promise<Outcome>((resolve) => {
          c.prepare = { update, resolve };
        }),
    );
    for (const c of targets) this.send(c, { event: "prepare", update, timeoutMs });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
    void timeout.then(() => {
      for (const c of targets) {
        const p = c.prepare;
        if (p && p.update === update) {
          c.prepare = undefined;
          p.resolve({ kind: "timeout", reason: "timeout" });
        }
      }
    });
    return Promise.all(waits).finally(() => clearTimeout(timer));
  }

  private gone(): void {
    this.phase = "gone";
    if (this.reclaimTimer) clearTimeout(this.reclaimTimer);
    this.reclaimTimer = undefined;
  }

  // ---- status and exit ---------------------------------------------------------------------

  /** What luod holds and, per incoming session, why it is not finished yet. */
  async status(): Promise<LuodStatus> {
    const incoming = [];
    for (const [name, e] of this.incoming) {
      let reasons = e.reasons;
      if (e.handle) {
        const why = e.state === "waiting" ? `${e.owner} has not reconnected` : `${e.owner} has not said done`;
        reasons = [why, ...(await incomingStatus(e.handle))];
      }
      incoming.push({ name, owner: e.owner, state: e.state, reasons });
    }
    const connected = new Set([...this.conns].filter((c) => c.open).map((c) => c.name));
    return {
      version: LUOD_PROTOCOL_VERSION,
      liveupdateNumber: String(this.kernel.liveupdate.liveupdateNumber),
      kexecsCount: this.kexecsCount,
      phase: this.phase,
      ownSession: this.ownState,
      mappingError: this.mappingError,
      clients: [...this.conns].filter((c) => c.open && c.name).map((c) => ({ name: c.name!, role: c.role! })),
      outgoing: [...this.outgoing].map(([name, e]) => ({
        name,
        owner: e.owner,
        connected: connected.has(e.owner),
      })),
      incoming,
    };
  }

  /**
   * luod dies: its process exits and every fd it holds closes (the listening socket, every
   * connection, every session copy, /dev/liveupdate). Sessions whose clients closed theirs are
   * released at once (outgoing: unpreserved; incoming: implicitly finished).
   */
  exit(): void {
    this.gone();
    this.proc.exit();
  }
}

/** The id of a request that failed validation, when it has a usable one. */
function requestId(text: string): number | null {
  try {
    const id = (JSON.parse(text) as { id?: unknown }).id;
    return Number.isSafeInteger(id) ? (id as number) : null;
  } catch {
    return null;
  }
}

function refusal(
  update: number,
  missing: readonly MissingCompatible[],
): Extract<UpdateResult, { ok: false }> {
  const list = missing.map((m) => `${m.kind} "${m.compatible}" (${m.users.join(", ")})`).join("; ");
  return {
    ok: false,
    update,
    stage: "preflight",
    code: "ENOENT",
    error: `the next kernel does not serve: ${list}`,
    missing,
  };
}
