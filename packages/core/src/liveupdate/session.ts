/**
 * Sessions, their behaviour and the two session lists (`luo_session.c`).
 *
 * A session is a named group of preserved files. Outgoing sessions are created by userspace in
 * this kernel and serialized at reboot; incoming sessions come from the previous kernel, are
 * retrieved once by name, and are finished (explicitly or by closing their fd). Names are 1..63
 * UTF-8 bytes without NUL or lone surrogates (`EINVAL`), unique within each list (`EEXIST`) — an
 * outgoing session may reuse an incoming name. Lookup is a `Map`, O(1), and the map's insertion
 * order is the creation (or handover) order that serialization follows. Each list has a
 * reader-writer lock for membership; the outgoing list also writes each session's handover
 * record when the session joins it and keeps the set of sessions that have files, so the reboot
 * path touches only those.
 *
 * @module
 */
import { LiveUpdateError } from "../errors.js";
import { encodeFixedString, SESSION_NAME_SIZE, type SessionRecords, type SessionSlot } from "../abi/index.js";
import type { KernelFile, Process } from "../kernel/index.js";
import { FileSet, type FileFinishStatus } from "./file.js";
import { LevelMutex, LevelRwLock, LockLevel } from "./locks.js";
import type { LuoServices } from "./services.js";

/**
 * Session states. Both kinds go `live` → `closing` (fd released) → `closed`; only incoming sessions
 * can be `finished` (FINISH, before the close) or `stuck` (a close whose implicit FINISH was vetoed).
 */
export type SessionState = "live" | "finished" | "stuck" | "closing" | "closed";

/**
 * One session and what userspace does to it through its fd. The orchestrator (`core.ts`) holds
 * the serialize lock for reading around every method below and owns list membership; each method
 * takes the session mutex itself, and checks kind and state inside it, so an operation queued
 * behind a close fails with `EBADF` instead of committing to a session that is going away.
 */
export class Session {
  /** Protects `retrieved`, `state` and the file set. */
  readonly mutex: LevelMutex;
  private isRetrieved = false;
  private current: SessionState = "live";
  private recordSlot: SessionSlot | undefined;
  private fileSet: FileSet | undefined;

  /**
   * @param svc - orchestrator services
   * @param name - the name, already valid: checked by {@link validateSessionName} (outgoing) or
   *   read from a handover record that holds valid UTF-8 (incoming)
   * @param kind - which list the session belongs to
   */
  constructor(
    private readonly svc: LuoServices,
    readonly name: string,
    readonly kind: "outgoing" | "incoming",
  ) {
    this.mutex = new LevelMutex(this, LockLevel.Session);
  }

  /** Incoming only: retrieved by userspace in this boot (never reset). */
  get retrieved(): boolean {
    return this.isRetrieved;
  }

  /** Lifecycle state. */
  get state(): SessionState {
    return this.current;
  }

  /** Outgoing only: where the session's handover record lives (set when it joins the list). */
  get slot(): SessionSlot | undefined {
    return this.recordSlot;
  }

  /** Called once by the outgoing {@link SessionList} when the session's record is written. */
  bindSlot(slot: SessionSlot): void {
    this.recordSlot = slot;
  }

  /** The session's files (created on first use: most sessions of a large handover are empty). */
  get files(): FileSet {
    return (this.fileSet ??= new FileSet(this.svc, this.name, this.kind === "outgoing"));
  }

  /** Number of files, without creating the file set. */
  get fileCount(): number {
    return this.fileSet?.count ?? 0;
  }

  /** Physical address of the first file block (0 without files). */
  get filesHead(): bigint {
    return this.fileSet?.head ?? 0n;
  }

  /** `session "<name>"`, used in lock messages. */
  toString(): string {
    return `session "${this.name}"`;
  }

  private requireKind(kind: "outgoing" | "incoming", op: string): void {
    if (this.kind !== kind) {
      throw new LiveUpdateError(
        "EINVAL",
        `${op} needs ${article(kind)} ${kind} session; "${this.name}" is ${this.kind}`,
      );
    }
  }

  /** Inside the mutex: the session must not be closing, closed or stuck (its fd is gone). */
  private requireOpen(): void {
    if (this.current === "closing" || this.current === "closed" || this.current === "stuck") {
      throw new LiveUpdateError("EBADF", `session "${this.name}" is closed`);
    }
  }

  /** RETRIEVE_SESSION of this incoming session: once per boot, `EINVAL` after that. */
  async retrieve(): Promise<void> {
    await this.mutex.lock(() => {
      if (this.isRetrieved)
        throw new LiveUpdateError("EINVAL", `incoming session "${this.name}" was already retrieved`);
      this.isRetrieved = true;
      this.svc.events.emitEvent("session:retrieved", { session: this.name });
    });
  }

  /**
   * PRESERVE_FD. Errors in check order: `EINVAL` (incoming session), `EBADF` (session closed),
   * then the file set's (`EEXIST`, `ENOSPC`/`ENOMEM`, `EBADF`, `ENOENT`, `EBUSY`, handler errors).
   */
  async preserveFd(proc: Process, fd: number, token: bigint): Promise<void> {
    this.requireKind("outgoing", "PRESERVE_FD");
    await this.mutex.lock(async () => {
      this.requireOpen();
      await this.files.preserve(proc, fd, token);
    });
  }

