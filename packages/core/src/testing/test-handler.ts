/**
 * A small preservable file type for tests and examples, its handler `"luo-test-v1"`, and test
 * FLBs modelled on the kernel's `liveupdate-test-flb-v<i>`.
 *
 * A {@link TestFile} holds up to {@link TEST_FILE_CAPACITY} bytes. Its handler preserves one
 * 16 KiB block: `preserve` allocates it, `freeze` writes `{u32 magic, u32 length, bytes}` (so the
 * content is captured at reboot, not at preserve), `retrieve` rebuilds the file from those bytes,
 * `finish` frees the block of a file that was never retrieved. Test FLB `i` hands over the value
 * `TEST_FLB_MAGIC + i`; its `retrieve` rejects any other value with `EINVAL`.
 *
 * A {@link TestControl} records every callback in a log (for FLBs with the value the callback
 * saw) and can make any callback fail (with an errno or a plain `Error`) or veto, optionally only
 * for some tokens — the switchboard of the fault-injection tests. {@link testHandlerPlugin} gives
 * every kernel that registers it a fresh control (a cold boot, `machine.boot`, and `kexec()`,
 * which reuses the plugin object): `plugin.control` is the newest kernel's, `plugin.controlOf(k)`
 * any kernel's. Pass `control` to share one switchboard across kernels instead.
 *
 * Nothing here imports a test runner: use it from plain scripts, examples or any test framework.
 *
 * @module
 */
import { LiveUpdateError } from "../errors.js";
import { KernelFile, type Process } from "../kernel/index.js";
import { hex } from "../machine/hex.js";
import { PAGE_SIZE } from "../machine/index.js";
import { defineFileHandler, defineFlb, type FileHandler, type Flb } from "../liveupdate/index.js";
import { definePlugin, type Plugin } from "../plugin/index.js";
import {
  TestControl,
  TestControls,
  controlFor,
  type TestControlSource,
  type TestKernelKey,
} from "./test-control.js";

/** The block the test handler preserves per file: `{u32 magic, u32 length}` then the bytes. */
const BLOCK_SIZE = 4 * PAGE_SIZE;
/** Bytes of the block header `{u32 magic, u32 length}`. */
const BLOCK_HEADER_SIZE = 8;

/** Bytes a test file can hold: its preserved block less the header. */
export const TEST_FILE_CAPACITY = BLOCK_SIZE - BLOCK_HEADER_SIZE;
/** Compatible of the test handler. */
export const TEST_HANDLER_COMPATIBLE = "luo-test-v1";
/** Magic at the start of a frozen test-file block. */
export const TEST_FILE_MAGIC = 0x4c554f54;
/** Base of the test FLB data values: FLB i hands over `TEST_FLB_MAGIC + i`. */
export const TEST_FLB_MAGIC = 0xfeedf00dcafebee0n;

/** A plain in-memory file with a byte buffer. */
export class TestFile extends KernelFile {
  /** Current content. */
  content: Uint8Array;

  /**
   * @param label - name in messages
   * @param content - initial bytes
   */
  constructor(
    readonly label: string,
    content: Uint8Array = new Uint8Array(0),
  ) {
    super();
    if (content.length > TEST_FILE_CAPACITY) {
      throw new LiveUpdateError(
        "EFBIG",
        `test file ${label}: ${content.length} bytes exceed ${TEST_FILE_CAPACITY}`,
      );
    }
    this.content = content.slice();
  }

  /** `testfile:<label>`. */
  get description(): string {
    return `testfile:${this.label}`;
  }

  override readAt(offset: number, length: number): Uint8Array {
    return this.content.slice(offset, offset + length);
  }

  override writeAt(offset: number, data: Uint8Array): number {
    const end = offset + data.length;
    if (end > TEST_FILE_CAPACITY)
      throw new LiveUpdateError("EFBIG", `${this.description}: write past ${TEST_FILE_CAPACITY}`);
    if (end > this.content.length) {
      const grown = new Uint8Array(end);
      grown.set(this.content);
      this.content = grown;
    }
    this.content.set(data, offset);
    return data.length;
  }

