// Shared helpers of the behavioural LUO suite (test/luo-*.test.ts): errno assertions, booting a
// machine with the test handler, kexec, and two small real file handlers of our own:
//   - "luo-value-v1": a file holding one u64 that is handed over as the record's `data` (no
//     pages of its own), so thousands of files cost only their ABI records — the scale and
//     block-boundary tests use it, and its optional `identity` exercises `getId`;
//   - "luo-gate-v1": a file whose handler `preserve` waits on a promise the test releases, to
//     hold a session operation inside the serialize lock while a kexec starts.
// Both are ordinary handlers registered through plugins; nothing in the core is mocked.
import { expect } from "vitest";
import {
  ERRNO,
  KernelFile,
  LiveUpdateError,
  Machine,
  PAGE_SIZE,
  defineFileHandler,
  definePlugin,
  type ErrnoCode,
  type Kernel,
  type LiveUpdateDevice,
  LIVE_UPDATE_EVENT_NAMES,
  type LiveUpdateEventName,
  type LiveUpdateEventPayloads,
  type Plugin,
  type Process,
} from "@luo/core";
import {
  testHandlerPlugin,
  type TestControl,
  type TestPlugin,
  type TestPluginOptions,
} from "@luo/core/testing";

export const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
export const dec = (b: Uint8Array): string => new TextDecoder().decode(b);
export const utf8Length = (s: string): number => enc(s).length;

/** Asserts `e` is a LiveUpdateError with `code` and the matching Node-style errno; returns it. */
export function assertErrno(e: unknown, code: ErrnoCode): LiveUpdateError {
  expect(e, `expected a LiveUpdateError ${code}, got ${String(e)}`).toBeInstanceOf(LiveUpdateError);
  const err = e as LiveUpdateError;
  expect(err.code, err.message).toBe(code);
  expect(err.errno).toBe(-ERRNO[code]);
  return err;
}

/** Awaits `p` (or calls `fn`), expects it to fail with `code`; returns the error. */
export async function rejects(
  p: Promise<unknown> | (() => unknown),
  code: ErrnoCode,
): Promise<LiveUpdateError> {
  let thrown: unknown = undefined;
  let failed = false;
  try {
    await (typeof p === "function" ? p() : p);
  } catch (e) {
    failed = true;
    thrown = e;
  }
  expect(failed, `expected ${code}, but the call succeeded`).toBe(true);
  return assertErrno(thrown, code);
}

/** Synchronous variant of {@link rejects}. */
export function throws(fn: () => unknown, code: ErrnoCode): LiveUpdateError {
  let thrown: unknown = undefined;
  let failed = false;
  try {
    fn();
  } catch (e) {
    failed = true;
    thrown = e;
  }
  expect(failed, `expected ${code}, but the call succeeded`).toBe(true);
  return assertErrno(thrown, code);
}

/** A booted kernel with one process that has /dev/liveupdate open. */
export interface Booted {
  readonly machine: Machine;
  readonly kernel: Kernel;
  readonly proc: Process;
  readonly dev: LiveUpdateDevice;
}

/** The test handler plugin on a fresh machine, plus any extra plugins. */
export interface TestWorld extends Booted {
  readonly plugin: TestPlugin;
  readonly plugins: readonly Plugin[];
}

/** Boots a fresh machine with the test handler (and `extra` plugins) and opens /dev/liveupdate. */
export async function bootTest(
  options: TestPluginOptions & { memory?: string; extra?: readonly Plugin[] } = {},
): Promise<TestWorld> {
  const plugin = testHandlerPlugin(options);
  const plugins = [plugin, ...(options.extra ?? [])];
  const machine = new Machine({ memory: options.memory ?? "32 MiB" });
  const kernel = await machine.boot({ plugins });
  const proc = kernel.spawn("test");
  const dev = await proc.openLiveUpdate();
  return { machine, kernel, proc, dev, plugin, plugins };
}

/** kexec into the next kernel in this process (asserting one booted) and open /dev/liveupdate. */
export async function kexecOpen(kernel: Kernel, plugins?: readonly Plugin[]): Promise<Booted> {
  const next = await kexec(kernel, plugins);
  const proc = next.spawn("test");
  const dev = await proc.openLiveUpdate();
  return { machine: next.machine, kernel: next, proc, dev };
}

