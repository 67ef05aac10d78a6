/**
 * What a handler author gives the conformance kit: the {@link ConformanceSubject} (plugins, how
 * to make, change, check and damage a file) and what the kit hands back to those hooks.
 *
 * @module
 */
import type { Flb, Awaitable } from "../../liveupdate/index.js";
import type { KhoIncoming } from "../../kho/index.js";
import type { Machine, MemorySize } from "../../machine/index.js";
import type { Process } from "../../kernel/index.js";
import type { Plugin } from "../../plugin/index.js";
import type { Kernel } from "../../system/index.js";

/** A file made by {@link ConformanceSubject.create}: its fd and what `verify` should expect. */
export interface ConformanceFile<S = unknown> {
  /** The new file's fd in the process given to `create`. */
  readonly fd: number;
  /** Anything `verify` needs to check a copy of this file (e.g. its content). */
  readonly expected?: S;
}

/** What the kit gives back to {@link ConformanceSubject.verify} about the original file. */
export interface ConformanceOriginal<S = unknown> {
  /** The `index` the file was created with. */
  readonly index: number;
  /** What `create` returned as `expected` (or `mutate` returned, once it ran), if anything. */
  readonly expected: S | undefined;
  /** True once {@link ConformanceSubject.mutate} changed the file. */
  readonly mutated: boolean;
}

/** Where the handler's serialized state of one file lies after a live update (for `corrupt`). */
export interface ConformanceCorruptArgs {
  /** The new kernel (booted from the handover; /dev/liveupdate already opened once). */
  readonly kernel: Kernel;
  /** The machine. */
  readonly machine: Machine;
  /** The incoming KHO handover: `covers`, `restore`, … */
  readonly incoming: KhoIncoming;
  /** The file's serialized data: the u64 `preserve`/`freeze` returned (usually a physical address). */
  readonly data: bigint;
  /** Session of the file. */
  readonly session: string;
  /** Token of the file. */
  readonly token: bigint;
}

/**
 * The handler under test, as a third party describes it. The factory given to the kit returns
 * a new one for every check (and for every fresh boot the leak check compares against), so
 * `plugins` and `flbs` must be fresh objects that belong together.
 */
export interface ConformanceSubject<S = unknown> {
  /** Compatible string of the handler under test, e.g. `"memfd-v2"`. */
  readonly compatible: string;
  /** Title of the test group (default: the compatible). */
  readonly name?: string;
  /**
   * Plugins that register the handler (through `ctx.registerFileHandler`, so the kit can observe
   * it) and everything it needs. Booted on every kernel of a check.
   */
  readonly plugins: readonly Plugin[];
  /**
   * FLBs linked to the handler (the objects `plugins` link), checked for reference counts;
   * empty or absent: the FLB check does not apply.
   */
  readonly flbs?: readonly Flb[];
  /** RAM of each test machine (default `"64 MiB"`). */
  readonly memory?: MemorySize;
  /**
   * Makes a preservable file in `proc` and returns its fd (or `{ fd, expected }`). `index`
   * counts the files of one check from 0: give each a different content so a mix-up is caught.
   */
  create(proc: Process, index: number): Awaitable<number | ConformanceFile<S>>;
  /**
   * Checks that `fd` in `proc` is intact (throw on a difference, e.g. with your test runner's
   * `expect`): the same content as the file `create` made (and `mutate` changed, when
   * `original.mutated`), either the user's original after an unpreserve or a failed kexec, or the
   * copy retrieved after a live update.
   */
  verify(proc: Process, fd: number, original: ConformanceOriginal<S>): Awaitable<void>;
  /**
   * Optional: changes the preserved file `fd` the way a user may after PRESERVE_FD and before
   * the kexec (e.g. write new bytes). The kit expects the change to come back after the live
   * update, as Linux does for state captured at freeze. Return the new `expected` for `verify`
   * (or nothing: `verify` then sees `original.mutated`). Without it, that check does not apply.
   */
  mutate?(proc: Process, fd: number, original: ConformanceOriginal<S>): Awaitable<S | void>;
  /**
   * Optional: damages the handed-over state of one file so that the handler's `retrieve`
   * fails — e.g. overwrite a magic number or checksum it validates — without destroying what
   * `finish` needs to release the file's memory. Without it, the sticky-failure check of the
   * handler itself does not apply (a neighbour's sticky failure is always checked).
   */
  corrupt?(args: ConformanceCorruptArgs): Awaitable<void>;
}

/** One conformance check as a plain function (see `handlerConformanceCases`). */
export interface ConformanceCase {
  /** What the check verifies (the test title). */
  readonly name: string;
  /** Why the check does not apply to this subject, if it does not (it is then not registered). */
  readonly skipReason: string | undefined;
  /** Runs the check on fresh machines; rejects with the first failure (a `ConformanceFailure`, or what `verify` threw). */
  run(): Promise<void>;
}