  /** RETRIEVE_FD: the file for `token` (a new reference). `EINVAL` kind, `EBADF`, `ENOENT`, sticky errors. */
  async retrieveFile(token: bigint): Promise<KernelFile> {
    this.requireKind("incoming", "RETRIEVE_FD");
    return this.mutex.lock(() => {
      this.requireOpen();
      return this.files.retrieve(token);
    });
  }

  /** FINISH: `EINVAL` kind, `EBADF`, `EBUSY` veto (nothing changes). Idempotent. */
  async finish(): Promise<void> {
    this.requireKind("incoming", "FINISH");
    await this.mutex.lock(async () => {
      this.requireOpen();
      await this.files.finish();
      this.current = "finished";
    });
    this.svc.events.emitEvent("session:finished", { session: this.name });
  }

  /** What FINISH would decide now, without finishing (`SessionHandle.finishStatus`). */
  async finishStatus(): Promise<{ state: "live" | "finished"; files: FileFinishStatus[] }> {
    this.requireKind("incoming", "finish status");
    return this.mutex.lock(async () => {
      this.requireOpen();
      const files = this.fileCount > 0 ? await this.files.finishPreview() : [];
      return { state: this.current === "finished" ? "finished" : "live", files };
    });
  }

  /**
   * First half of the fd release, under the mutex: marks the session closing, then outgoing:
   * unpreserves every file LIFO (cannot fail); incoming: the implicit FINISH, whose veto leaves
   * the session `stuck` and rejects with `EBUSY`. The orchestrator then removes the session from
   * its list and calls {@link Session.closed}.
   */
  async release(): Promise<void> {
    await this.mutex.lock(async () => {
      this.requireOpen();
      this.current = "closing";
      if (this.kind === "outgoing") {
        if (this.fileCount > 0) await this.files.unpreserveAll();
        return;
      }
      try {
        if (this.fileCount > 0) await this.files.finish();
      } catch (e) {
        this.current = "stuck";
        this.svc.events.emitEvent("session:stuck", { session: this.name, error: e as LiveUpdateError });
        throw e;
      }
    });
  }

  /** Last step of the release, once the session left its list. */
  closed(): void {
    this.current = "closed";
    this.svc.events.emitEvent("session:closed", { session: this.name, kind: this.kind });
  }
}

/** "an" before a vowel sound, else "a" (for messages). */
function article(word: string): string {
  return /^[aeiou]/.test(word) ? "an" : "a";
}

/**
 * Validates a session name (1..63 UTF-8 bytes, no NUL, no lone surrogate) and returns its bytes.
 * `EINVAL` otherwise. A lone surrogate is refused (by {@link encodeFixedString}) because two
 * different JS names would otherwise be handed over as the same bytes, and the next kernel's
 * first open would fail.
 */
export function validateSessionName(name: string): Uint8Array {
  return encodeFixedString(name, SESSION_NAME_SIZE, "session name");
}

/** One of the two session lists. */
export class SessionList {
  private readonly sessions = new Map<string, Session>();
  /** Sessions that have (or had) files; see {@link SessionList.withFiles}. */
  private readonly filed = new Set<Session>();
  /** Membership lock (level 2.1 incoming / 2.2 outgoing). */
  readonly lock: LevelRwLock;

  /**
   * @param kind - which list
   * @param records - outgoing only: the session records written as sessions join
   */
  constructor(
    readonly kind: "outgoing" | "incoming",
    private readonly records?: SessionRecords,
  ) {
    this.lock = new LevelRwLock(
      `${kind} session list`,
      kind === "incoming" ? LockLevel.IncomingList : LockLevel.OutgoingList,
    );
  }

  /** Number of sessions. */
  get size(): number {
    return this.sessions.size;
  }

  /** The session named `name`, if present (O(1)). */
  get(name: string): Session | undefined {
    return this.sessions.get(name);
  }

  /** Sessions in creation (or handover) order. */
  values(): IterableIterator<Session> {
    return this.sessions.values();
  }

  /** Records that `session` (of this list) now has files. */
  noteFiles(session: Session): void {
    if (this.sessions.get(session.name) === session) this.filed.add(session);
  }

  /** Sessions that have files, in creation order (the reboot path freezes these). */
  withFiles(): Session[] {
    const list = [...this.filed].filter((s) => s.fileCount > 0);
    return list.sort((a, b) => a.slot!.index - b.slot!.index);
  }

  /**
   * Appends a session (list lock held for writing). `EEXIST` for a duplicate name; outgoing:
   * writes its handover record first (`ENOSPC`/`ENOMEM`, nothing changes on failure).
   */
  insert(session: Session): void {
    if (this.sessions.has(session.name)) {
      throw new LiveUpdateError(
        "EEXIST",
        `${article(this.kind)} ${this.kind} session named "${session.name}" already exists`,
      );
    }
    if (this.records) session.bindSlot(this.records.add(session.name));
    this.sessions.set(session.name, session);
  }

  /** Removes a session (list lock held for writing) and its handover record. */
  remove(session: Session): void {
    if (this.sessions.get(session.name) !== session) return;
    this.sessions.delete(session.name);
    this.filed.delete(session);
    if (session.slot) this.records?.remove(session.slot);
  }
}
