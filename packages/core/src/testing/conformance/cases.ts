/**
 * The list of conformance checks, in the order they run, as plain async functions: each
 * {@link ConformanceCase.run} boots fresh machines and rejects with the first failure. No test
 * runner is involved; `describeHandlerConformance` registers them as vitest tests.
 *
 * @module
 */
import {
  changeAfterPreserve,
  finishAll,
  flbRefcounts,
  neighbourStickyRetrieve,
  neighbourVeto,
  preserveAgain,
  retrieveTwice,
  stickyRetrieve,
} from "./cases-handover.js";
import {
  closeAfterFailedKexec,
  doublePreservation,
  neighbourFreezeFailure,
  preserveAndUnpreserve,
  refusesForeignFiles,
} from "./cases-local.js";
import { Run } from "./harness.js";
import type { ConformanceCase, ConformanceSubject } from "./subject.js";

/** Titles of the conformance checks (the test names), by check. */
export const CONFORMANCE_CHECKS = {
  unpreserve: "preserve, then unpreserve on close",
  double: "double preservation is EBUSY",
  foreign: "canPreserve refuses other file types",
  freezeSame: "neighbour freeze failure, same session",
  freezeLater: "neighbour freeze failure, later session",
  closeAfterFailure: "close after a failed kexec",
  mutate: "changes after PRESERVE survive kexec",
  retrieveTwice: "retrieve twice, then finish",
  finishAll: "finish with and without retrieve",
  preserveAgain: "preserve again after finish",
  neighbourSticky: "neighbour's sticky retrieve failure",
  sticky: "sticky retrieve failure",
  veto: "neighbour's finish veto",
  flbs: "FLB reference counts",
} as const;

/**
 * The conformance checks for the handler `factory` describes, as plain functions (titles in
 * {@link CONFORMANCE_CHECKS}). Use it to run a subset, or from another test runner;
 * `describeHandlerConformance` runs them all as vitest tests. `factory` is called once here (for
 * the subject's name and optional hooks) and again for every run.
 */
export function handlerConformanceCases<S>(factory: () => ConformanceSubject<S>): ConformanceCase[] {
  const probe = factory();
  const hasFlbs = (probe.flbs?.length ?? 0) > 0;
  const C = CONFORMANCE_CHECKS;
  const make = (
    name: string,
    fn: (run: Run<S>) => Promise<void>,
    skipReason: string | undefined = undefined,
  ): ConformanceCase => ({
    name,
    skipReason,
    run: async () => fn(await Run.start(factory)),
  });
  return [
    make(C.unpreserve, preserveAndUnpreserve),
    make(C.double, doublePreservation),
    make(C.foreign, refusesForeignFiles),
    make(C.freezeSame, (r) => neighbourFreezeFailure(r, true)),
    make(C.freezeLater, (r) => neighbourFreezeFailure(r, false)),
    make(C.closeAfterFailure, closeAfterFailedKexec),
    make(C.mutate, changeAfterPreserve, probe.mutate ? undefined : "the subject has no mutate() hook"),
    make(C.retrieveTwice, retrieveTwice),
    make(C.finishAll, finishAll),
    make(C.preserveAgain, preserveAgain),
    make(C.neighbourSticky, neighbourStickyRetrieve),
    make(C.sticky, stickyRetrieve, probe.corrupt ? undefined : "the subject has no corrupt() hook"),
    make(C.veto, neighbourVeto),
    make(C.flbs, flbRefcounts, hasFlbs ? undefined : "the subject lists no FLBs"),
  ];
}
