/**
 * The kit's vitest registration: the only module of `@luo/core/testing/conformance` that imports
 * `vitest` (an optional peer dependency of `@luo/core`).
 *
 * @module
 */
import { describe, it } from "vitest";
import { handlerConformanceCases } from "./cases.js";
import type { ConformanceSubject } from "./subject.js";

/**
 * Registers a vitest `describe` block, `conformance: <name>`, with one test per conformance check
 * (see {@link handlerConformanceCases}) for the handler `factory` describes. Call it at the top
 * level of a test file. `factory` must return a fresh {@link ConformanceSubject} (fresh plugins
 * and FLBs) on every call. Checks that do not apply (no `mutate` or `corrupt` hook, no FLBs) are
 * not registered; the describe title lists them.
 *
 * @example
 * ```ts
 * import { expect } from "vitest";
 * import { describeHandlerConformance } from "@luo/core/testing/conformance";
 * import { TEST_HANDLER_COMPATIBLE, createTestFile, testHandlerPlugin } from "@luo/core/testing";
 *
 * // The test handler as the subject; a handler package passes its own plugins and file type.
 * const content = (i: number) => new TextEncoder().encode(`file ${i}`);
 * describeHandlerConformance(() => ({
 *   compatible: TEST_HANDLER_COMPATIBLE,
 *   plugins: [testHandlerPlugin()],
 *   create: (proc, i) => createTestFile(proc, `file-${i}`, content(i)),
 *   mutate: (proc, fd) => void proc.pwrite(fd, new Uint8Array([0xff]), 0),
 *   verify(proc, fd, { index, mutated }) {
 *     const want = content(index);
 *     if (mutated) want[0] = 0xff;
 *     expect(proc.pread(fd, want.length, 0)).toEqual(want);
 *   },
 * }));
 * ```
 */
export function describeHandlerConformance<S>(factory: () => ConformanceSubject<S>): void {
  const probe = factory();
  const cases = handlerConformanceCases(factory);
  // Checks that do not apply are not registered (no skipped tests); the title names them.
  const notApplicable = cases
    .filter((c) => c.skipReason !== undefined)
    .map((c) => `${c.name}: ${c.skipReason}`);
  const title = `conformance: ${probe.name ?? probe.compatible}`;
  describe(
    notApplicable.length > 0 ? `${title} (not applicable: ${notApplicable.join("; ")})` : title,
    () => {
      for (const c of cases) if (c.skipReason === undefined) it(c.name, c.run);
    },
  );
}
