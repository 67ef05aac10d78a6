/**
 * A small preservable file type for tests and examples, its handler `"luo-test-v1"`, and test
 * FLBs modelled on the kernel's `liveupdate-test-flb-v<i>`.
 *
 * A {@link TestFile} holds up to {@link TEST_FILE_CAPACITY} bytes. Its handler preserves one
 * 16 KiB block: `preserve` allocates it, `freeze` writes `{u32 magic, u32 length, bytes}` (so the
 * content is captured at reboot, not at preserve), `retrieve` rebuilds the file from those bytes,
 * `finish` frees the block of a file that was never retrieved. A {@link TestControl} records
 * every callback in a log and can make any callback fail (with an errno or a plain `Error`) or
 * veto, optionally only for some tokens — the switchboard of the fault-injection tests.
 *
 * @module
 */
import { LiveUpdateError, type ErrnoCode } from "../errors.js";
import { KernelFile, type Process } from "../kernel/index.js";
import { hex } from "../machine/hex.js";
import { PAGE_SIZE } from "../machine/index.js";
import { defineFileHandler, defineFlb, type FileHandler, type Flb } from "../liveupdate/index.js";
import { definePlugin, type Plugin } from "../plugin/index.js";

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

/** Callbacks that can be made to fail. */
export type TestOp =
  | "preserve"
  | "unpreserve"
  | "freeze"
  | "unfreeze"
  | "retrieve"
  | "canFinish"
  | "finish"
  | "flbPreserve"
  | "flbUnpreserve"
  | "flbRetrieve"
  | "flbFinish";

/** How a callback fails. */
export interface TestFault {
  /** Fail with this errno (default `EIO`); ignored for `canFinish`, which vetoes. */
  readonly code?: ErrnoCode;
  /** Throw a plain `Error` instead of a `LiveUpdateError`. */
  readonly plain?: boolean;
  /** Only for these tokens (file callbacks) or FLB indexes (FLB callbacks); default: all. */
  readonly only?: readonly bigint[];
}

/** One recorded callback. */
export interface TestCall {
  /** Which callback. */
  readonly op: TestOp;
  /** File token, or FLB index for FLB callbacks. */
  readonly key: bigint;
  /** Session name (file callbacks). */
  readonly session?: string;
  /** Whether the call failed by injection. */
  readonly failed: boolean;
}

/** Fault switches and the call log shared by every kernel that loads the test plugin. */
export class TestControl {
  /** Active faults by callback. */
  readonly faults = new Map<TestOp, TestFault>();
  /** Every callback, in call order. */
  readonly log: TestCall[] = [];

  /** Makes `op` fail (see {@link TestFault}). */
  fail(op: TestOp, fault: TestFault = {}): this {
    this.faults.set(op, fault);
    return this;
  }

  /** Removes every fault. */
  heal(): this {
    this.faults.clear();
    return this;
  }

  /** The log filtered to one callback, as keys. */
  calls(op: TestOp): bigint[] {
    return this.log.filter((c) => c.op === op && !c.failed).map((c) => c.key);
  }

  /** Records a call and throws if a fault applies. For `canFinish` returns false instead. */
  hit(op: TestOp, key: bigint, session?: string): boolean {
    const f = this.faults.get(op);
    const failing = f !== undefined && (f.only === undefined || f.only.includes(key));
    this.log.push({ op, key, session, failed: failing });
    if (!failing) return true;
    if (op === "canFinish") return false;
    // A plain Error on purpose: the core must wrap foreign errors as EIO.
    // eslint-disable-next-line no-restricted-syntax
    if (f.plain) throw new Error(`injected plain failure in ${op} (${key})`);
    throw new LiveUpdateError(f.code ?? "EIO", `injected failure in ${op} (${key})`);
  }
}

/** Builds the test handler bound to `control`. */
export function createTestHandler(control: TestControl): FileHandler<TestFile, undefined> {
  return defineFileHandler<TestFile, undefined>({
    compatible: TEST_HANDLER_COMPATIBLE,
    canPreserve: (file) => file instanceof TestFile,
    preserve({ kho, token, session }) {
      control.hit("preserve", token, session.sessionName);
      return { data: kho.allocPreserve(BLOCK_SIZE).phys };
    },
    unpreserve({ kho, data, token, session }) {
      control.hit("unpreserve", token, session.sessionName);
      kho.unpreserveFree(data);
    },
    freeze({ machine, file, data, token, session }) {
      control.hit("freeze", token, session.sessionName);
      const block = machine.view(data, BLOCK_SIZE);
      const dv = new DataView(block.buffer, block.byteOffset, BLOCK_HEADER_SIZE);
      dv.setUint32(0, TEST_FILE_MAGIC, true);
      dv.setUint32(4, file.content.length, true);
      block.set(file.content, BLOCK_HEADER_SIZE);
    },
    unfreeze({ machine, data, token, session }) {
      control.hit("unfreeze", token, session.sessionName);
      machine.view(data, BLOCK_SIZE).fill(0);
    },
    retrieve({ incoming, data, token, session }) {
      control.hit("retrieve", token, session.sessionName);
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
    canFinish({ token, session }) {
      return control.hit("canFinish", token, session.sessionName);
    },
    finish({ incoming, data, retrieveStatus, token, session }) {
      control.hit("finish", token, session.sessionName);
      if (retrieveStatus !== 1 && incoming?.covers(data, BLOCK_SIZE)) incoming.restoreFree(data);
    },
  });
}

/** The live object of a test FLB. */
export interface TestFlbObject {
  /** The FLB's magic (`TEST_FLB_MAGIC + index`). */
  readonly magic: bigint;
}

/** Builds test FLB `index` (`liveupdate-test-flb-v<index>`) bound to `control`. */
export function createTestFlb(control: TestControl, index: number): Flb<TestFlbObject> {
  const key = BigInt(index);
  return defineFlb<TestFlbObject>({
    compatible: `liveupdate-test-flb-v${index}`,
    preserve() {
      control.hit("flbPreserve", key);
      const magic = TEST_FLB_MAGIC + key;
      return { data: magic, obj: { magic } };
    },
    unpreserve() {
      control.hit("flbUnpreserve", key);
    },
    retrieve({ data }) {
      control.hit("flbRetrieve", key);
      return { magic: data };
    },
    finish() {
      control.hit("flbFinish", key);
    },
  });
}

/** Options of {@link testHandlerPlugin}. */
export interface TestPluginOptions {
  /** Shared fault switches and log (default: a new one). */
  readonly control?: TestControl;
  /** Number of test FLBs linked to the handler (default 0). */
  readonly flbs?: number;
}

/** The test handler, its FLBs and their control, as returned by {@link testHandlerPlugin}. */
export interface TestPlugin extends Plugin {
  /** Fault switches and call log. */
  readonly control: TestControl;
  /** The handler. */
  readonly handler: FileHandler<TestFile, undefined>;
  /** The linked FLBs. */
  readonly testFlbs: readonly Flb<TestFlbObject>[];
}

/** A plugin that registers the test handler and `flbs` test FLBs. */
export function testHandlerPlugin(options: TestPluginOptions = {}): TestPlugin {
  const control = options.control ?? new TestControl();
  const handler = createTestHandler(control);
  const testFlbs = Array.from({ length: options.flbs ?? 0 }, (_, i) => createTestFlb(control, i));
  const plugin = definePlugin({
    name: "luo-test",
    async register(ctx) {
      await ctx.registerFileHandler(handler);
      for (const flb of testFlbs) await ctx.registerFlb(handler, flb);
    },
  });
  return { ...plugin, control, handler, testFlbs };
}
