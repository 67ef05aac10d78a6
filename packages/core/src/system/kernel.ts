/**
 * A booted kernel: the composition of machine, KHO, VFS, orchestrator and plugins, and kexec.
 *
 * Boot ({@link Kernel.boot} / `machine.boot()`): validate the incoming KHO handover from the
 * machine's root address alone and rebuild the allocator (corrupt state → `KernelPanicError`),
 * read the LUO handover, set up the outgoing handover pages, register /dev/liveupdate, then
 * register plugins in dependency order.
 *
 * kexec ({@link Kernel.kexec}): freeze and serialize (a freeze failure rejects and the kernel
 * keeps running), finalize KHO, optionally write the machine image, then scrub every
 * non-preserved page, halt this kernel (every pending or later call rejects with `ESHUTDOWN`),
 * tear plugins down in reverse, and boot the next kernel in this process — or, with `saveTo`,
 * leave it to `Machine.load(path).boot()` in another process. A failure after serialization but
 * before the handover is committed unfreezes everything and leaves this kernel usable.
 *
 * @module
 */
import { container as rootContainer, type DependencyContainer } from "tsyringe";
import { KernelPanicError, LiveUpdateError, toLiveUpdateError } from "../errors.js";
import { KernelContext, Process } from "../kernel/index.js";
import { Kho, KhoIncoming } from "../kho/index.js";
import { readLuoHandover } from "../abi/index.js";
import {
  LiveUpdate,
  registerLiveUpdateDevice,
  type Awaitable,
  type ServedCompatibles,
} from "../liveupdate/index.js";
import type { Machine } from "../machine/index.js";
import {
  KERNEL_CONTEXT,
  KHO,
  KHO_INCOMING,
  LIVE_UPDATE,
  MACHINE,
  orderPlugins,
  type Plugin,
  type PluginContext,
} from "../plugin/index.js";

/** Options of a boot. */
export interface BootOptions {
  /** Plugins providing file types, handlers, FLBs and devices. */
  readonly plugins?: readonly Plugin[];
}

/** Options of {@link Kernel.kexec} that boots the next kernel in this process. */
export interface KexecOptions {
  /** Plugins of the next kernel (default: this kernel's), e.g. an upgraded handler set. */
  readonly plugins?: readonly Plugin[];
  /** Not set: the next kernel boots in this process (see {@link KexecSaveOptions}). */
  readonly saveTo?: undefined;
}

/** Options of {@link Kernel.kexec} that writes the machine image instead of booting. */
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

/** One booted kernel on a machine. */
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
    registerLiveUpdateDevice(this.liveupdate, (path, open) => this.context.registerDevice(path, open));
    container.registerInstance(MACHINE, machine);
    container.registerInstance(KERNEL_CONTEXT, this.context);
    container.registerInstance(KHO, this.kho);
    if (incoming) container.registerInstance(KHO_INCOMING, incoming);
    container.registerInstance(LIVE_UPDATE, this.liveupdate);
  }

  /**
   * Boots a kernel on `machine`: cold if `machine.khoRoot` is 0, else from the handover.
   * Errors: `EBUSY` (a kernel is already running on the machine), {@link KernelPanicError}
   * (corrupt handover), `ENOENT`/`ELOOP`/`EEXIST` (plugin dependencies), a plugin's error.
   */
  static async boot(machine: Machine, options: BootOptions = {}): Promise<Kernel> {
    if (running.has(machine))
      throw new LiveUpdateError("EBUSY", "a kernel is already running on this machine");
    const plugins = orderPlugins(options.plugins ?? []);
    const incoming = KhoIncoming.boot(machine);
    const kernel = new Kernel(
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
        await kernel.teardown();
        running.delete(machine);
        kernel.context.halt();
        if (e instanceof KernelPanicError) throw e;
        throw toLiveUpdateError(e, `plugin "${p.name}" register`);
      }
    }
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
    const errors: unknown[] = [];
    while (this.teardowns.length > 0) {
      const t = this.teardowns.pop()!;
      try {
        await t.fn();
      } catch (e) {
        errors.push(toLiveUpdateError(e, `plugin "${t.name}" teardown`));
      }
    }
    for (const e of errors) this.liveupdate.events.warn(e as LiveUpdateError);
  }

  /**
   * Live update: freeze, hand over, boot the next kernel. Resolves to the next kernel, or to
   * `undefined` with `saveTo`. Errors: `EBUSY` (a kexec is in progress), the freeze error of a
   * handler (this kernel keeps running), `ENOMEM`, the image write error (this kernel keeps
   * running), {@link KernelPanicError} if the next kernel cannot boot from the handover.
   */
  kexec(options?: KexecOptions): Promise<Kernel>;
  /** With `saveTo`: freeze, hand over and write the machine image; resolves to `undefined`. */
  kexec(options: KexecSaveOptions): Promise<undefined>;
  /** Either form, when which one is only known at run time. */
  kexec(options: KexecOptions | KexecSaveOptions): Promise<Kernel | undefined>;
  async kexec(options: KexecOptions | KexecSaveOptions = {}): Promise<Kernel | undefined> {
    this.context.assertRunning();
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
    return Kernel.boot(this.machine, { plugins: options.plugins ?? this.plugins });
  }

  /** Halts the kernel without a live update (teardown in reverse; nothing is handed over). */
  async shutdown(): Promise<void> {
    if (this.halted) return;
    this.context.halt();
    running.delete(this.machine);
    await this.teardown();
  }
}
