/**
 * The Live Update Orchestrator of one kernel (`luo_core.c`): session lists, the serialize lock,
 * /dev/liveupdate state, deserialization at first open, and the reboot freeze path.
 *
 * The lifecycle, with its happy and unhappy paths, is documented on {@link LiveUpdate}.
 *
 * @module
 */
import { LiveUpdateError, toLiveUpdateError } from "../errors.js";
import type { KernelContext, KernelFile, Process } from "../kernel/index.js";
import { LuoOutgoingAbi, type LuoIncomingHandover, type SessionFilesField } from "../abi/index.js";
import { FlbManager } from "./flb.js";
import { LiveUpdateEvents } from "./events.js";
import { PreservedIds } from "./preserved-ids.js";
import { Registry } from "./registration.js";
import { Session, SessionList, validateSessionName } from "./session.js";
import { LevelRwLock, LockLevel } from "./locks.js";
import { toU64, type FileFinishStatus } from "./file.js";
import type { LuoServices } from "./services.js";
import { freezeView, type HandoverView } from "./views.js";

/**
 * What a successful freeze hands to the kexec path.
 *
 * @category Sessions
 */
export interface RebootTicket {
  /** The next kernel took over: keep the serialize lock forever. */
  commit(): void;
  /** The handover could not happen: unfreeze, clear the records, release the lock. */
  abort(error: LiveUpdateError): Promise<void>;
}

/** An incoming session as FINISH would see it now. */
export interface SessionFinishStatus {
  /** The session's name. */
  readonly session: string;
  /** `live`, or `finished` after an explicit FINISH (a closed or stuck session cannot be asked). */
  readonly state: "live" | "finished";
  /** Its files in handover order; FINISH succeeds when every `canFinish` is true. */
  readonly files: readonly FileFinishStatus[];
}

/**
 * Counts for observability and leak checks.
 *
 * @category Sessions
 */
export interface LiveUpdateStats {
  /** Outgoing sessions. */
  readonly outgoingSessions: number;
  /** Incoming sessions (deserialized, not yet closed). */
  readonly incomingSessions: number;
  /** Identities owned by LUO (preserved or retrieved-not-finished). */
  readonly ownedFiles: number;
}

/**
 * The orchestrator of one booted kernel.
 *
 * Boot: the outgoing handover pages are set up (LUO FDT page, FLB page); incoming records, if
 * any, were read and validated by early boot. The first /dev/liveupdate open turns incoming
 * records into sessions and files (once; a failure is cached and every open fails with `EIO`).
 *
 * Reboot (`kernel.kexec()`): take the serialize lock for writing (waits for
 * in-flight session operations, blocks new ones), freeze every outgoing session that has files in
 * creation order (a failure unfreezes the earlier ones in reverse and the kernel continues), then
 * seal the session records (their names were written at creation; here only holes are closed
 * and the file-chain fields and counts written), write the FLB records and the LUO FDT. The returned ticket either commits (the
 * lock is never released; the kernel is halted and every pending or later call rejects with
 * `ESHUTDOWN`) or aborts (unfreeze everything, clear the records, release the lock) when
 * something after serialization fails before the next kernel takes over.
 *
 * Lock hierarchy: serialize → session list (incoming before outgoing) → session → file → FLB.
 *
 * @example
 * ```ts
 * import { Machine } from "@luo/core";
 * import { createTestFile, testHandlerPlugin } from "@luo/core/testing";
 *
 * const k1 = await new Machine({ memory: "32 MiB" }).boot({ plugins: [testHandlerPlugin({ flbs: 1 })] });
 * const vmm = k1.spawn("vmm");
 * const s = await (await vmm.openLiveUpdate()).createSession("vm-0");
 * await s.preserveFd(createTestFile(vmm, "a"), 7n);
 * k1.liveupdate.events.on("reboot:done", (e) => console.log(`${e.files} file(s) handed over`));
 * console.log(k1.liveupdate.handingOver().sessions[0]?.files[0]?.token); // 7n
 *
 * const k2 = await k1.kexec();
 * const { sessions, flbs } = k2.liveupdate.received; // frozen: what kernel#1 handed over
 * console.log(sessions.map((x) => x.name), flbs[0]?.count); // ["vm-0"] 1n
 * ```
 *
 * @category Entry points
 */
