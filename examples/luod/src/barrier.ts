/**
 * The prepare barrier of an update, and what an update reports.
 *
 * Every VMM client is told `prepare` and must answer `ready` within the timeout. The answers are
 * promises each client's connection resolves (no polling): `ready`, `fail` with a reason, `lost`
 * when the connection ends, or `timeout` when the timer fires first. {@link barrierVerdict} turns
 * them into the clients that failed the barrier (a lost client counts as failed only with the
 * `"abort"` policy) and the clients that were lost.
 *
 * @module
 */
import type { ErrnoCode, Kernel } from "@luo/core";
import type { MissingCompatible } from "./preflight.js";

/** One client's answer to `prepare`. */
export type Outcome = { kind: "ready" } | { kind: "fail" | "timeout" | "lost"; reason: string };

/** A client taking part in the barrier; its connection resolves `prepare` when it answers. */
export interface BarrierParty {
  readonly name: string | undefined;
  prepare: { update: number; resolve: (o: Outcome) => void } | undefined;
}

/** A client lost or refusing during the barrier. */
export interface BarrierFailure {
  readonly client: string;
  readonly reason: string;
}

/** What `Luod.update` resolves to. */
export type UpdateResult =
  | {
      readonly ok: true;
      readonly update: number;
      /** The next kernel (undefined with `saveTo`). */
      readonly kernel: Kernel | undefined;
      /** Clients lost during the barrier (their sessions were closed). */
      readonly lost: readonly string[];
    }
  | UpdateFailure;

/** Why an update did not happen (the old kernel keeps running with every session as it was). */
export interface UpdateFailure {
  readonly ok: false;
  readonly update: number;
  readonly stage: "busy" | "preflight" | "barrier" | "kexec";
  readonly code: ErrnoCode;
  readonly error: string;
  /** Pre-flight: what the next kernel does not serve. */
  readonly missing?: readonly MissingCompatible[];
  /** Barrier: who failed it. */
  readonly failed?: readonly BarrierFailure[];
  /** kexec: the file whose freeze failed. */
  readonly freeze?: { readonly session: string; readonly token: string; readonly compatible: string };
}

/** Asks every party to prepare for `update` (via `notify`) and waits for all answers or the timeout. */
export function runBarrier(
  parties: readonly BarrierParty[],
  update: number,
  timeoutMs: number,
  notify: (p: BarrierParty) => void,
): Promise<Outcome[]> {
  const waits = parties.map(
    (p) =>
      new Promise<Outcome>((resolve) => {
        p.prepare = { update, resolve };
      }),
  );
  for (const p of parties) notify(p);
  const timer = setTimeout(() => {
    for (const p of parties) {
      const pending = p.prepare;
      if (pending && pending.update === update) {
        p.prepare = undefined;
        pending.resolve({ kind: "timeout", reason: `no answer within ${timeoutMs} ms` });
      }
    }
  }, timeoutMs);
  return Promise.all(waits).finally(() => clearTimeout(timer));
}

/** Who failed the barrier and who was lost, under the `clientLost` policy. */
export function barrierVerdict(
  parties: readonly BarrierParty[],
  outcomes: readonly Outcome[],
  clientLost: "continue" | "abort",
): { failed: BarrierFailure[]; lost: string[] } {
  const failed: BarrierFailure[] = [];
  const lost: string[] = [];
  outcomes.forEach((o, i) => {
    const client = parties[i]!.name ?? "unnamed client";
    if (o.kind === "ready") return;
    if (o.kind === "lost") lost.push(client);
    if (o.kind !== "lost" || clientLost === "abort") failed.push({ client, reason: o.reason });
  });
  return { failed, lost };
}

/** The pre-flight refusal of `update`. */
export function refusal(update: number, missing: readonly MissingCompatible[]): UpdateFailure {
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
