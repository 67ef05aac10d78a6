/**
 * The memfd filesystem of one booted kernel (the model of shmem's and hugetlbfs's per-kernel
 * state): which machine the pages come from, how many pages memfds hold, and whether this kernel
 * still owns its memory.
 *
 * One {@link MemfdFs} is made by the `memfd()` plugin at boot and registered in the kernel's DI
 * container ({@link MEMFD_FS}), which a process reaches through its kernel context, so
 * `memfdCreate(proc, …)` finds it. After the kernel is replaced by a live update (or shut down) the fs is *down*: every
 * page of the old kernel either was preserved for the next kernel or was scrubbed, so releasing an
 * old memfd frees nothing, and touching its contents fails with `ESHUTDOWN`.
 *
 * @module
 */
import type { InjectionToken } from "tsyringe";
import { LiveUpdateError, PAGE_SIZE, type KernelContext, type Machine, type Process } from "@luo/core";
import type { ShmemHuge } from "./inode.js";

/** The memfd filesystem of one kernel. */
export class MemfdFs {
  #down = false;
  #pages = 0;

  /**
   * @param machine - the machine whose pages hold memfd contents
   * @param kernel - the kernel's VFS context (halt state, messages)
   * @param shmemHuge - the kernel-wide huge page policy of shmem memfds (Linux's
   *   `/sys/kernel/mm/transparent_hugepage/shmem_enabled`): what `memfdCreate` uses when not
   *   told otherwise, and what memfds retrieved after a live update use for new folios
   */
  constructor(
    readonly machine: Machine,
    readonly kernel: KernelContext,
    readonly shmemHuge: ShmemHuge = "never",
  ) {}

  /** True while this kernel runs and owns its memory. */
  get active(): boolean {
    return !this.#down && !this.kernel.halted;
  }

  /** Pages currently held by memfds of this kernel (folio pages, holes excluded). */
  get pagesInUse(): number {
    return this.#pages;
  }

  /** Fails with `ESHUTDOWN` once the kernel was replaced or shut down. */
  assertActive(): void {
    this.kernel.assertRunning();
    if (this.#down)
      throw new LiveUpdateError("ESHUTDOWN", `the memfd filesystem of ${this.kernel.name} is down`);
  }

  /**
   * Allocates one zeroed folio of `2^order` pages for `what`. `ENOMEM` when the machine has no
   * free block of that order. The caller checks {@link MemfdFs.assertActive} first, once per
   * operation rather than once per folio (every inode operation that allocates does).
   */
  allocFolio(order: number, what: string): bigint {
    let phys: bigint;
    try {
      phys = this.machine.allocPages(order);
    } catch (e) {
      if (e instanceof LiveUpdateError && e.code === "ENOMEM") {
        throw new LiveUpdateError("ENOMEM", `${what}: out of memory for a ${PAGE_SIZE << order}-byte folio`, {
          cause: e,
        });
      }
      throw e;
    }
    this.#pages += 1 << order;
    return phys;
  }

  /** Takes over a folio that was handed over by the previous kernel and restored (accounting only). */
  adoptFolio(order: number): void {
    this.#pages += 1 << order;
  }

  /** Splits an allocated folio into 4 KiB folios in place (`split_folio`); same pages, same contents. */
  splitFolio(phys: bigint, order: number): void {
    this.machine.splitPages(phys, order);
  }

  /** Frees a folio; does nothing once the fs is down (the memory is no longer this kernel's). */
  freeFolio(phys: bigint, order: number): void {
    if (!this.active) return;
    this.machine.freePages(phys, order);
    this.#pages -= 1 << order;
  }

  /** Marks the fs down (plugin teardown when the kernel goes away). */
  shutdown(): void {
    this.#down = true;
  }
}

/** DI token of the kernel's {@link MemfdFs} (registered by the `memfd()` plugin). */
export const MEMFD_FS: InjectionToken<MemfdFs> = Symbol.for("luo.memfd.MemfdFs");

/**
 * The memfd filesystem of the kernel `proc` runs on. `EOPNOTSUPP` when that kernel was booted
 * without the `memfd()` plugin, `ESHUTDOWN` when it was replaced by a live update.
 */
export function memfdFsOf(proc: Process): MemfdFs {
  proc.kernel.assertRunning();
  const { container } = proc.kernel;
  const fs = container.isRegistered(MEMFD_FS) ? container.resolve(MEMFD_FS) : undefined;
  if (!fs) {
    throw new LiveUpdateError(
      "EOPNOTSUPP",
      `${proc.kernel.name} has no memfd support: boot it with the memfd() plugin of @luo/memfd-handler`,
    );
  }
  fs.assertActive();
  return fs;
}
