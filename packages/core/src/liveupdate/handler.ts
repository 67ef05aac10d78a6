/**
 * The file-handler plugin API: what a third party writes to make a file type preservable.
 *
 * The lifecycle, with its happy and unhappy paths, is documented on {@link FileHandlerSpec}.
 *
 * @module
 */
import type { DependencyContainer } from "tsyringe";
import type { LiveUpdateError } from "../errors.js";
import type { KernelFile } from "../kernel/index.js";
import type { Kho, KhoIncoming } from "../kho/index.js";
import type { Machine } from "../machine/index.js";
import type { FlbAccess } from "./flb.js";
import { checkShape, defineShape } from "./define-shape.js";

/**
 * A value or a promise of it.
 *
 * @category Handlers and FLBs
 */
export type Awaitable<T> = T | Promise<T>;

/**
 * What a handler can ask about other files of the same session (the dependency API):
 * `tokenOf` in the old kernel, `incomingFile` in the new one.
 *
 * @category Handlers and FLBs
 */
export interface SessionDependencies {
  /** Name of the session the callback runs for. */
  readonly sessionName: string;
  /**
   * Token of `file` if it is preserved in this (outgoing) session and was preserved before the
   * file being handled. `ENOENT` otherwise.
   */
  tokenOf(file: KernelFile): bigint;
  /**
   * The incoming file with `token` in this session, retrieving it first if needed (it must have
   * been preserved before the file being handled). `ENOENT` if absent, or the retrieve error.
   */
  incomingFile(token: bigint | number): Promise<KernelFile>;
}

/**
 * Arguments every callback receives.
 *
 * @category Handlers and FLBs
 */
export interface HandlerContext {
  /** The handler being called. */
  readonly handler: FileHandler;
  /** The machine. */
  readonly machine: Machine;
  /** Outgoing KHO: allocate and preserve pages for the next kernel. */
  readonly kho: Kho;
  /** Incoming KHO handover, after a live update. */
  readonly incoming: KhoIncoming | undefined;
  /** The session's dependency API. */
  readonly session: SessionDependencies;
  /** FLB access (`getOutgoing`, `getIncoming`). */
  readonly flb: FlbAccess;
  /** The kernel's DI container (resolve your plugin's services here). */
  readonly container: DependencyContainer;
  /** The user's token of the file. */
  readonly token: bigint;
}

/**
 * Arguments of `preserve`.
 *
 * @category Handlers and FLBs
 */
export interface PreserveArgs<F extends KernelFile> extends HandlerContext {
  /** The file to preserve. */
  readonly file: F;
}

/**
 * What `preserve` returns.
 *
 * @category Handlers and FLBs
 */
export interface PreserveResult<P> {
  /** Opaque u64 handed over (usually a physical address). */
  readonly data: bigint;
  /** Runtime-only state given back to unpreserve/freeze/unfreeze; not handed over. */
  readonly privateData?: P;
}

/**
 * Arguments of `unpreserve`, `freeze` and `unfreeze`.
 *
 * @category Handlers and FLBs
 */
export interface PreservedArgs<F extends KernelFile, P> extends PreserveArgs<F> {
  /** Current serialized data. */
  readonly data: bigint;
  /** What `preserve` returned as private data. */
  readonly privateData: P | undefined;
}

/**
 * Arguments of `retrieve`.
 *
 * @category Handlers and FLBs
 */
export interface RetrieveArgs extends HandlerContext {
  /** Serialized data from the previous kernel. */
  readonly data: bigint;
}

/**
 * Retrieve status of an incoming file: 0 never tried, 1 retrieved, or the sticky error.
 *
 * @category Handlers and FLBs
 */
export type RetrieveStatus = 0 | 1 | LiveUpdateError;

/**
 * Arguments of `canFinish` and `finish`.
 *
 * @category Handlers and FLBs
 */
export interface FinishArgs<F extends KernelFile> extends HandlerContext {
  /** The retrieved file, or undefined if it was never (successfully) retrieved. */
  readonly file: F | undefined;
  /** Serialized data from the previous kernel. */
  readonly data: bigint;
  /** The retrieve status. */
  readonly retrieveStatus: RetrieveStatus;
}

