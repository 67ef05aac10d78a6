/**
 * What a vfio interrupt signals: an eventfd given through `VFIO_DEVICE_SET_IRQS`. vfio takes its
 * own reference on the eventfd (`eventfd_ctx_fdget`), signals it from the interrupt handler
 * (`eventfd_signal`) and drops the reference when the vector is unset.
 *
 * @module
 */
import { eventfdCtxFdget, type Process } from "@luo/core";

/** A vector's eventfd, as vfio holds it. */
export interface VfioIrqTrigger {
  /** The interrupt fired: add 1 to the eventfd counter. */
  signal(): void;
  /** Drops vfio's reference. */
  release(): void;
}

/**
 * Takes a reference on the eventfd behind `fd` of `proc`. `EBADF` if `fd` is not open,
 * `EINVAL` if it is not an eventfd.
 */
export function eventfdTrigger(proc: Process, fd: number): VfioIrqTrigger {
  const ctx = eventfdCtxFdget(proc, fd);
  return { signal: () => void ctx.signal(1n), release: () => ctx.put() };
}