  override size(): number {
    return this.content.length;
  }

  override truncate(length: number): void {
    if (length > TEST_FILE_CAPACITY)
      throw new LiveUpdateError("EFBIG", `${this.description}: size ${length} too big`);
    const next = new Uint8Array(length);
    next.set(this.content.subarray(0, length));
    this.content = next;
  }
}

/** Creates a {@link TestFile} in `proc` and returns its fd. */
export function createTestFile(proc: Process, label: string, content?: Uint8Array): number {
  return proc.installFile(new TestFile(label, content));
}

/** Builds the test handler bound to `source` (one control, or the per-kernel controls). */
export function createTestHandler(source: TestControlSource): FileHandler<TestFile, undefined> {
  return defineFileHandler<TestFile, undefined>({
    compatible: TEST_HANDLER_COMPATIBLE,
    canPreserve: (file) => file instanceof TestFile,
    preserve({ kho, token, session, container }) {
      controlFor(source, container).hit("preserve", token, session.sessionName);
      return { data: kho.allocPreserve(BLOCK_SIZE).phys };
    },
    unpreserve({ kho, data, token, session, container }) {
      controlFor(source, container).hit("unpreserve", token, session.sessionName);
      kho.unpreserveFree(data);
    },
    freeze({ machine, file, data, token, session, container }) {
      controlFor(source, container).hit("freeze", token, session.sessionName);
      const block = machine.view(data, BLOCK_SIZE);
      const dv = new DataView(block.buffer, block.byteOffset, BLOCK_HEADER_SIZE);
      dv.setUint32(0, TEST_FILE_MAGIC, true);
      dv.setUint32(4, file.content.length, true);
      block.set(file.content, BLOCK_HEADER_SIZE);
    },
    unfreeze({ machine, data, token, session, container }) {
      controlFor(source, container).hit("unfreeze", token, session.sessionName);
      machine.view(data, BLOCK_SIZE).fill(0);
    },
    retrieve({ incoming, data, token, session, container }) {
      controlFor(source, container).hit("retrieve", token, session.sessionName);
      if (!incoming || !incoming.covers(data, BLOCK_SIZE)) {
        throw new LiveUpdateError("EINVAL", `test file data ${hex(data)} is not handed-over memory`);
      }
      const block = incoming.machine.view(data, BLOCK_SIZE);
      const dv = new DataView(block.buffer, block.byteOffset, BLOCK_HEADER_SIZE);
      const length = dv.getUint32(4, true);
      if (dv.getUint32(0, true) !== TEST_FILE_MAGIC || length > TEST_FILE_CAPACITY) {
        throw new LiveUpdateError("EIO", `test file block at ${hex(data)} is corrupt`);
      }
      const file = new TestFile(
        `retrieved-${token}`,
        block.slice(BLOCK_HEADER_SIZE, BLOCK_HEADER_SIZE + length),
      );
      incoming.restoreFree(data);
      return file;
    },
    canFinish({ token, session, container }) {
      return controlFor(source, container).hit("canFinish", token, session.sessionName);
    },
    finish({ incoming, data, retrieveStatus, token, session, container }) {
      controlFor(source, container).hit("finish", token, session.sessionName);
      if (retrieveStatus !== 1 && incoming?.covers(data, BLOCK_SIZE)) incoming.restoreFree(data);
    },
  });
}

/** The live object of a test FLB. */
export interface TestFlbObject {
  /** The FLB's magic (`TEST_FLB_MAGIC + index`). */
  readonly magic: bigint;
}

/**
 * Builds test FLB `index` (`liveupdate-test-flb-v<index>`) bound to `source`. It hands over
 * `TEST_FLB_MAGIC + index`; `retrieve` fails with `EINVAL` on any other incoming value.
 */
