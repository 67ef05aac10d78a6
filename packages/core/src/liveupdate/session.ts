/**
 * Sessions and the two session lists (`luo_session.c`).
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
import { FileSet } from "./file.js";
import { LevelMutex, LevelRwLock, LockLevel } from "./locks.js";
import type { LuoServices } from "./services.js";

/**
 * Session states. Both kinds go `live` → `closing` (fd released) → `closed`; only incoming sessions
 * can be `finished` (FINISH, before the close) or `stuck` (a close whose implicit FINISH was vetoed).
 */
export type SessionState = "live" | "finished" | "stuck" | "closing" | "closed";

/** One session. */
export class Session {
  /** Protects `retrieved`, `state` and the file set. */
  readonly mutex: LevelMutex;
  /** Incoming only: retrieved by userspace in this boot (never reset). */
  retrieved = false;
  /** Lifecycle state. */
  state: SessionState = "live";
  /** Outgoing only: where the session's handover record lives (set when it joins the list). */
  slot: SessionSlot | undefined;
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
      throw new LiveUpdateError("EEXIST", `an ${this.kind} session named "${session.name}" already exists`);
    }
    if (this.records) session.slot = this.records.add(session.name);
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
