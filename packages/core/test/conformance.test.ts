// The handler conformance kit run against the core test handler ("luo-test-v1", with 2 test
// FLBs and mutate/corrupt hooks, so no check is skipped) and against a handler of another file
// type built from it, and against deliberately broken variants to show that the kit catches
// leaks, lost content, writes lost after preserve, greedy canPreserve and callbacks that throw.
import { describe, expect, it } from "vitest";
import { defineFileHandler, definePlugin, type FileHandler, type Plugin } from "@luo/core";
import {
  TEST_FILE_CAPACITY,
  TEST_HANDLER_COMPATIBLE,
  TestControl,
  TestFile,
  createTestFile,
  createTestFlb,
  createTestHandler,
  testHandlerPlugin,
} from "@luo/core/testing";
import {
  CONFORMANCE_CHECKS as C,
  ConformanceFailure,
  describeHandlerConformance,
  handlerConformanceCases,
  type ConformanceSubject,
} from "@luo/core/testing/conformance";

const content = (i: number): Uint8Array => new TextEncoder().encode(`conformance file #${i} `.repeat(i + 1));
/** What `mutate` writes at offset 0 after PRESERVE_FD. */
const CHANGE = new TextEncoder().encode("CHANGED");

type Handler = FileHandler<TestFile, undefined>;
type Made = { plugin: Plugin; flbs: ConformanceSubject["flbs"] };

