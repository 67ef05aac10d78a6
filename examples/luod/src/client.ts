/**
 * The client side of the luod protocol, for VMMs (and luoctl): connect, get session fds by name,
 * answer the prepare barrier, and after the reboot reconnect and get the sessions back.
 *
 * ```ts
 * const luod = await connectLuod(vmm, { name: "vmm-0", onPrepare: () => pauseGuest() });
 * const session = await luod.createSession("vm-0"); // a SessionHandle in this process
 * await session.preserveFd(guestRam, 1n);           // the VMM preserves its own fds
 * // … luoctl update: onPrepare runs, its success answers "ready" (a throw answers "fail") …
 * // next kernel, new VMM process:
 * const again = await connectLuod(vmm2, { name: "vmm-0" });
 * const s2 = await again.retrieveSession("vm-0");
 * const ram = await s2.retrieveFd(1n);
 * await again.finishSession(s2); // FINISH, close, tell luod "done"
 * ```
 *
 * Replies are matched to requests by id; luod's events (`prepare`, `resume`, `progress`) are
 * dispatched as they come. When the connection ends before a kexec (luod died), every pending
 * request rejects with `ECONNRESET`, and with `onLuodLost: "close-sessions"` (the default) every
 * session fd this client received is closed, so outgoing sessions are unpreserved and the
 * VMM's resources are its own again. When the kernel is replaced, requests reject with
 * `ESHUTDOWN` and nothing is closed (the sessions are in the next kernel).
 *
 * @module
 */
import { LiveUpdateError, SessionHandle, isLiveUpdateError, type ErrnoCode, type Process } from "@luo/core";
import {
  LineReader,
  LUOD_PROTOCOL_VERSION,
  LUOD_SOCKET_PATH,
  encodeLine,
  type ClientRole,
  type LuodEvent,
} from "./protocol.js";
import type { LuodStatus } from "./status.js";
import { checkOptions } from "./options.js";
import type { UpdateFailure } from "./barrier.js";

/** Options of {@link connectLuod}. */
export interface LuodClientOptions {
  /** The client's name: sessions belong to it, and it reclaims them under it after a reboot. */
  readonly name: string;
  /** `"vmm"` (default: owns sessions, takes part in the barrier) or `"control"` (luoctl). */
  readonly role?: ClientRole;
  /** Socket path (default {@link LUOD_SOCKET_PATH}). */
  readonly path?: string;
  /**
   * Runs when luod asks to prepare for update `update`: quiesce and preserve what is left. Its
   * success answers `ready`; a throw answers `fail` with the error's message. Default: ready.
   */
  readonly onPrepare?: (update: number) => void | Promise<void>;
  /** Runs when an update was abandoned after `prepare`: the VMM resumes on this kernel. */
  readonly onResume?: (reason: string) => void;
  /** When luod goes away before a kexec: close every session fd received (default) or keep them. */
  readonly onLuodLost?: "close-sessions" | "keep";
  /** Runs once the connection to luod ended before a kexec (after the sessions were handled). */
  readonly onLuodLostCallback?: (error: LiveUpdateError) => void;
}

/** A reply line and the fds that came with it. */
interface Reply {
  readonly msg: Record<string, unknown>;
  readonly fds: number[];
}

/** What `hello` told the client. */
export interface HelloReply {
  readonly liveupdateNumber: string;
  readonly kexecsCount: number;
  /** Sessions from the previous kernel waiting for this client. */
  readonly sessions: readonly string[];
}

/** Connects to luod and says hello. Errors: the socket's (`ENOENT`, `ECONNREFUSED`), luod's reply. */
export async function connectLuod(proc: Process, options: LuodClientOptions): Promise<LuodClient> {
  checkOptions("connectLuod", options, {
    name: "string",
    role: ["vmm", "control"],
    path: "string",
    onPrepare: "function",
    onResume: "function",
    onLuodLost: ["close-sessions", "keep"],
    onLuodLostCallback: "function",
  });
  if (typeof options.name !== "string")
    throw new LiveUpdateError("EINVAL", "connectLuod: a name is required");
  const fd = proc.socket();
  try {
    proc.connect(fd, options.path ?? LUOD_SOCKET_PATH);
  } catch (e) {
    proc.close(fd);
    throw e;
  }
  const client = new LuodClient(proc, fd, options);
  try {
    const r = await client.request({
      op: "hello",
      version: LUOD_PROTOCOL_VERSION,
      name: options.name,
      role: options.role ?? "vmm",
    });
    client.hello = {
      liveupdateNumber: String(r.msg.liveupdateNumber),
      kexecsCount: Number(r.msg.kexecsCount),
      sessions: r.msg.sessions as string[],
    };
  } catch (e) {
    client.close();
    throw e;
  }
  return client;
}

/** A connection to luod (see the module comment). */
export class LuodClient {
  /** What luod said to hello. */
  hello: HelloReply = { liveupdateNumber: "0", kexecsCount: 0, sessions: [] };
  /** Error replies luod could not tie to a request (to malformed lines). */
  readonly unmatched: Record<string, unknown>[] = [];
  /** Settles when the connection ended (with the error that ended it). */
  readonly ended: Promise<LiveUpdateError>;
  private readonly pending = new Map<
    number,
    { resolve: (r: Reply) => void; reject: (e: unknown) => void; progress?: (step: string) => void }
  >();
  private readonly sessions: SessionHandle[] = [];
  private nextId = 1;
  private open = true;

  /** @internal use {@link connectLuod} */
  constructor(
    readonly proc: Process,
    /** The connection's fd. */
    readonly fd: number,
    private readonly options: LuodClientOptions,
  ) {
    this.ended = this.readLoop();
  }