/** kexec into the next kernel in this process; asserts the old one halted. */
export async function kexec(kernel: Kernel, plugins?: readonly Plugin[]): Promise<Kernel> {
  const next = await kernel.kexec(plugins ? { plugins } : {});
  expect(next).toBeDefined();
  expect(kernel.halted).toBe(true);
  return next!;
}

/**
 * The test handler's calls from log index `mark` on (take `mark` as `control.log.length` before
 * the step), each as `op:key`, with `!` when the call failed by injection.
 */
export function callsSince(control: TestControl, mark: number): string[] {
  return control.log.slice(mark).map((x) => `${x.op}:${x.key}${x.failed ? "!" : ""}`);
}

/** Pages of one test-handler block (16 KiB), which the test handler preserves per file. */
export const TEST_BLOCK_PAGES = (16 * 1024) / PAGE_SIZE;

/** Preserved pages of the machine right now. */
export const preservedPages = (m: Machine): number => m.stats().preservedPages;

// ---- the value handler ------------------------------------------------------------------------

/** Compatible of the value handler. */
export const VALUE_COMPATIBLE = "luo-value-v1";

/** A file holding one u64; `identity` (if set) is what the handler's `getId` returns. */
export class ValueFile extends KernelFile {
  /**
   * @param value - the u64 the file carries (handed over as the record's data)
   * @param identity - optional identity for the double-preservation registry
   */
  constructor(
    readonly value: bigint,
    readonly identity?: unknown,
  ) {
    super();
  }

  get description(): string {
    return `valuefile:${this.value}`;
  }
}

/** The value handler: data = the file's value; no pages, no freeze. */
export const valueHandler = defineFileHandler<ValueFile>({
  compatible: VALUE_COMPATIBLE,
  canPreserve: (f) => f instanceof ValueFile,
  preserve: ({ file }) => ({ data: file.value }),
  unpreserve() {},
  retrieve: ({ data }) => new ValueFile(data),
  finish() {},
  getId: (f) => f.identity ?? f,
});

/** A plugin registering {@link valueHandler}. */
export const valuePlugin: Plugin = definePlugin({
  name: "luo-value",
  register: (ctx) => ctx.registerFileHandler(valueHandler),
});

// ---- the gate handler -------------------------------------------------------------------------

/** A file whose preservation waits for {@link Gate.open}. */
export class GateFile extends KernelFile {
  readonly description = "gatefile";
}

/** Holds gate-file preserves until opened. */
export interface Gate {
  /** Resolves when a gate preserve has started (is inside the serialize lock). */
  readonly entered: Promise<void>;
  /** Lets every waiting preserve finish. */
  open(): void;
  /** The gate plugin for boot/kexec. */
  readonly plugin: Plugin;
}

/** A gate: its handler `"luo-gate-v1"` preserves only after {@link Gate.open}. */
export function createGate(): Gate {
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  let entered!: () => void;
  const enteredP = new Promise<void>((r) => (entered = r));
  const handler = defineFileHandler<GateFile>({
    compatible: "luo-gate-v1",
    canPreserve: (f) => f instanceof GateFile,
    async preserve({ token }) {
      entered();
      await opened;
      return { data: token };
    },
    unpreserve() {},
    retrieve: () => new GateFile(),
    finish() {},
  });
  const plugin = definePlugin({ name: "luo-gate", register: (ctx) => ctx.registerFileHandler(handler) });
  return { entered: enteredP, open, plugin };
}

// ---- events -----------------------------------------------------------------------------------

/** Every event name of `kernel.liveupdate.events`. */
export const EVENT_NAMES = LIVE_UPDATE_EVENT_NAMES;

/** A recorded event: its name plus the payload (with `time`). */
export type Recorded = { name: LiveUpdateEventName; time: number } & Partial<
  LiveUpdateEventPayloads[LiveUpdateEventName]
> &
  Record<string, unknown>;

/** Records every event of `kernel` into the returned array. */
export function recordEvents(kernel: Kernel): Recorded[] {
  const out: Recorded[] = [];
  for (const name of EVENT_NAMES) {
    kernel.liveupdate.events.on(name, (e: object) => out.push({ name, ...(e as { time: number }) }));
  }
  return out;
}