export class LiveUpdate {
  /** Typed lifecycle events. */
  readonly events: LiveUpdateEvents;
  /**
   * Handler and FLB registry.
   *
   * @internal
   */
  readonly registry: Registry;
  /**
   * FLB lifecycle and access.
   *
   * @internal
   */
  readonly flbs: FlbManager;
  /**
   * Global serialize lock (readers: session operations; writer: reboot).
   *
   * @internal
   */
  readonly serializeLock = new LevelRwLock("serialize", LockLevel.Serialize);
  /**
   * Outgoing sessions (created in this kernel). Public code reads {@link LiveUpdate.handingOver}.
   *
   * @internal
   */
  readonly outgoingSessions: SessionList;
  /**
   * Incoming sessions (from the previous kernel). Public code reads {@link LiveUpdate.received}.
   *
   * @internal
   */
  readonly incomingSessions: SessionList;
  private readonly svc: LuoServices;
  private readonly abi: LuoOutgoingAbi;
  private deviceInUse = false;
  private deserialized: { error: LiveUpdateError | undefined } | undefined;
  private receivedView: HandoverView | undefined;

  /**
   * Built by the kernel at boot.
   *
   * @internal
   *
   * @param ctx - the kernel's VFS context (halt state)
   * @param services - machine, KHO and container (registries are created here)
   * @param handover - what the previous kernel handed over, if anything
   */
  constructor(
    private readonly ctx: KernelContext,
    services: Omit<LuoServices, "registry" | "flbs" | "ids" | "events">,
    private readonly handover: LuoIncomingHandover | undefined,
  ) {
    this.events = new LiveUpdateEvents();
    this.flbs = new FlbManager(services.kho, services.incoming, handover?.flbs, this.events);
    this.abi = LuoOutgoingAbi.setup(services.kho);
    this.outgoingSessions = new SessionList("outgoing", this.abi.sessions);
    this.incomingSessions = new SessionList("incoming");
    this.registry = new Registry(
      {
        incomingLock: this.incomingSessions.lock,
        outgoingLock: this.outgoingSessions.lock,
        sessionCounts: () => ({ incoming: this.incomingSessions.size, outgoing: this.outgoingSessions.size }),
      },
      this.flbs,
    );
    this.svc = {
      ...services,
      registry: this.registry,
      flbs: this.flbs,
      ids: new PreservedIds(),
      events: this.events,
    };
    ctx.onHalt((e) => {
      this.serializeLock.halt(e);
      this.incomingSessions.lock.halt(e);
      this.outgoingSessions.lock.halt(e);
    });
  }

  /** Number of live updates this machine went through before this kernel (0 on a cold boot). */
  get liveupdateNumber(): bigint {
    return this.handover?.liveupdateNumber ?? 0n;
  }

  /** Session and ownership counts. */
  stats(): LiveUpdateStats {
    return {
      outgoingSessions: this.outgoingSessions.size,
      incomingSessions: this.incomingSessions.size,
      ownedFiles: this.svc.ids.size,
    };
  }

  /**
   * What this kernel received from the previous one: every session with its files' compatible,
   * token and data, and every FLB with its compatible, data and count, as the handover recorded
   * them (empty on a cold boot). A frozen snapshot taken once: retrieving, finishing or closing
   * sessions does not change it.
   */
  get received(): HandoverView {
    if (!this.receivedView) {
      const h = this.handover;
      this.receivedView = freezeView(h?.liveupdateNumber ?? 0n, h?.sessions ?? [], h?.flbs ?? []);
    }
    return this.receivedView;
  }

  /**
   * What this kernel would hand to the next one if it rebooted now: every outgoing session (empty
   * ones too) with its files, and every FLB that has dependent files. A frozen snapshot; a
   * handler's `freeze` may still change a file's `data` at reboot (taken after a failed or
   * aborted reboot it shows the state the kernel returned to).
   */
  handingOver(): HandoverView {
    const sessions = Array.from(this.outgoingSessions.values(), (s) => ({
      name: s.name,
      files: s.fileCount > 0 ? s.files.list() : [],
    }));
    const flbs = this.flbs
      .registered()
      .filter((st) => st.outCount > 0)
      .map((st) => ({ compatible: st.flb.compatible, data: st.outData, count: BigInt(st.outCount) }));
    return freezeView(BigInt.asUintN(64, this.liveupdateNumber + 1n), sessions, flbs);
  }

