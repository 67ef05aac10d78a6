/**
 * The per-boot kernel state the VFS layer needs: the device-node registry and the halt switch.
 *
 * One {@link KernelContext} exists per booted kernel. After a successful kexec the old kernel is
 * halted: {@link KernelContext.assertRunning} then throws `ESHUTDOWN` for every later syscall, and
 * halt listeners poison the orchestrator's locks so pending calls reject too. Nothing hangs.
 *
 * @module
 */
import type { DependencyContainer } from "tsyringe";
import { LiveUpdateError } from "../errors.js";
import type { KernelFile } from "./file.js";
import type { Process } from "./process.js";

/**
 * Opens a device node for a process; returns the new file object (with one reference).
 *
 * @category Kernel files and processes
 */
export type DeviceOpener = (proc: Process) => KernelFile | Promise<KernelFile>;

/**
 * State shared by every process of one booted kernel.
 *
 * @category Kernel files and processes
 */
export class KernelContext {
  private readonly devices = new Map<string, DeviceOpener>();
  private haltError: LiveUpdateError | undefined;
  private readonly haltListeners: Array<(e: LiveUpdateError) => void> = [];
  private nextPid = 1;

  /**
   * @param name - the kernel's name in messages, e.g. `kernel#2`
   * @param container - the kernel's DI container, so syscall helpers of plugins (e.g.
   *   `memfdCreate(proc, …)`) can reach the services their plugin registered for this kernel
   */
  constructor(
    readonly name: string,
    readonly container: DependencyContainer,
  ) {}

  /** Allocates the next process id of this kernel (1, 2, …; shared by spawn and fork). */
  allocPid(): number {
    return this.nextPid++;
  }

  /** True when a device node is registered at `path`. */
  hasDevice(path: string): boolean {
    return this.devices.has(path);
  }

  /** Registers a device node (e.g. `/dev/liveupdate`). `EEXIST` if the path is taken. */
  registerDevice(path: string, open: DeviceOpener): void {
    if (this.devices.has(path)) throw new LiveUpdateError("EEXIST", `device node ${path} already exists`);
    this.devices.set(path, open);
  }

  /** Looks up a device node. `ENOENT` when absent. */
  device(path: string): DeviceOpener {
    const d = this.devices.get(path);
    if (!d) throw new LiveUpdateError("ENOENT", `no such device node: ${path}`);
    return d;
  }

  /** True after {@link KernelContext.halt}. */
  get halted(): boolean {
    return this.haltError !== undefined;
  }

  /** Throws `ESHUTDOWN` when this kernel was replaced by a live update. */
  assertRunning(): void {
    if (this.haltError) throw this.haltError;
  }

  /** Registers a callback that runs once when the kernel halts. */
  onHalt(fn: (e: LiveUpdateError) => void): void {
    this.haltListeners.push(fn);
  }

  /** Halts the kernel: every pending or later call fails with `ESHUTDOWN`. */
  halt(): void {
    if (this.haltError) return;
    this.haltError = new LiveUpdateError(
      "ESHUTDOWN",
      `${this.name} was replaced by a live update and is halted`,
    );
    for (const fn of this.haltListeners) fn(this.haltError);
  }
}