/** The test handler as a conformance subject; `plugin` replaces the handler plugin when given. */
function subject(plugin?: (control: TestControl) => Made, compatible = TEST_HANDLER_COMPATIBLE) {
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
      compatible,
      plugins,
      flbs,
      create: (proc, i) => ({ fd: createTestFile(proc, `file-${i}`, content(i)), expected: content(i) }),
      mutate(proc, fd, { expected }) {
        proc.pwrite(fd, CHANGE, 0);
        const next = new Uint8Array(Math.max(expected!.length, CHANGE.length));
        next.set(expected!);
        next.set(CHANGE, 0);
        return next;
      },
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
function broken(change: (base: Handler) => Partial<Handler>) {
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

/** A file type of its own, kept by the test handler's logic under another compatible. */
class CopyFile extends TestFile {}
const COPY_COMPATIBLE = "luo-conformance-copy-v1";

/**
 * The "copy" handler: the test handler's callbacks for {@link CopyFile}s; `accepts` is its
 * canPreserve (a correct one claims only copy files). Not the test handler, so the kit also
 * offers it a plain test file.
 */
function copySubject(accepts: (file: unknown) => boolean = (f) => f instanceof CopyFile) {
  const make = subject((control) => {
    const base = createTestHandler(control);
    const handler = defineFileHandler<TestFile, undefined>({
      ...base,
      compatible: COPY_COMPATIBLE,
      canPreserve: accepts,
      async retrieve(args) {
        const f = await base.retrieve(args);
        return new CopyFile(f.label, f.content);
      },
    });
    const plugin = definePlugin({ name: "copy", register: (ctx) => ctx.registerFileHandler(handler) });
    return { plugin, flbs: [] };
  }, COPY_COMPATIBLE);
  return (): ConformanceSubject<Uint8Array> => ({
    ...make(),
    create: (proc, i) => ({
      fd: proc.installFile(new CopyFile(`file-${i}`, content(i))),
      expected: content(i),
    }),
  });
}

describeHandlerConformance(copySubject());

/** The checks that fail for `factory`, with their errors (checks that do not apply are not run). */
async function failures(factory: () => ConformanceSubject<Uint8Array>): Promise<Map<string, unknown>> {
  const failed = new Map<string, unknown>();
  for (const c of handlerConformanceCases(factory)) {
    if (c.skipReason !== undefined) continue;
    await c.run().catch((e: unknown) => failed.set(c.name, e));
  }
  return failed;
}

/** The checks, in the kit's order, that retrieve the handed-over files in the next kernel. */
const AFTER_HANDOVER = [
  C.mutate,
  C.retrieveTwice,
  C.finishAll,
  C.preserveAgain,
  C.neighbourSticky,
  C.sticky,
  C.veto,
  C.flbs,
];

describe("the conformance kit", () => {
  it("lists every check, and skips only what a subject cannot provide", () => {
    const cases = handlerConformanceCases(subject());
    expect(cases.map((c) => c.name)).toEqual([
      C.unpreserve,
      C.double,
      C.foreign,
      C.freezeSame,
      C.freezeLater,
      C.closeAfterFailure,
      ...AFTER_HANDOVER,
    ]);
    expect(Object.values(C)).toHaveLength(cases.length);
    expect(cases.filter((c) => c.skipReason !== undefined)).toEqual([]);
    const bare = handlerConformanceCases(() => ({
      ...subject()(),
      flbs: undefined,
      corrupt: undefined,
      mutate: undefined,
    }));
    expect(bare.filter((c) => c.skipReason !== undefined).map((c) => [c.name, c.skipReason])).toEqual([
      [C.mutate, "the subject has no mutate() hook"],
      [C.sticky, "the subject has no corrupt() hook"],
      [C.flbs, "the subject lists no FLBs"],
    ]);
  });

  it("accepts create() returning a bare fd and mutate() returning nothing", async () => {
    const failed = await failures(() => ({
      ...subject()(),
      create: (proc, i) => createTestFile(proc, `file-${i}`, content(i)),
      mutate: (proc, fd) => void proc.pwrite(fd, CHANGE, 0),
      verify(proc, fd, { index, expected, mutated }) {
        expect(expected).toBeUndefined();
        const want = content(index);
        if (mutated) want.set(CHANGE, 0);
        expect(proc.pread(fd, TEST_FILE_CAPACITY, 0)).toEqual(want);
      },
    }));
    expect([...failed.keys()]).toEqual([]);
  });

  it("catches a handler without freeze that captures at preserve and loses later writes", async () => {
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
    expect([...failed.keys()]).toEqual([C.mutate]);
    const e = failed.get(C.mutate);
    expect(e).toBeInstanceOf(ConformanceFailure);
    expect((e as Error).message).toContain("made after PRESERVE_FD did not survive the live update");
    expect((e as Error).cause, "the subject's own verify failure").toBeInstanceOf(Error);
  });

  it("catches a canPreserve that accepts every file (/dev/null)", async () => {
    const failed = await failures(broken(() => ({ canPreserve: () => true })));
    expect([...failed.keys()]).toEqual([C.foreign]);
    expect((failed.get(C.foreign) as Error).message).toContain(
      "canPreserve must refuse chardev:/dev/null, a file of another type",
    );
  });

  it("catches a handler of another type whose canPreserve accepts the test handler's files", async () => {
    const failed = await failures(copySubject((f) => f instanceof TestFile));
    expect([...failed.keys()]).toEqual([C.foreign]);
    expect((failed.get(C.foreign) as Error).message).toContain("canPreserve must refuse testfile:foreign");
  });

  it("reports a finish that throws with its own error in every check that finishes", async () => {
    const thrown = new Error("finish exploded");
    const failed = await failures(
      broken(() => ({
        finish() {
          throw thrown;
        },
      })),
    );
    expect([...failed.keys()]).toEqual([C.freezeSame, C.freezeLater, ...AFTER_HANDOVER]);
    for (const [name, e] of failed) {
      expect(e, name).toBeInstanceOf(ConformanceFailure);
      expect((e as Error).message, name).toMatch(
        /^handler "luo-test-v1" finish of conf-[a-z]+\/\d+ threw \(it must not fail\): finish exploded$/,
      );
      expect((e as Error).cause, name).toBe(thrown);
    }
  });

  it("reports an unpreserve that throws with its own error in every check that unpreserves", async () => {
    const failed = await failures(
      broken(() => ({
        unpreserve() {
          throw new Error("unpreserve exploded");
        },
      })),
    );
    expect([...failed.keys()]).toEqual([C.unpreserve, C.double, C.foreign, C.closeAfterFailure, C.flbs]);
    for (const [name, e] of failed) {
      expect((e as Error).message, name).toMatch(
        /^handler "luo-test-v1" unpreserve of conf-[a-z]+\/\d+ threw \(it must not fail\): unpreserve exploded$/,
      );
    }
  });

  it("catches a finish that does not free the block of a never-retrieved file", async () => {
    const failed = await failures(broken(() => ({ finish() {} })));
    expect([...failed.keys()]).toEqual([C.finishAll, C.sticky, C.flbs]);
  });

  it("catches an unpreserve that does not free its block (in this kernel or the next)", async () => {
    const failed = await failures(broken(() => ({ unpreserve() {} })));
    expect([...failed.keys()]).toEqual([C.unpreserve, C.closeAfterFailure, C.flbs]);
  });

  it("catches a freeze that does not capture the content", async () => {
    const failed = await failures(broken((base) => ({ freeze: (args) => base.unfreeze!(args) })));
    expect([...failed.keys()]).toEqual([C.freezeSame, C.freezeLater, ...AFTER_HANDOVER]);
  });

  it("catches an unfreeze that throws (a callback that cannot fail)", async () => {
    const failed = await failures(
      broken(() => ({
        unfreeze() {
          throw new Error("unfreeze failed");
        },
      })),
    );
    expect([...failed.keys()]).toEqual([C.freezeSame, C.freezeLater, C.closeAfterFailure]);
    for (const e of failed.values()) expect((e as Error).message).toContain("unfreeze failed");
  });
});
