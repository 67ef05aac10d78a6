/**
 * Read-only views of a handover: what a kernel received from the previous one
 * ({@link LiveUpdate.received}) and what it would hand to the next one right now
 * ({@link LiveUpdate.handingOver}). `luo inspect` reports the same shapes for a saved image.
 *
 * The views are frozen snapshots built from the orchestrator's records: they never change after
 * they are taken and changing them is impossible (every level is `Object.freeze`d), so a VMM or
 * an agent may keep them, print them or compare two of them without touching live state.
 *
 * @module
 */

/**
 * One preserved file as the handover records it.
 *
 * @category Sessions
 */
export interface HandoverFile {
  /** Compatible string of the handler that preserved the file. */
  readonly compatible: string;
  /** The token userspace chose at PRESERVE_FD. */
  readonly token: bigint;
  /** The handler's opaque u64 (typically the physical address of its own record). */
  readonly data: bigint;
}

/**
 * One session as the handover records it.
 *
 * @category Sessions
 */
export interface HandoverSession {
  /** Session name. */
  readonly name: string;
  /** Files in preservation order. */
  readonly files: readonly HandoverFile[];
}

/**
 * One File-Lifecycle-Bound object as the handover records it.
 *
 * @category Sessions
 */
export interface HandoverFlb {
  /** FLB compatible string. */
  readonly compatible: string;
  /** The FLB's opaque u64 from its `preserve`. */
  readonly data: bigint;
  /** Number of preserved files that depend on it. */
  readonly count: bigint;
}

/**
 * Sessions, files and FLBs of one handover.
 *
 * @category Entry points
 */
export interface HandoverView {
  /**
   * Received: this kernel's live-update number (0 on a cold boot). Handing over: the number the
   * next kernel will report (this kernel's plus one, wrapping as a u64).
   */
  readonly liveupdateNumber: bigint;
  /** Sessions in creation order (empty sessions included: they are handed over too). */
  readonly sessions: readonly HandoverSession[];
  /** FLBs in registration order. */
  readonly flbs: readonly HandoverFlb[];
}

/**
 * Freezes a view built from plain data (every level).
 *
 * @category Sessions
 */
export function freezeView(
  liveupdateNumber: bigint,
  sessions: Iterable<{ readonly name: string; readonly files: Iterable<HandoverFile> }>,
  flbs: Iterable<HandoverFlb>,
): HandoverView {
  const file = (f: HandoverFile): HandoverFile =>
    Object.freeze({ compatible: f.compatible, token: f.token, data: f.data });
  return Object.freeze({
    liveupdateNumber,
    sessions: Object.freeze(
      Array.from(sessions, (s) =>
        Object.freeze({ name: s.name, files: Object.freeze(Array.from(s.files, file)) }),
      ),
    ),
    flbs: Object.freeze(
      Array.from(flbs, (f) => Object.freeze({ compatible: f.compatible, data: f.data, count: f.count })),
    ),
  });
}
