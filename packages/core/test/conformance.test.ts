// The handler conformance kit run against the core test handler ("luo-test-v1", with 2 test
// FLBs and a corrupt() hook, so no check is skipped), and against deliberately broken variants
// of it to show that the kit catches leaks, lost content and misbehaving callbacks.
import { describe, expect, it } from "vitest";
import { defineFileHandler, definePlugin, type FileHandler, type Plugin } from "@luo/core";
import {
  TEST_FILE_CAPACITY,
  TEST_HANDLER_COMPATIBLE,
  TestControl,
  createTestFile,
  createTestFlb,
  createTestHandler,
  describeHandlerConformance,
  handlerConformanceCases,
  testHandlerPlugin,
  type ConformanceSubject,
  type TestFile,
} from "@luo/core/testing";

const content = (i: number): Uint8Array => new TextEncoder().encode(`conformance file #${i} `.repeat(i + 1));

/** The test handler as a conformance subject; `plugin` replaces the handler plugin when given. */
function subject(plugin?: (control: TestControl) => { plugin: Plugin; flbs: ConformanceSubject["flbs"] }) {
  return (): ConformanceSubject<Uint8Array> => {
    let plugins: Plugin[];
    let flbs: ConformanceSubject["flbs"];
    if (plugin) {
      const made = plugin(new TestControl());
      plugins = [made.plugin];
      flbs = made.flbs;
    } else {
      const p = testHandlerPlugin({ flbs: 2 });
      plugins = [p];
      flbs = p.testFlbs;
    }
    return {
      compatible: TEST_HANDLER_COMPATIBLE,
      plugins,
      flbs,
      create: (proc, i) => ({ fd: createTestFile(proc, `file-${i}`, content(i)), expected: content(i) }),
      verify(proc, fd, { expected }) {
        expect(proc.pread(fd, TEST_FILE_CAPACITY, 0)).toEqual(expected);
      },
      // The block starts with a magic the handler's retrieve validates; finish frees it anyway.
      corrupt: ({ machine, data }) => machine.writeU32(data, 0xdeadbeef),
    };
  };
}

describeHandlerConformance(subject());

/** A plugin with the test handler modified by `change` and one test FLB. */
function broken(
  change: (base: FileHandler<TestFile, undefined>) => Partial<FileHandler<TestFile, undefined>>,
) {
  return subject((control) => {
    const base = createTestHandler(control);
    const handler = defineFileHandler<TestFile, undefined>({ ...base, ...change(base) });
    const flb = createTestFlb(control, 0);
    const plugin = definePlugin({
      name: "broken-test",
      async register(ctx) {
        await ctx.registerFileHandler(handler);
        await ctx.registerFlb(handler, flb);
      },
    });
    return { plugin, flbs: [flb] };
  });
}

/** Names of the checks that fail for `factory` (skipped checks are not run). */
async function failures(factory: () => ConformanceSubject<Uint8Array>): Promise<string[]> {
  const failed: string[] = [];
  for (const c of handlerConformanceCases(factory)) {
    if (c.skipReason !== undefined) continue;
    await c.run().catch(() => failed.push(c.name));
  }
  return failed;
}

const CHECK = {
  unpreserve: "preserve, then closing the session unpreserves and gives the file back intact",
  freezeSame: "a neighbour's freeze failure in the same session unfreezes the file; a later kexec succeeds",
  freezeLater: "a neighbour's freeze failure in a later session unfreezes the file; a later kexec succeeds",
  closeAfterFailure: "a session closed after a failed live update unpreserves cleanly",
  retrieveTwice: "survives kexec; retrieving twice gives one file on two fds; finish releases it",
  finishAll: "finish releases every file, retrieved or not, and nothing leaks",
  preserveAgain: "a retrieved and finished file can be preserved again and survives a second live update",
  neighbourSticky: "a neighbour's sticky retrieve failure leaves the handler's files alone",
  sticky: "a failed retrieve of the handler is sticky and finish still releases the file",
  veto: "a neighbour's finish veto finishes nothing; a retry finishes everything",
  flbs: "FLBs live exactly as long as their dependent files, in both kernels",
} as const;

/** The checks, in the kit's order, that retrieve the handed-over files in the next kernel. */
const AFTER_HANDOVER = [
  CHECK.retrieveTwice,
  CHECK.finishAll,
  CHECK.preserveAgain,
  CHECK.neighbourSticky,
  CHECK.sticky,
  CHECK.veto,
  CHECK.flbs,
];

describe("the conformance kit", () => {
  it("lists every check, and skips only what a subject cannot provide", () => {
    const cases = handlerConformanceCases(subject());
    expect(cases.map((c) => c.name)).toEqual([
      CHECK.unpreserve,
      "a second preservation of the same file is EBUSY, without calling the handler",
      CHECK.freezeSame,
      CHECK.freezeLater,
      CHECK.closeAfterFailure,
      ...AFTER_HANDOVER,
    ]);
    expect(cases.filter((c) => c.skipReason !== undefined)).toEqual([]);
    const bare = handlerConformanceCases(() => ({ ...subject()(), flbs: undefined, corrupt: undefined }));
    expect(bare.filter((c) => c.skipReason !== undefined).map((c) => [c.name, c.skipReason])).toEqual([
      [CHECK.sticky, "the subject has no corrupt() hook"],
      [CHECK.flbs, "the subject lists no FLBs"],
    ]);
  });

  it("passes a handler without freeze/unfreeze that captures the content at preserve", async () => {
    const failed = await failures(
      broken((base) => ({
        freeze: undefined,
        unfreeze: undefined,
        preserve(args) {
          const r = base.preserve(args) as { data: bigint };
          base.freeze!({ ...args, data: r.data, privateData: undefined });
          return r;
        },
      })),
    );
    expect(failed).toEqual([]);
  });

  it("accepts create() returning a bare fd, with verify working from the index", async () => {
    const failed = await failures(() => ({
      ...subject()(),
      create: (proc, i) => createTestFile(proc, `file-${i}`, content(i)),
      verify(proc, fd, { index, expected }) {
        expect(expected).toBeUndefined();
        expect(proc.pread(fd, TEST_FILE_CAPACITY, 0)).toEqual(content(index));
      },
    }));
    expect(failed).toEqual([]);
  });

  it("passes although the subject's canPreserve accepts every file (the neighbour registers first)", async () => {
    const failed = await failures(broken(() => ({ canPreserve: () => true })));
    expect(failed).toEqual([]);
  });

  it("catches a finish that does not free the block of a never-retrieved file", async () => {
    const failed = await failures(broken(() => ({ finish() {} })));
    expect(failed).toEqual([CHECK.finishAll, CHECK.sticky, CHECK.flbs]);
  });

  it("catches an unpreserve that does not free its block (in this kernel or the next)", async () => {
    const failed = await failures(broken(() => ({ unpreserve() {} })));
    expect(failed).toEqual([CHECK.unpreserve, CHECK.closeAfterFailure, CHECK.flbs]);
  });

  it("catches a freeze that does not capture the content", async () => {
    const failed = await failures(broken((base) => ({ freeze: (args) => base.unfreeze!(args) })));
    expect(failed).toEqual([CHECK.freezeSame, CHECK.freezeLater, ...AFTER_HANDOVER]);
  });

  it("catches an unfreeze that throws (a callback that cannot fail)", async () => {
    const failed = await failures(
      broken(() => ({
        unfreeze() {
          throw new Error("unfreeze failed");
        },
      })),
    );
    expect(failed).toEqual([CHECK.freezeSame, CHECK.freezeLater, CHECK.closeAfterFailure]);
  });
});
