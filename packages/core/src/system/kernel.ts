/**
 * A booted kernel: the composition of machine, KHO, VFS, orchestrator and plugins, and kexec.
 *
 * The lifecycle, with its happy and unhappy paths, is documented on {@link Kernel}.
 *
 * @module
 */
import { container as rootContainer, type DependencyContainer } from "tsyringe";
import { describeValue, KernelPanicError, LiveUpdateError, toLiveUpdateError } from "../errors.js";
import { KernelContext, Process, registerCharDevices } from "../kernel/index.js";
import { Kho, KhoIncoming } from "../kho/index.js";
import { readLuoHandover } from "../abi/index.js";
import {
  LiveUpdate,
  registerLiveUpdateDevice,
  type Awaitable,
  type ServedCompatibles,
} from "../liveupdate/index.js";
import { Machine } from "../machine/index.js";
import { openMachineCheckpoint } from "../machine/machine.js";
import {
  KERNEL_CONTEXT,
  KHO,
  KHO_INCOMING,
  LIVE_UPDATE,
  MACHINE,
  type Plugin,
  type PluginContext,
} from "../plugin/index.js";
import { checkPlugins } from "../plugin/plugin.js";

/**
 * Options of a boot.
 *
 * @category Booting and kexec
 */
export interface BootOptions {
  /** Plugins providing file types, handlers, FLBs and devices. */
  readonly plugins?: readonly Plugin[];
}

/**
 * Options of {@link Kernel.kexec} that boots the next kernel in this process.
 *
 * @category Booting and kexec
 */
export interface KexecOptions {
  /** Plugins of the next kernel (default: this kernel's), e.g. an upgraded handler set. */
  readonly plugins?: readonly Plugin[];
  /** Not set: the next kernel boots in this process (see {@link KexecSaveOptions}). */
  readonly saveTo?: undefined;
  /**
   * Machine time (ns) that passes between this kernel's halt and the next kernel's boot — the
   * jump, firmware and early boot — during which hardware keeps working (a device left running
   * keeps doing DMA). Default 0. Not with `saveTo` (advance the loaded machine instead): `EINVAL`.
   */
  readonly gapNs?: bigint | number;
}

/**
 * Options of {@link Kernel.kexec} that writes the machine image instead of booting.
 *
 * @category Booting and kexec
 */
export interface KexecSaveOptions {
  /**
   * Write the machine image here instead of booting the next kernel in this process; continue
   * with `Machine.load(path).boot(...)` (possibly in another process).
   */
  readonly saveTo: string;
  /** Ignored: the plugins are chosen by whoever boots the image. */
  readonly plugins?: readonly Plugin[];
}

const running = new WeakMap<Machine, Kernel>();
let bootCounter = 0;

/**
 * One booted kernel on a machine.
 *
 * Boot ({@link Kernel.boot} / `machine.boot()`): check the options and order the plugins (bad
 * input → `EINVAL`, dependency errors) before anything changes; then, under a machine checkpoint,
 * validate the incoming KHO handover from the machine's root address alone and rebuild the
 * allocator (corrupt state → `KernelPanicError`), read the LUO handover, set up the outgoing
 * handover pages, register /dev/null, /dev/zero and /dev/liveupdate, and register plugins in dependency order. Boot is
 * atomic: when anything before the last plugin's `register` fails, the plugins that registered
 * are torn down in reverse and the checkpoint is rolled back, so the machine holds the same
 * handover (KHO root, preserved pages, bytes) and a later boot with working plugins recovers
 * every session. Once every plugin registered, the new kernel has taken over.
 *
 * kexec ({@link Kernel.kexec}): freeze and serialize (a freeze failure rejects and the kernel
 * keeps running), finalize KHO, optionally write the machine image, then scrub every
 * non-preserved page, halt this kernel (every pending or later call rejects with `ESHUTDOWN`),
 * tear plugins down in reverse, and boot the next kernel in this process — or, with `saveTo`,
 * leave it to `Machine.load(path).boot()` in another process. Bad options (including plugins of
 * the next kernel that are malformed or miss a dependency) are rejected before anything is
 * frozen. A failure after serialization but before the handover is committed unfreezes
 * everything and leaves this kernel usable. If the next kernel then fails to boot, this kernel
 * is gone but the handover is intact in the machine: boot it again with working plugins.
 *
 * @example
 * ```ts
 * import { Machine } from "@luo/core";
 * import { createTestFile, testHandlerPlugin } from "@luo/core/testing";
 *
 * const k1 = await new Machine({ memory: "32 MiB" }).boot({ plugins: [testHandlerPlugin()] });
 * const vmm = k1.spawn("vmm");
 * const session = await (await vmm.openLiveUpdate()).createSession("vm-0");
 * await session.preserveFd(createTestFile(vmm, "state", new TextEncoder().encode("state")), 1n);
 *
 * const k2 = await k1.kexec(); // the next kernel, booted in this process
 * console.log(k1.halted, k2.liveupdate.liveupdateNumber); // true 1n
 * // Or hand over through a machine image, possibly to another process:
 * //   await k1.kexec({ saveTo: "m.img" });   // resolves to undefined
 * //   const k2 = await (await Machine.load("m.img")).boot({ plugins });
 * ```
 *
 * @category Entry points
 */