  // ---- /dev/liveupdate -------------------------------------------------------------------

  /**
   * Exclusive open of /dev/liveupdate: `EBUSY` if open, `EIO` if deserialization failed.
   *
   * @internal
   */
  async openDevice(): Promise<void> {
    this.ctx.assertRunning();
    if (this.deviceInUse) throw new LiveUpdateError("EBUSY", "/dev/liveupdate is already open");
    this.deviceInUse = true;
    try {
      if (!this.deserialized) this.deserialized = { error: await this.deserialize() };
      const err = this.deserialized.error;
      if (err)
        throw new LiveUpdateError("EIO", `incoming live update state failed to load: ${err.message}`, {
          cause: err,
        });
    } catch (e) {
      this.deviceInUse = false;
      throw e;
    }
  }

  /**
   * Release of /dev/liveupdate: sessions are unaffected.
   *
   * @internal
   */
  closeDevice(): void {
    this.deviceInUse = false;
  }

  private async deserialize(): Promise<LiveUpdateError | undefined> {
    const h = this.handover;
    if (!h) return undefined;
    // Emitted here, not at construction: nobody can listen to a kernel before boot returns it.
    this.events.emitEvent("boot:handover", {
      liveupdateNumber: h.liveupdateNumber,
      sessions: h.sessions.length,
    });
    let error: LiveUpdateError | undefined;
    try {
      await this.incomingSessions.lock.write(() => {
        for (const rec of h.sessions) {
          const s = new Session(this.svc, rec.name, "incoming");
          this.incomingSessions.insert(s);
          if (rec.files.length === 0) continue; // the file set is created on first use
          try {
            s.files.deserialize(rec.files, rec.fileBlocks);
          } catch (e) {
            s.files.freeIncomingBlocks();
            throw e;
          }
        }
      });
    } catch (e) {
      error = toLiveUpdateError(e, "loading the incoming sessions");
    }
    for (const b of h.sessionBlocks) this.svc.incoming!.restoreFree(b);
    return error;
  }

  // ---- sessions ----------------------------------------------------------------------------

  /**
   * CREATE_SESSION. `EINVAL` bad name, `EEXIST` duplicate, `ENOSPC`/`ENOMEM` no room.
   *
   * @internal
   */
  async createSession(name: string): Promise<Session> {
    this.ctx.assertRunning();
    validateSessionName(name);
    return this.serializeLock.read(() =>
      this.outgoingSessions.lock.write(() => {
        const s = new Session(this.svc, name, "outgoing");
        this.outgoingSessions.insert(s);
        this.events.emitEvent("session:created", { session: name });
        return s;
      }),
    );
  }

  /**
   * RETRIEVE_SESSION. `ENOENT` unknown, `EINVAL` already retrieved (or stuck).
   *
   * @internal
   */
  async retrieveSession(name: string): Promise<Session> {
    this.ctx.assertRunning();
    if (typeof name !== "string") throw new LiveUpdateError("EINVAL", "session name must be a string");
    return this.serializeLock.read(() =>
      this.incomingSessions.lock.read(async () => {
        const s = this.incomingSessions.get(name);
        if (!s) throw new LiveUpdateError("ENOENT", `no incoming session named "${name}"`);
        await s.retrieve();
        return s;
      }),
    );
  }

  /**
   * PRESERVE_FD (see {@link Session.preserveFd}); `EINVAL` for a token that is not a u64.
   *
   * @internal
   */
  async preserveFd(s: Session, proc: Process, fd: number, token: bigint | number): Promise<void> {
    this.ctx.assertRunning();
    const t = toU64(token, "token");
    await this.serializeLock.read(async () => {
      await s.preserveFd(proc, fd, t);
      this.outgoingSessions.noteFiles(s);
    });
  }

