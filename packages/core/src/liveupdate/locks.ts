/**
 * The orchestrator's locks and their hierarchy.
 *
 * Kernel mutexes and rw-semaphores become async locks (async-mutex). Because handler callbacks may
 * await, two operations can interleave; the hierarchy below is what keeps that safe, and it is
 * checked at run time: acquiring a lock whose level is not strictly deeper than every lock the
 * current async call chain already holds fails with `EDEADLK` instead of deadlocking.
 *
 *   serialize rwsem (1) → session-list rwsem (2) → session mutex (3) → file mutex (4) → FLB lock (5)
 *
 * The two session-list locks share level 2 and are always taken incoming before outgoing (the
 * quiesce order), so they carry sub-levels 2.1 / 2.2. The serialize rwsem is writer-fair: a waiting
 * writer (reboot) blocks later readers. After a successful reboot it is never released; halting
 * the kernel poisons it so every waiter and later caller rejects with `ESHUTDOWN`.
 *
 * @module
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { Semaphore, E_CANCELED } from "async-mutex";
import { LiveUpdateError } from "../errors.js";

/** Levels of the documented lock hierarchy; a task may only take locks in increasing order. */
export const LockLevel = {
  /** Global serialize reader-writer lock (readers: session mutations; writer: reboot). */
  Serialize: 1,
  /** Incoming session list lock (taken before the outgoing one). */
  IncomingList: 2.1,
  /** Outgoing session list lock. */
  OutgoingList: 2.2,
  /** One session's mutex. */
  Session: 3,
  /** One preserved file's mutex (see {@link fileLockLevel}). */
  File: 4,
  /** One FLB's outgoing or incoming lock. */
  Flb: 5,
} as const;

/** A level of {@link LockLevel}, or a file level from {@link fileLockLevel}. */
export type LockLevelValue = number;

/**
 * Level of the mutex of the file at `index` in its session: between File and Flb, higher for
 * earlier files. A handler callback holding file i's mutex may take the mutex of an earlier file
 * j < i (the dependency API: memfd → iommufd → vfio), never a later one, so no cycle can form.
 */
export function fileLockLevel(index: number): number {
  return LockLevel.File + 0.5 - index / 2 ** 22;
}

interface Held {
  readonly level: number;
  readonly name: string;
  readonly outer: Held | undefined;
}

const held = new AsyncLocalStorage<Held>();
const WRITER = 1 << 20;

function checkOrder(level: number, name: string): void {
  const top = held.getStore();
  if (top !== undefined && top.level >= level) {
    throw new LiveUpdateError(
      "EDEADLK",
      `lock order violation: taking "${name}" (level ${level}) while holding "${top.name}" (level ${top.level})`,
    );
  }
}

/** Base of the hierarchy-checked locks: a weighted semaphore that can be poisoned at halt. */
abstract class HierarchyLock {
  protected readonly sem: Semaphore;
  private poison: LiveUpdateError | undefined;

  protected constructor(
    readonly name: string,
    readonly level: LockLevelValue,
    capacity: number,
  ) {
    this.sem = new Semaphore(capacity);
  }

  /** Makes every waiter and every later acquisition reject with `error` (used when halting). */
  halt(error: LiveUpdateError): void {
    this.poison = error;
    this.sem.cancel();
  }

  protected async acquire(weight: number): Promise<() => void> {
    checkOrder(this.level, this.name);
    if (this.poison) throw this.poison;
    try {
      const [, release] = await this.sem.acquire(weight);
      if (this.poison) {
        release();
        throw this.poison;
      }
      return release;
    } catch (e) {
      if (e === E_CANCELED && this.poison) throw this.poison;
      throw e;
    }
  }

  protected async run<T>(weight: number, fn: () => Promise<T> | T): Promise<T> {
    const release = await this.acquire(weight);
    try {
      return await held.run({ level: this.level, name: this.name, outer: held.getStore() }, fn);
    } finally {
      release();
    }
  }
}

/** An async mutex at a fixed level of the hierarchy. */
export class LevelMutex extends HierarchyLock {
  /**
   * @param name - shown in lock-order errors, e.g. `session "vm-0"`
   * @param level - the lock's place in {@link LockLevel}
   */
  constructor(name: string, level: LockLevelValue) {
    super(name, level, 1);
  }

  /** Runs `fn` holding the mutex. Rejects with `EDEADLK` on a hierarchy violation. */
  lock<T>(fn: () => Promise<T> | T): Promise<T> {
    return this.run(1, fn);
  }
}

/** A writer-fair async reader-writer lock at a fixed level of the hierarchy. */
export class LevelRwLock extends HierarchyLock {
  /**
   * @param name - shown in lock-order errors
   * @param level - the lock's place in {@link LockLevel}
   */
  constructor(name: string, level: LockLevelValue) {
    super(name, level, WRITER);
  }

  /** Runs `fn` holding the lock for reading (shared). */
  read<T>(fn: () => Promise<T> | T): Promise<T> {
    return this.run(1, fn);
  }

  /** Runs `fn` holding the lock for writing (exclusive). */
  write<T>(fn: () => Promise<T> | T): Promise<T> {
    return this.run(WRITER, fn);
  }

  /**
   * Takes the write side without scoping it to a callback: the reboot path keeps it forever on
   * success. Returns the release function and a runner that executes code "inside" the lock for
   * the hierarchy check.
   */
  async acquireWrite(): Promise<{ release: () => void; inside: <T>(fn: () => Promise<T>) => Promise<T> }> {
    const release = await this.acquire(WRITER);
    const frame: Held = { level: this.level, name: this.name, outer: held.getStore() };
    return { release, inside: (fn) => held.run(frame, fn) };
  }
}

/** Names of the locks the current async call chain holds, innermost first (for tests). */
export function heldLocks(): string[] {
  const out: string[] = [];
  for (let h = held.getStore(); h; h = h.outer) out.push(h.name);
  return out;
}
