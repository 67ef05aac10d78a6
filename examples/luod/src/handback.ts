/**
 * After the reboot: giving the previous luod's sessions back to their owners.
 *
 * Happy path. {@link Handback.adopt} retrieves luod's own session `"luod"`, reads the mapping at
 * token 0 and retrieves every session it lists (luod holds them from then on). A client that
 * reconnects under a session's owner name gets it ({@link Handback.handOut}); when it says
 * `done`, luod closes its copy. When no session waits any more, luod FINISHes its own session,
 * which frees the mapping memfd.
 *
 * Unhappy paths. No `"luod"` session: a cold boot, nothing to hand back. An unreadable mapping:
 * luod finishes its own session at once and hands nothing back (the sessions stay in the kernel
 * until the next live update). A listed session the kernel did not hand over is `lost`. After
 * the reclaim timeout luod closes every session still waiting or not done: its implicit FINISH
 * frees it (`reclaimed`) or a handler vetoes and it stays `stuck`, with the reasons captured just
 * before the close (a stuck session can no longer be asked).
 *
 * @module
 */
import {
  LiveUpdateError,
  isLiveUpdateError,
  type LiveUpdateDevice,
  type Process,
  type SessionHandle,
} from "@luo/core";
import { retrieveMapping } from "./mapping.js";
import { LUOD_SESSION } from "./protocol.js";
import { incomingStatus, type IncomingEntry, type IncomingState, type LuodStatus } from "./status.js";

/** The previous luod's sessions, as this luod hands them back. */
export class Handback {
  /** Incoming sessions by name, in mapping order. */
  private readonly sessions = new Map<string, IncomingEntry>();
  private own: SessionHandle | undefined;
  /** luod's own incoming session. */
  ownState: LuodStatus["ownSession"] = "none";
  /** Why the mapping could not be read, if it could not. */
  mappingError: string | undefined;
  /** Live updates luod went through before this kernel (from the mapping). */
  kexecsCount = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;

  /**
   * @param proc - luod's process
   * @param dev - its /dev/liveupdate
   * @param log - operator messages
   */
  constructor(
    private readonly proc: Process,
    private readonly dev: LiveUpdateDevice,
    private readonly log: (message: string) => void,
  ) {}

  /** Reads the mapping and retrieves its sessions; starts the reclaim timer if any waits. */
  async adopt(reclaimTimeoutMs: number): Promise<void> {
    try {
      this.own = await this.dev.retrieveSession(LUOD_SESSION);
    } catch (e) {
      if (isLiveUpdateError(e, "ENOENT")) return; // cold boot, or no luod before this kernel
      throw e;
    }
    this.ownState = "waiting";
    let mapping;
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
          this.sessions.set(name, { owner, handle, state: "waiting", reasons: [] });
        } catch (e) {
          const reason = `not retrievable: ${(e as Error).message}`;
          this.sessions.set(name, { owner, handle: undefined, state: "lost", reasons: [reason] });
          this.log(`session "${name}" of ${owner} ${reason}`);
        }
      }
    }
    if (this.pending()) this.timer = setTimeout(() => void this.reclaim(), reclaimTimeoutMs);
    else await this.maybeFinishOwn();
  }

  private pending(): boolean {
    return [...this.sessions.values()].some((e) => e.state === "waiting" || e.state === "handed");
  }

  /** Names of the sessions `owner` can still get back. */
  waitingFor(owner: string): string[] {
    return [...this.sessions].filter(([, e]) => e.owner === owner && e.handle).map(([n]) => n);
  }

  /** luod's copy of session `name` for `owner`, marked handed. `ENOENT`, `EPERM` (another owner). */
  handOut(name: string, owner: string): SessionHandle {
    const e = this.sessions.get(name);
    if (!e) throw new LiveUpdateError("ENOENT", `no incoming session "${name}"`);
    if (e.owner !== owner) throw new LiveUpdateError("EPERM", `session "${name}" belongs to ${e.owner}`);
    if (!e.handle) throw new LiveUpdateError("ENOENT", `incoming session "${name}" is ${e.state}`);
    e.state = "handed";
    return e.handle;
  }

  /** `owner` is done with `name`: luod closes its copy (then maybe finishes its own session). */
  async done(name: string, owner: string): Promise<IncomingEntry> {
    const e = this.sessions.get(name);
    if (!e || e.owner !== owner || !e.handle) {
      throw new LiveUpdateError("ENOENT", `no incoming session "${name}" of ${owner}`);
    }
    await this.close(name, e, "done");
    await this.maybeFinishOwn();
    return e;
  }

  /** Closes luod's copy; a veto of the implicit FINISH leaves the session stuck. */
  private async close(name: string, e: IncomingEntry, state: "done" | "reclaimed"): Promise<IncomingState> {
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

  private async reclaim(): Promise<void> {
    this.timer = undefined;
    if (this.proc.hasExited || this.proc.kernel.halted) return;
    for (const [name, e] of this.sessions) {
      if (e.state !== "waiting" && e.state !== "handed") continue;
      const why = e.state === "waiting" ? "never reconnected" : "not done";
      if ((await this.close(name, e, "reclaimed")) === "reclaimed") {
        this.log(`session "${name}" of ${e.owner} reclaimed after the timeout (${why})`);
      }
    }
    await this.maybeFinishOwn();
  }

  private async maybeFinishOwn(): Promise<void> {
    if (this.ownState === "waiting" && !this.pending()) await this.finishOwn();
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

  /** Stops the reclaim timer (luod exits or the kernel is replaced). */
  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Every session with its state and, while luod still holds it, why it is not finished. */
  async report(): Promise<LuodStatus["incoming"]> {
    const out = [];
    for (const [name, e] of this.sessions) {
      let reasons = e.reasons;
      if (e.handle) {
        const why = e.state === "waiting" ? `${e.owner} has not reconnected` : `${e.owner} has not said done`;
        reasons = [why, ...(await incomingStatus(e.handle))];
      }
      out.push({ name, owner: e.owner, state: e.state, reasons });
    }
    return out;
  }
}