  /** Sends a request and waits for its reply; rejects with luod's error code and message. */
  request(body: Record<string, unknown>, progress?: (step: string) => void): Promise<Reply> {
    if (!this.open)
      return Promise.reject(new LiveUpdateError("ECONNRESET", "the connection to luod is closed"));
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, progress });
      try {
        this.proc.send(this.fd, encodeLine({ id, ...body }));
      } catch (e) {
        this.pending.delete(id);
        reject(e);
      }
    }).then((r) => {
      if (r.msg.ok !== true) {
        for (const fd of r.fds) this.proc.close(fd);
        const code = (typeof r.msg.code === "string" ? r.msg.code : "EIO") as ErrnoCode;
        throw Object.assign(new LiveUpdateError(code, `luod: ${String(r.msg.error)}`), { reply: r.msg });
      }
      return r;
    });
  }

  private async readLoop(): Promise<LiveUpdateError> {
    const reader = new LineReader(Number.MAX_SAFE_INTEGER);
    let end: LiveUpdateError;
    try {
      for (;;) {
        const m = await this.proc.recvmsg(this.fd, 65536);
        if (m.data.length === 0) throw new LiveUpdateError("ECONNRESET", "luod closed the connection");
        for (const line of reader.push(m.data, m.fds)) this.dispatch(line.text ?? "", line.fds);
      }
    } catch (e) {
      end = e instanceof LiveUpdateError ? e : new LiveUpdateError("EIO", String(e));
    }
    const closedHere = !this.open; // close() ended the loop: luod did not go away
    this.open = false;
    for (const p of this.pending.values()) p.reject(end);
    this.pending.clear();
    if (closedHere || this.proc.hasExited || isLiveUpdateError(end, "ESHUTDOWN")) return end;
    this.proc.close(this.fd);
    if (this.options.onLuodLost !== "keep") {
      for (const s of this.sessions.splice(0)) await s.close().catch(() => undefined);
    }
    this.options.onLuodLostCallback?.(end);
    return end;
  }

  private dispatch(text: string, fds: number[]): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(text) as Record<string, unknown>;
    } catch {
      for (const fd of fds) this.proc.close(fd);
      return;
    }
    if (typeof msg.event === "string") {
      this.onEvent(msg as unknown as LuodEvent);
      return;
    }
    const p = typeof msg.id === "number" ? this.pending.get(msg.id) : undefined;
    if (!p) {
      for (const fd of fds) this.proc.close(fd);
      this.unmatched.push(msg);
      return;
    }
    this.pending.delete(msg.id as number);
    p.resolve({ msg, fds });
  }

  private onEvent(ev: LuodEvent): void {
    if (ev.event === "progress") {
      this.pending.get(ev.id)?.progress?.(ev.step);
    } else if (ev.event === "resume") {
      this.options.onResume?.(ev.reason);
    } else if (ev.event === "prepare") {
      void (async () => {
        try {
          await this.options.onPrepare?.(ev.update);
          await this.request({ op: "ready", update: ev.update });
        } catch (e) {
          await this.request({ op: "fail", update: ev.update, reason: (e as Error).message }).catch(
            () => undefined,
          );
        }
      })().catch(() => undefined);
    }
  }

  private async sessionRequest(op: string, name: string): Promise<SessionHandle> {
    const r = await this.request({ op, name });
    const [fd, ...extra] = r.fds;
    for (const x of extra) this.proc.close(x);
    if (fd === undefined) throw new LiveUpdateError("EPROTO", `luod sent no fd for session "${name}"`);
    const handle = new SessionHandle(this.proc, fd);
    this.sessions.push(handle);
    return handle;
  }

  /** A new outgoing session `name` owned by this client (or this client's existing one). */
  createSession(name: string): Promise<SessionHandle> {
    return this.sessionRequest("create-session", name);
  }

  /** This client's session `name` from the previous kernel. `ENOENT`, `EPERM` (another owner). */
  retrieveSession(name: string): Promise<SessionHandle> {
    return this.sessionRequest("retrieve-session", name);
  }

  /**
   * Done with incoming `session`: FINISH it, close this client's fd and tell luod, which closes
   * its copy. `EBUSY` (a handler vetoed: nothing was closed, ask `status` why).
   */
  async finishSession(session: SessionHandle): Promise<void> {
    const name = session.name;
    await session.finish();
    await session.close();
    const i = this.sessions.indexOf(session);
    if (i >= 0) this.sessions.splice(i, 1);
    await this.request({ op: "done", name });
  }

  /** luod's status. */
  async status(): Promise<LuodStatus> {
    return (await this.request({ op: "status" })).msg.status as LuodStatus;
  }

  /**
   * Asks luod to update (control clients). Resolves with luod's refusal or failure, or with
   * `{ ok: true }` when luod reached the kexec and the kernel went away.
   */
  async update(
    options: { barrierTimeoutMs?: number; progress?: (step: string) => void } = {},
  ): Promise<UpdateResultReply> {
    let kexecStarted = false;
    try {
      await this.request({ op: "update", barrierTimeoutMs: options.barrierTimeoutMs }, (step) => {
        if (step === "kexec") kexecStarted = true;
        options.progress?.(step);
      });
      return { ok: true };
    } catch (e) {
      const reply = (e as { reply?: Record<string, unknown> }).reply;
      if (reply) return reply as unknown as UpdateResultReply;
      if (kexecStarted && isLiveUpdateError(e, "ESHUTDOWN")) return { ok: true };
      throw e;
    }
  }

  /** Closes the connection (sessions received stay open in this process). */
  close(): void {
    if (!this.open) return;
    this.open = false;
    try {
      this.proc.close(this.fd);
    } catch {
      // the process exited
    }
  }
}

/** The update reply as it travels: {@link UpdateResult} without the kernel. */
export type UpdateResultReply = { readonly ok: true } | UpdateFailure;