export function createTestFlb(source: TestControlSource, index: number): Flb<TestFlbObject> {
  const key = BigInt(index);
  const magic = TEST_FLB_MAGIC + key;
  const compatible = `liveupdate-test-flb-v${index}`;
  return defineFlb<TestFlbObject>({
    compatible,
    preserve({ kho }) {
      controlFor(source, kho).hit("flbPreserve", key, undefined, magic);
      return { data: magic, obj: { magic } };
    },
    unpreserve({ kho, data }) {
      controlFor(source, kho).hit("flbUnpreserve", key, undefined, data);
    },
    retrieve({ incoming, data }) {
      controlFor(source, incoming).hit("flbRetrieve", key, undefined, data);
      if (data !== magic) {
        throw new LiveUpdateError(
          "EINVAL",
          `FLB "${compatible}": incoming data ${hex(data)} is not ${hex(magic)}`,
        );
      }
      return { magic: data };
    },
    finish({ incoming, obj }) {
      controlFor(source, incoming).hit("flbFinish", key, undefined, obj.magic);
    },
  });
}

/** Options of {@link testHandlerPlugin}. */
export interface TestPluginOptions {
  /**
   * One control shared by every kernel that registers the plugin (faults and log carry over a
   * kexec). Default: a fresh control per kernel.
   */
  readonly control?: TestControl;
  /** Number of test FLBs linked to the handler (default 0). */
  readonly flbs?: number;
}

/** The test handler, its FLBs and their controls, as returned by {@link testHandlerPlugin}. */
export interface TestPlugin extends Plugin {
  /**
   * Fault switches and call log of the newest kernel that registered the plugin (the shared
   * control when one was given). `ENOENT` before the first boot unless one was given.
   */
  readonly control: TestControl;
  /** The control of `kernel` (the shared control when one was given). `ENOENT` if not registered there. */
  controlOf(kernel: TestKernelKey): TestControl;
  /** The handler. */
  readonly handler: FileHandler<TestFile, undefined>;
  /** The linked FLBs. */
  readonly testFlbs: readonly Flb<TestFlbObject>[];
}

/**
 * A plugin that registers the test handler and `flbs` test FLBs. Every kernel that registers it
 * gets a fresh {@link TestControl} (unless `options.control` is shared).
 *
 * @example
 * ```ts
 * import { Machine } from "@luo/core";
 * import { testHandlerPlugin } from "@luo/core/testing";
 *
 * const plugin = testHandlerPlugin({ flbs: 1 });
 * const k1 = await new Machine({ memory: "16 MiB" }).boot({ plugins: [plugin] });
 * plugin.control.fail("freeze", { code: "EAGAIN" }); // arm one fault in k1
 * plugin.control.clear("freeze"); // and clear it again
 * const k2 = await k1.kexec(); // same plugin object, fresh state in k2
 * console.log(plugin.control.log.length); // 0: k2 has not called the handler yet
 * console.log(plugin.controlOf(k1).log.length); // k1's calls (none: nothing was preserved)
 * ```
 */
export function testHandlerPlugin(options: TestPluginOptions = {}): TestPlugin {
  const shared = options.control;
  const controls = new TestControls();
  const source: TestControlSource = shared ?? controls;
  const handler = createTestHandler(source);
  const testFlbs = Array.from({ length: options.flbs ?? 0 }, (_, i) => createTestFlb(source, i));
  const plugin = definePlugin({
    name: "luo-test",
    async register(ctx) {
      controls.attach(ctx);
      await ctx.registerFileHandler(handler);
      for (const flb of testFlbs) await ctx.registerFlb(handler, flb);
    },
  });
  return {
    ...plugin,
    get control() {
      return shared ?? controls.current;
    },
    controlOf: (kernel) => shared ?? controls.of(kernel),
    handler,
    testFlbs,
  };
}
