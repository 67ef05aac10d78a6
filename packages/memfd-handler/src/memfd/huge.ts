// Validation of the shmem huge page policy (internal: not exported from the package).
import { LiveUpdateError } from "@luo/core";
import type { ShmemHuge } from "./inode.js";

/** `EINVAL` unless `value` is a `ShmemHuge` policy. */
export function checkShmemHuge(value: unknown, what: string): asserts value is ShmemHuge {
  if (value !== "never" && value !== "always" && value !== "within_size") {
    throw new LiveUpdateError(
      "EINVAL",
      `${what}: ${JSON.stringify(value) ?? String(value)} is not "never", "always" or "within_size"`,
    );
  }
}
