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
  Kernel,
  type LiveUpdateDevice,
  type Plugin,
  type Process,
  type SessionHandle,
} from "@luo/core";
import { preflight } from "./preflight.js";
import { MAPPING_VERSION, preserveMapping, type LuodMapping } from "./mapping.js";
import {
  barrierVerdict,
  refusal,
  runBarrier,
  type BarrierParty,
  type UpdateFailure,
  type UpdateResult,
} from "./barrier.js";
import { Handback } from "./handback.js";
import { checkOptions } from "./options.js";
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
import type { LuodStatus } from "./status.js";

/** Options of {@link startLuod}. */
export interface LuodOptions {
  /** Socket path (default {@link LUOD_SOCKET_PATH}). */
  readonly socketPath?: string;
  /** Plugins of the next kernel (default: the running kernel's). */
  readonly nextPlugins?: readonly Plugin[];
  /** kexec into this machine image instead of booting the next kernel in this process. */
  readonly saveTo?: string;
  /**
   * Machine time (ns) that passes between the old kernel's halt and the next kernel's boot, for an
   * in-process kexec (`kexec({ gapNs })`; devices that keep running do their work in it). Not
   * with `saveTo`: the process that loads the image decides how much time passes. Default 0.
   */
  readonly gapNs?: number | bigint;
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

/** One client connection. */
interface Conn extends BarrierParty {
  readonly fd: number;
  readonly reader: LineReader;
  name: string | undefined;
  role: ClientRole | undefined;
  open: boolean;
}

/**
 * Starts luod on `kernel` (see the module comment). Errors: `EBUSY` (/dev/liveupdate is open), the
 * errors of the previous luod's sessions at retrieval.
 */
export async function startLuod(kernel: Kernel, options: LuodOptions = {}): Promise<Luod> {
  if (!(kernel instanceof Kernel))
    throw new LiveUpdateError("EINVAL", "startLuod: the first argument is not a Kernel");
  checkOptions("startLuod", options, {
    socketPath: "string",
    nextPlugins: "array",
    saveTo: "string",
    gapNs: "ns",
    barrierTimeoutMs: "ms",
    reclaimTimeoutMs: "ms",
    clientLost: ["continue", "abort"],
    onKexec: "function",
    log: "function",
  });
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
  private readonly handback: Handback;
  private ownOut: SessionHandle | undefined;
  private updates = 0;
  private phase: "serving" | "preparing" | "kexec" | "gone" = "serving";
  private listenFd = -1;
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
    this.handback = new Handback(proc, dev, (m) => this.log(m));
  }

  private log(message: string): void {
    this.messages.push(message);
    this.options.log?.(message);
  }

  /** @internal adopt the previous luod's sessions, then listen. */
  async start(): Promise<void> {
    await this.handback.adopt(this.options.reclaimTimeoutMs ?? 60_000);
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
    const sessions = this.handback.waitingFor(req.name);
    this.send(conn, {
      id: req.id,
      ok: true,
      version: LUOD_PROTOCOL_VERSION,
      liveupdateNumber: String(this.kernel.liveupdate.liveupdateNumber),
      kexecsCount: this.handback.kexecsCount,
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

  private retrieveSession(conn: Conn, id: number, name: string): void {
    const handle = this.handback.handOut(name, conn.name!);
    this.send(conn, { id, ok: true, name }, [handle.fd]);
  }

  private async done(conn: Conn, id: number, name: string): Promise<void> {
    const e = await this.handback.done(name, conn.name!);
    this.send(conn, { id, ok: true, name, state: e.state, reasons: e.reasons });
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

  // ---- the update --------------------------------------------------------------------------

  private mapping(): LuodMapping {
    const clients: Record<string, { sessions: string[] }> = {};
    for (const [name, { owner }] of this.outgoing) (clients[owner] ??= { sessions: [] }).sessions.push(name);
    return { version: MAPPING_VERSION, state: { kexecsCount: this.handback.kexecsCount + 1 }, clients };
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
    const abort = async (r: UpdateFailure): Promise<UpdateResult> => {
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
      const notify = (c: BarrierParty): void => this.send(c as Conn, { event: "prepare", update, timeoutMs });
      const outcomes = await runBarrier(targets, update, timeoutMs, notify);
      const { failed, lost } = barrierVerdict(targets, outcomes, this.options.clientLost ?? "continue");
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
    abort: (r: UpdateFailure) => Promise<UpdateResult>,
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
      next = await this.kernel.kexec(
        this.options.saveTo !== undefined
          ? { plugins, saveTo: this.options.saveTo }
          : { plugins, gapNs: this.options.gapNs ?? 0 },
      );
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

  private gone(): void {
    this.phase = "gone";
    this.handback.stop();
  }

  // ---- status and exit ---------------------------------------------------------------------

  /** What luod holds and, per incoming session, why it is not finished yet. */
  async status(): Promise<LuodStatus> {
    const connected = new Set([...this.conns].filter((c) => c.open).map((c) => c.name));
    return {
      version: LUOD_PROTOCOL_VERSION,
      liveupdateNumber: String(this.kernel.liveupdate.liveupdateNumber),
      kexecsCount: this.handback.kexecsCount,
      phase: this.phase,
      ownSession: this.handback.ownState,
      mappingError: this.handback.mappingError,
      clients: [...this.conns].filter((c) => c.open && c.name).map((c) => ({ name: c.name!, role: c.role! })),
      outgoing: [...this.outgoing].map(([name, e]) => ({
        name,
        owner: e.owner,
        connected: connected.has(e.owner),
      })),
      incoming: await this.handback.report(),
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