export class Kernel {
  /** The VFS context: device nodes and halt state. */
  readonly context: KernelContext;
  /** Outgoing KHO. */
  readonly kho: Kho;
  /** The Live Update Orchestrator. */
  readonly liveupdate: LiveUpdate;
  private readonly teardowns: Array<{ name: string; fn: () => Awaitable<void> }> = [];
  private kexecBusy = false;

  private constructor(
    /** The machine. */
    readonly machine: Machine,
    /** The kernel's child DI container. */
    readonly container: DependencyContainer,
    /** Incoming KHO handover, after a live update. */
    readonly incoming: KhoIncoming | undefined,
    /** Plugins registered at boot, in registration order. */
    readonly plugins: readonly Plugin[],
    name: string,
  ) {
    this.context = new KernelContext(name, container);
    this.kho = new Kho(machine);
    const handover = incoming ? readLuoHandover(incoming) : undefined;
    this.liveupdate = new LiveUpdate(this.context, { machine, kho: this.kho, incoming, container }, handover);
    registerCharDevices(this.context);
    registerLiveUpdateDevice(this.liveupdate, (path, open) => this.context.registerDevice(path, open));
    container.registerInstance(MACHINE, machine);
    container.registerInstance(KERNEL_CONTEXT, this.context);
    container.registerInstance(KHO, this.kho);
    if (incoming) container.registerInstance(KHO_INCOMING, incoming);
    container.registerInstance(LIVE_UPDATE, this.liveupdate);
  }

  /**
   * Boots a kernel on `machine`: cold if `machine.khoRoot` is 0, else from the handover. Atomic:
   * if it fails, the machine is left exactly as it was (see the module comment).
   * Errors: `EINVAL` (not a machine, options not an object or with an unknown key, `plugins` not
   * an array of plugins), `ENOENT`/`ELOOP`/`EEXIST` (plugin dependencies), `EBUSY` (a kernel is
   * already running or booting on the machine), {@link KernelPanicError} (corrupt handover), a
   * plugin's `register` error (`EIO` with `cause` unless it threw a `LiveUpdateError`).
   */
  static async boot(machine: Machine, options: BootOptions = {}): Promise<Kernel> {
    if (!(machine instanceof Machine)) {
      throw new LiveUpdateError("EINVAL", `boot: ${describeValue(machine)} is not a Machine`);
    }
    checkOptions(options, "boot", ["plugins"]);
    const plugins = checkPlugins(options.plugins ?? [], "boot");
    if (running.has(machine))
      throw new LiveUpdateError("EBUSY", "a kernel is already running on this machine");
    const checkpoint = openMachineCheckpoint(machine);
    let kernel: Kernel | undefined;
    try {
      const incoming = KhoIncoming.boot(machine);
      kernel = new Kernel(
        machine,
        rootContainer.createChildContainer(),
        incoming,
        plugins,
        `kernel#${++bootCounter}`,
      );
      running.set(machine, kernel);
      for (const p of plugins) {
        try {
          await p.register(kernel.pluginContext(p));
        } catch (e) {
          throw e instanceof KernelPanicError ? e : toLiveUpdateError(e, `plugin "${p.name}" register`);
        }
      }
    } catch (e) {
      // Unwind in reverse: the plugins that registered, the kernel, then the machine itself.
      if (kernel) {
        await kernel.teardown();
        running.delete(machine);
        kernel.context.halt();
      }
      checkpoint.rollback();
      throw toLiveUpdateError(e, "boot");
    }
    // From here nothing can fail: the new kernel has taken over the handover.
    checkpoint.commit();
    return kernel;
  }

  private pluginContext(p: Plugin): PluginContext {
    const luo = this.liveupdate;
    return {
      container: this.container,
      machine: this.machine,
      kho: this.kho,
      incoming: this.incoming,
      kernel: this.context,
      liveupdate: luo,
      flb: luo.flbs,
      registerFileHandler: (h) => luo.registry.registerHandler(h),
      registerFlb: (h, flb) => luo.registry.registerFlb(h, flb),
      registerDevice: (path, open) => this.context.registerDevice(path, open),
      onTeardown: (fn) => this.teardowns.push({ name: p.name, fn }),
    };
  }

  /** The kernel's name in messages (`kernel#N`). */
  get name(): string {
    return this.context.name;
  }