/**
 * The callbacks of a file handler (see the module comment for when each runs).
 *
 * A handler is a plain object made with {@link defineFileHandler}. The core calls its callbacks
 * with one args object (the model of `liveupdate_file_op_args`): the outgoing KHO allocator, the
 * incoming KHO handover (after a live update), the session's dependency API and the kernel's DI
 * container. Required: `canPreserve`, `preserve`, `unpreserve`, `retrieve`, `finish`; optional:
 * `freeze`, `unfreeze`, `canFinish`, `getId`. Callbacks may be async and may throw; anything that
 * is not a `LiveUpdateError` is reported as `EIO` with `cause`, and the same rollback runs.
 *
 * Lifecycle (old kernel): preserve → (freeze at reboot | unfreeze if the reboot fails) →
 * unpreserve if the session closes first. New kernel: retrieve (at most once successfully; a
 * failure is sticky) → canFinish (all files, FIFO) → finish (all files, LIFO, retrieved or not).
 *
 * @category Entry points
 */
export interface FileHandlerSpec<F extends KernelFile = KernelFile, P = unknown> {
  /** Handler compatible string, 1..47 bytes, e.g. `"memfd-v2"`. */
  readonly compatible: string;
  /** True if this handler can preserve `file`. First match in registration order wins. */
  canPreserve(file: KernelFile): boolean;
  /** Saves the file's state into preserved memory. */
  preserve(args: PreserveArgs<F>): Awaitable<PreserveResult<P>>;
  /** Undoes `preserve` (session closed before reboot, or a later preserve step failed). */
  unpreserve(args: PreservedArgs<F, P>): Awaitable<void>;
  /** Reboot: final state capture; may return updated data. */
  freeze?(args: PreservedArgs<F, P>): Awaitable<bigint | void>;
  /** Reboot failed after `freeze`: undo it. */
  unfreeze?(args: PreservedArgs<F, P>): Awaitable<void>;
  /** New kernel: rebuild the file from preserved memory. */
  retrieve(args: RetrieveArgs): Awaitable<F>;
  /** Veto for FINISH: false aborts the whole finish with `EBUSY`. */
  canFinish?(args: FinishArgs<F>): Awaitable<boolean>;
  /** Releases what was handed over (called for every file, retrieved or not). */
  finish(args: FinishArgs<F>): Awaitable<void>;
  /** Identity for double-preservation detection; default: the file object. */
  getId?(file: F): unknown;
}

/**
 * A validated file handler, made by {@link defineFileHandler}.
 *
 * @category Handlers and FLBs
 */
export interface FileHandler<F extends KernelFile = KernelFile, P = unknown> extends FileHandlerSpec<F, P> {
  /** The compatible string as stored in the ABI (validated). */
  readonly compatibleBytes: Uint8Array;
}

const REQUIRED = ["canPreserve", "preserve", "unpreserve", "retrieve", "finish"] as const;

/**
 * Validates and freezes a handler definition.
 * Errors: `EINVAL` for a missing required callback or a compatible that is not 1..47 bytes.
 *
 * @example
 * ```ts
 * import { KernelFile, Machine, defineFileHandler, definePlugin } from "@luo/core";
 *
 * // A file holding one number, small enough to travel in the handover record's `data`.
 * class CounterFile extends KernelFile {
 *   readonly description = "counter";
 *   constructor(public value: bigint) {
 *     super();
 *   }
 * }
 *
 * const counterHandler = defineFileHandler<CounterFile>({
 *   compatible: "counter-v1",
 *   canPreserve: (file) => file instanceof CounterFile,
 *   preserve: ({ file }) => ({ data: file.value }),
 *   freeze: ({ file }) => file.value, // the value at reboot, not at preserve
 *   unpreserve: () => {},
 *   retrieve: ({ data }) => new CounterFile(data),
 *   finish: () => {},
 * });
 * const counters = definePlugin({ name: "counter", register: (ctx) => ctx.registerFileHandler(counterHandler) });
 *
 * const k1 = await new Machine({ memory: "16 MiB" }).boot({ plugins: [counters] });
 * const vmm = k1.spawn("vmm");
 * const file = new CounterFile(1n);
 * const fd = vmm.installFile(file);
 * await (await (await vmm.openLiveUpdate()).createSession("s")).preserveFd(fd, 1n);
 * file.value = 41n;
 * const k2 = await k1.kexec();
 * const p2 = k2.spawn("vmm");
 * const got = await (await (await p2.openLiveUpdate()).retrieveSession("s")).retrieveFd(1n);
 * console.log((p2.file(got) as CounterFile).value); // 41n
 * ```
 *
 * @category Entry points
 */
export function defineFileHandler<F extends KernelFile, P = unknown>(
  spec: FileHandlerSpec<F, P>,
): FileHandler<F, P> {
  return defineShape(spec, REQUIRED, "handler");
}

/**
 * Checks that `h` has every required callback and a valid compatible; returns the compatible's
 * bytes. `EINVAL` otherwise.
 *
 * @category Handlers and FLBs
 */
export function checkHandlerShape(h: FileHandlerSpec): Uint8Array {
  return checkShape(h, REQUIRED, "handler");
}
