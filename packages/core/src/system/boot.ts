/**
 * `machine.boot()`: the machine layer knows nothing of kernels, so the boot entry point is
 * attached to `Machine` here, above every layer it composes.
 *
 * @module
 */
import { Machine } from "../machine/index.js";
import { Kernel, type BootOptions } from "./kernel.js";

declare module "../machine/machine.js" {
  interface Machine {
    /**
     * Boots a kernel on this machine: a cold boot when no handover is pending, else the next
     * kernel of a live update. Errors as {@link Kernel.boot}.
     */
    boot(options?: BootOptions): Promise<Kernel>;
  }
}

Machine.prototype.boot = function boot(this: Machine, options?: BootOptions): Promise<Kernel> {
  return Kernel.boot(this, options);
};
