/**
 * What a vfio interrupt signals: an eventfd given through `VFIO_DEVICE_SET_IRQS`. The kernel
 * takes its own reference on the eventfd (`eventfd_ctx_fdget`), signals it from the interrupt
 * handler (`eventfd_signal`) and drops the reference when the vector is unset.
 *
 * @module
 */
import { LiveUpdateError, type KernelFile, type Process } from "@luo/core";

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
  const file = proc.file(fd) as KernelFile & { signal?: (n?: bigint) => unknown };
  if (typeof file.signal !== "function") {
    throw new LiveUpdateError("EINVAL", `fd ${fd} of ${proc.name} is ${file.description}, not an eventfd`);
  }
  file.get();
  return { signal: () => void file.signal!(1n), release: () => file.put() };
}
