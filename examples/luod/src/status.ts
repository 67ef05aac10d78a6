/**
 * luod's status report: what it holds and, for every session handed over by the previous
 * kernel, why it is not finished yet — which file was never retrieved, which file's handler
 * vetoes FINISH (asked without finishing, through `SessionHandle.finishStatus`), or that its
 * owner has not reconnected.
 *
 * @module
 */
import type { SessionHandle } from "@luo/core";

/** Where an incoming session is, from luod's point of view. */
export type IncomingState =
  /** Retrieved by luod, its owner has not asked for it yet. */
  | "waiting"
  /** Handed to its owner, who has not said `done`. */
  | "handed"
  /** The owner said `done`; luod closed its copy. */
  | "done"
  /** The owner did not finish within the reclaim timeout; luod closed it (implicit FINISH). */
  | "reclaimed"
  /** luod's close ran FINISH and a handler vetoed: the session stays until the next update. */
  | "stuck"
  /** In the mapping, but the kernel did not hand it over. */
  | "lost";

/** luod's record of one incoming session. */
export interface IncomingEntry {
  readonly owner: string;
  handle: SessionHandle | undefined;
  state: IncomingState;
  reasons: string[];
}

/** The `status` reply. */
export interface LuodStatus {
  readonly version: number;
  /** The running kernel's live-update number (decimal string). */
  readonly liveupdateNumber: string;
  /** Live updates luod went through (from the mapping). */
  readonly kexecsCount: number;
  readonly phase: "serving" | "preparing" | "kexec" | "gone";
  /** luod's own incoming session: none (cold boot), waiting for its clients, finished, failed. */
  readonly ownSession: "none" | "waiting" | "finished" | "failed";
  /** Why the previous luod's mapping could not be read, if it could not. */
  readonly mappingError: string | undefined;
  readonly clients: readonly { readonly name: string; readonly role: string }[];
  /** Sessions luod will hand over at the next update. */
  readonly outgoing: readonly {
    readonly name: string;
    readonly owner: string;
    readonly connected: boolean;
  }[];
  /** Sessions from the previous kernel, with why each is not finished. */
  readonly incoming: readonly {
    readonly name: string;
    readonly owner: string;
    readonly state: IncomingState;
    readonly reasons: readonly string[];
  }[];
}

/**
 * Why the incoming session behind `handle` is not finished, one line per obstacle: files never
 * retrieved (FINISH would hand them back to their handler unused), sticky retrieve errors, and
 * `canFinish` vetoes (FINISH would fail with `EBUSY`). Empty when FINISH would succeed now.
 */
export async function incomingStatus(handle: SessionHandle): Promise<string[]> {
  let st;
  try {
    st = await handle.finishStatus();
  } catch (e) {
    return [`cannot be asked: ${(e as Error).message}`];
  }
  if (st.state === "finished") return [];
  const reasons: string[] = [];
  for (const f of st.files) {
    if (f.retrieveError)
      reasons.push(`token ${f.token} (${f.compatible}): retrieve failed: ${f.retrieveError.message}`);
    else if (!f.retrieved) reasons.push(`token ${f.token} (${f.compatible}) was never retrieved`);
    if (f.vetoError)
      reasons.push(`token ${f.token}: handler "${f.compatible}" canFinish failed: ${f.vetoError.message}`);
    else if (!f.canFinish) reasons.push(`token ${f.token}: handler "${f.compatible}" vetoes FINISH`);
  }
  return reasons;
}
