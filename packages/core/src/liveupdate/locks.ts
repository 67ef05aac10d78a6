/**
 * The orchestrator's locks and their hierarchy.
 *
 * Kernel mutexes and rw-semaphores become async locks. Because handler callbacks may
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
 * The queue is our own rather than async-mutex's weighted `Semaphore`: that semaphore's release
 * walks every weight up to its capacity, so a writer weight large enough to exclude all readers
 * made each read acquisition cost ~4 ms (measured). Here both sides are O(1), waiters are served
 * strictly FIFO (which is what makes the lock writer-fair), and an uncontended acquisition
 * completes without queueing.
 *
 * @module
 */
import { AsyncLocalStorage } from "node:async_hooks";
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
 * A lock's name for messages: a string, or the object the lock protects (its `toString()` is
 * used), so per-session and per-file locks cost no extra string.
 */
export type LockName = string | { toString(): string };

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
  readonly name: LockName;
  readonly outer: Held | undefined;
}

interface Waiter {
  readonly write: boolean;
  readonly resolve: () => void;
  readonly reject: (e: LiveUpdateError) => void;
}

const held = new AsyncLocalStorage<Held>();

function checkOrder(level: number, name: LockName): void {
  const top = held.getStore();
  if (top !== undefined && top.level >= level) {
    throw new LiveUpdateError(
      "EDEADLK",
      `lock order violation: taking "${name}" (level ${level}) while holding "${top.name}" (level ${top.level})`,
    );
  }
}

/** Base of the hierarchy-checked locks: a FIFO reader-writer queue that can be poisoned at halt. */
abstract class HierarchyLock {
  private readers = 0;
  private writer = false;
  private queue: Waiter[] | undefined;
  private head = 0;
  private poison: LiveUpdateError | undefined;

  protected constructor(
    readonly name: LockName,
    readonly level: LockLevelValue,
  ) {}

  /** Makes every waiter and every later acquisition reject with `error` (used when halting). */
  halt(error: LiveUpdateError): void {
    this.poison = error;
    const q = this.queue;
    this.queue = undefined;
    if (q) for (let i = this.head; i < q.length; i++) q[i]!.reject(error);
    this.head = 0;
  }

  private waiting(): boolean {
    return this.queue !== undefined && this.head < this.queue.length;
  }

  private grant(write: boolean): boolean {
    if (write ? this.writer || this.readers > 0 : this.writer) return false;
    if (write) this.writer = true;
    else this.readers++;
    return true;
  }

  protected acquire(write: boolean): Promise<void> | undefined {
    checkOrder(this.level, this.name);
    if (this.poison) throw this.poison;
    if (!this.waiting() && this.grant(write)) return undefined;
    return new Promise<void>((resolve, reject) => (this.queue ??= []).push({ write, resolve, reject }));
  }

  protected release(write: boolean): void {
    if (write) this.writer = false;
    else this.readers--;
    const q = this.queue;
    if (!q) return;
    while (this.head < q.length && this.grant(q[this.head]!.write)) q[this.head++]!.resolve();
    if (this.head === q.length) {
      this.queue = undefined;
      this.head = 0;
    }
  }

  protected async run<T>(write: boolean, fn: () => Promise<T> | T): Promise<T> {
    const wait = this.acquire(write);
    if (wait) await wait;
    if (this.poison) {
      this.release(write);
      throw this.poison;
    }
    try {
      return await held.run({ level: this.level, name: this.name, outer: held.getStore() }, fn);
    } finally {
      this.release(write);
    }
  }
}

/** An async mutex at a fixed level of the hierarchy. */
export class LevelMutex extends HierarchyLock {
  /**
   * @param name - shown in lock-order errors, e.g. `session "vm-0"`
   * @param level - the lock's place in {@link LockLevel}
   */
  constructor(name: LockName, level: LockLevelValue) {
    super(name, level);
  }

  /** Runs `fn` holding the mutex. Rejects with `EDEADLK` on a hierarchy violation. */
  lock<T>(fn: () => Promise<T> | T): Promise<T> {
    return this.run(true, fn);
  }
}

/** A writer-fair async reader-writer lock at a fixed level of the hierarchy. */
export class LevelRwLock extends HierarchyLock {
  /**
   * @param name - shown in lock-order errors
   * @param level - the lock's place in {@link LockLevel}
   */
  constructor(name: LockName, level: LockLevelValue) {
    super(name, level);
  }

  /** Runs `fn` holding the lock for reading (shared). */
  read<T>(fn: () => Promise<T> | T): Promise<T> {
    return this.run(false, fn);
  }

  /** Runs `fn` holding the lock for writing (exclusive). */
  write<T>(fn: () => Promise<T> | T): Promise<T> {
    return this.run(true, fn);
  }

  /**
   * Takes the write side without scoping it to a callback: the reboot path keeps it forever on
   * success. Returns the release function and a runner that executes code "inside" the lock for
   * the hierarchy check.
   */
  async acquireWrite(): Promise<{ release: () => void; inside: <T>(fn: () => Promise<T>) => Promise<T> }> {
    const wait = this.acquire(true);
    if (wait) await wait;
    const frame: Held = { level: this.level, name: this.name, outer: held.getStore() };
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.release(true);
      },
      inside: (fn) => held.run(frame, fn),
    };
  }
}

/** Names of the locks the current async call chain holds, innermost first (for tests). */
export function heldLocks(): string[] {
  const out: string[] = [];
  for (let h = held.getStore(); h; h = h.outer) out.push(String(h.name));
  return out;
}