  /** True once this kernel was replaced by a live update (or shut down). */
  get halted(): boolean {
    return this.context.halted;
  }

  /** The compatibles this kernel serves: its registered file handlers and their FLBs. */
  compatibles(): ServedCompatibles {
    return this.liveupdate.registry.compatibles();
  }

  /** Starts a process. `ESHUTDOWN` on a halted kernel. */
  spawn(name: string): Process {
    this.context.assertRunning();
    return new Process(this.context, name, this.context.allocPid());
  }

  private async teardown(): Promise<void> {
    const errors: LiveUpdateError[] = [];
    while (this.teardowns.length > 0) {
      const t = this.teardowns.pop()!;
      try {
        await t.fn();
      } catch (e) {
        errors.push(toLiveUpdateError(e, `plugin "${t.name}" teardown`));
      }
    }
    for (const e of errors) this.liveupdate.events.warn(e);
  }

  /**
   * Live update: freeze, hand over, boot the next kernel. Resolves to the next kernel, or to
   * `undefined` with `saveTo`. Machine time advances by `gapNs` between the halt and the next
   * boot. Errors: `EINVAL` (bad `gapNs`), `EBUSY` (a kexec is in progress), the freeze error of a
   * handler (this kernel keeps running), `ENOMEM`, the image write error (this kernel keeps
   * running), {@link KernelPanicError} if the next kernel cannot boot from the handover.
   * `EINVAL` for malformed options and `ENOENT`/`ELOOP`/`EEXIST` for the next kernel's plugin
   * dependencies, before anything is frozen. If the next kernel fails to boot (a plugin's
   * `register` throws), this kernel is halted but the handover stays intact in the machine:
   * `machine.boot({ plugins })` with working plugins recovers every session.
   */
  kexec(options?: KexecOptions): Promise<Kernel>;
  /** With `saveTo`: freeze, hand over and write the machine image; resolves to `undefined`. */
  kexec(options: KexecSaveOptions): Promise<undefined>;
  /** Either form, when which one is only known at run time. */
  kexec(options: KexecOptions | KexecSaveOptions): Promise<Kernel | undefined>;
  async kexec(options: KexecOptions | KexecSaveOptions = {}): Promise<Kernel | undefined> {
    this.context.assertRunning();
    checkOptions(options, "kexec", ["plugins", "saveTo", "gapNs"]);
    const next = options.plugins === undefined ? this.plugins : checkPlugins(options.plugins, "kexec");
    if (options.saveTo !== undefined && (typeof options.saveTo !== "string" || options.saveTo === "")) {
      throw new LiveUpdateError(
        "EINVAL",
        `kexec: saveTo must be a non-empty path string, not ${describeValue(options.saveTo)}`,
      );
    }
    const gap = (options as KexecOptions).gapNs ?? 0;
    if (
      !(typeof gap === "bigint" ? gap >= 0n : Number.isSafeInteger(gap) && gap >= 0) ||
      (gap !== 0 && gap !== 0n && options.saveTo !== undefined)
    ) {
      throw new LiveUpdateError(
        "EINVAL",
        `kexec: gapNs ${describeValue(gap)} must be a non-negative integer, and not combined with saveTo`,
      );
    }
    if (this.kexecBusy) throw new LiveUpdateError("EBUSY", `a kexec of ${this.name} is already in progress`);
    this.kexecBusy = true;
    try {
      const ticket = await this.liveupdate.prepareReboot();
      try {
        this.kho.finalize();
        if (options.saveTo !== undefined) await this.machine.save(options.saveTo, { preservedOnly: true });
      } catch (e) {
        const err = toLiveUpdateError(e, `handing over ${this.name}`);
        this.kho.abortFinalize();
        await ticket.abort(err);
        throw err;
      }
      ticket.commit();
      this.machine.scrub();
      this.context.halt();
      running.delete(this.machine);
      await this.teardown();
    } finally {
      this.kexecBusy = false;
    }
    if (options.saveTo !== undefined) return undefined;
    this.machine.advanceTime(gap);
    return Kernel.boot(this.machine, { plugins: next });
  }

  /** Halts the kernel without a live update (teardown in reverse; nothing is handed over). */
  async shutdown(): Promise<void> {
    if (this.halted) return;
    this.context.halt();
    running.delete(this.machine);
    await this.teardown();
  }
}

/** `EINVAL` unless `options` is a plain object whose keys are all in `known`. */
function checkOptions(options: unknown, where: string, known: readonly string[]): void {
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    throw new LiveUpdateError("EINVAL", `${where}: options must be an object, not ${describeValue(options)}`);
  }
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) {
      throw new LiveUpdateError(
        "EINVAL",
        `${where}: unknown option ${JSON.stringify(key)} (known: ${known.join(", ")})`,
      );
    }
  }
}
