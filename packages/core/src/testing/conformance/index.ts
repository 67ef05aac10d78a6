/**
 * `@luo/core/testing/conformance`: the handler conformance kit — the lifecycle checks every file
 * handler must pass, runnable against any third-party handler on emulated machines.
 *
 * A handler author describes the handler under test as a {@link ConformanceSubject} — the plugins
 * that register it, how to make a preservable file with known content, how to check one, and
 * optionally how to change one after preserve (`mutate`) and how to damage its handed-over state
 * (`corrupt`) — and calls {@link describeHandlerConformance} from a vitest test file. Each check
 * boots fresh machines and drives the whole live update through the public API: preserve, close
 * → unpreserve (file intact, page accounting back to the baseline), double preservation
 * (`EBUSY`), `canPreserve` refusing `/dev/null` and a file of the test handler's type, the freeze
 * failure of a neighbouring file in the same or a later session (the handler's files are
 * unfrozen, the kernel stays usable, a later kexec succeeds), a change made after PRESERVE_FD
 * coming back after kexec, retrieve twice (one file object, two fds), sticky retrieve failures,
 * finish with and without retrieve, a neighbour's finish veto, preserving a retrieved file again,
 * FLB reference counts, and a leak check after every live update (no unrestored incoming page,
 * no file owned by LUO, no warning, `machine.stats()` equal to a fresh boot's). A subject's
 * `unpreserve`, `unfreeze` or `finish` that throws fails the check with its own message.
 *
 * The module is split by job: `subject` (what the author supplies), `harness` (the observed
 * machine a check runs on), `cases-*` and `cases` (the checks as plain async functions, also
 * available through {@link handlerConformanceCases}), and `vitest` (the registration, the only
 * part that imports vitest — install it to use this subpath).
 *
 * @module
 */
import "reflect-metadata";

export type {
  ConformanceCase,
  ConformanceCorruptArgs,
  ConformanceFile,
  ConformanceOriginal,
  ConformanceSubject,
} from "./subject.js";
export { ConformanceFailure } from "./check.js";
export { CONFORMANCE_NEIGHBOUR_COMPATIBLE } from "./harness.js";
export { CONFORMANCE_CHECKS, handlerConformanceCases } from "./cases.js";
export { describeHandlerConformance } from "./vitest.js";