  /**
   * RETRIEVE_FD (see {@link Session.retrieveFile}); `EINVAL` for a token that is not a u64.
   *
   * @internal
   */
  async retrieveFile(s: Session, token: bigint | number): Promise<KernelFile> {
    this.ctx.assertRunning();
    const t = toU64(token, "token");
    return this.serializeLock.read(() => s.retrieveFile(t));
  }

  /**
   * FINISH (see {@link Session.finish}).
   *
   * @internal
   */
  async finish(s: Session): Promise<void> {
    this.ctx.assertRunning();
    await this.serializeLock.read(() => s.finish());
  }

  /**
   * What FINISH of incoming session `s` would decide now, without finishing (see
   * `SessionHandle.finishStatus`). `EINVAL` for an outgoing session, `EBADF` once closed.
   *
   * @internal
   */
  async finishStatus(s: Session): Promise<SessionFinishStatus> {
    this.ctx.assertRunning();
    return this.serializeLock.read(async () => ({ session: s.name, ...(await s.finishStatus()) }));
  }

  /**
   * GET_NAME (any session kind).
   *
   * @internal
   */
  async getName(s: Session): Promise<string> {
    this.ctx.assertRunning();
    return this.serializeLock.read(() => s.name);
  }

  /**
   * Session fd release (see {@link Session.release}): then the session leaves its list.
   *
   * @internal
   */
  async releaseSession(s: Session): Promise<void> {
    this.ctx.assertRunning();
    await this.serializeLock.read(async () => {
      await s.release();
      const list = s.kind === "outgoing" ? this.outgoingSessions : this.incomingSessions;
      await list.lock.write(() => list.remove(s));
      s.closed();
    });
  }

  // ---- reboot ------------------------------------------------------------------------------

  private async unfreezeSessions(sessions: readonly Session[]): Promise<void> {
    for (let i = sessions.length - 1; i >= 0; i--) {
      const s = sessions[i]!;
      await s.mutex.lock(() => s.files.unfreeze());
    }
  }

  /**
   * Freezes and serializes every outgoing session (see the module comment).
   *
   * @internal
   */
  async prepareReboot(): Promise<RebootTicket> {
    this.ctx.assertRunning();
    this.events.emitEvent("reboot:started", { sessions: this.outgoingSessions.size });
    const w = await this.serializeLock.acquireWrite();
    /** Sessions frozen so far (those with files, in creation order) and their record fields. */
    const frozen: Session[] = [];
    let fields: SessionFilesField[] = [];
    /** Undoes everything below and lets session operations run again. */
    const rollback = async (error: LiveUpdateError): Promise<void> => {
      if (frozen.length > 0)
        await w.inside(() => this.outgoingSessions.lock.write(() => this.unfreezeSessions(frozen)));
      this.abi.sessions.unseal(fields);
      this.abi.clear();
      w.release();
      this.events.emitEvent("reboot:failed", { error });
    };
    try {
      await w.inside(() =>
        this.outgoingSessions.lock.write(async () => {
          // Every session's name is already in its record (written at creation) and an empty
          // session has nothing to freeze, so the work here grows with files, not sessions.
          try {
            for (const s of this.outgoingSessions.withFiles()) {
              await s.mutex.lock(() => s.files.freeze());
              frozen.push(s);
            }
          } catch (e) {
            await this.unfreezeSessions(frozen);
            frozen.length = 0;
            throw e;
          }
        }),
      );
      fields = frozen.map((s) => ({ slot: s.slot!, filesHead: s.filesHead, fileCount: s.fileCount }));
      this.abi.sessions.seal(fields);
      const flbs = this.flbs.serialize();
      this.abi.writeFlbs(flbs);
      this.abi.writeFdt(BigInt.asUintN(64, this.liveupdateNumber + 1n)); // u64 arithmetic wraps, as in the kernel
      const files = fields.reduce((n, f) => n + f.fileCount, 0);
      const stats = { sessions: this.outgoingSessions.size, files, flbs: flbs.length };
      return {
        commit: () => this.events.emitEvent("reboot:done", stats),
        abort: rollback,
      };
    } catch (e) {
      const error = toLiveUpdateError(e, "reboot");
      await rollback(error);
      throw error;
    }
  }
}
