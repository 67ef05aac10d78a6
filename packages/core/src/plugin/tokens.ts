/**
 * DI tokens of the core services, registered in every kernel's child container. Tokens are
 * `Symbol.for("luo.X")` so two copies of the package agree on them; always inject with an
 * explicit `@inject(TOKEN)` (no reliance on emitted decorator metadata).
 *
 * @module
 */
import type { InjectionToken } from "tsyringe";
import type { KernelContext } from "../kernel/index.js";
import type { Kho, KhoIncoming } from "../kho/index.js";
import type { LiveUpdate } from "../liveupdate/index.js";
import type { Machine } from "../machine/index.js";

/**
 * The machine the kernel runs on.
 *
 * @category Plugins
 */
export const MACHINE: InjectionToken<Machine> = Symbol.for("luo.Machine");
/**
 * The kernel's VFS context (device nodes, halt state).
 *
 * @category Plugins
 */
export const KERNEL_CONTEXT: InjectionToken<KernelContext> = Symbol.for("luo.KernelContext");
/**
 * Outgoing KHO of the kernel.
 *
 * @category Plugins
 */
export const KHO: InjectionToken<Kho> = Symbol.for("luo.Kho");
/**
 * Incoming KHO handover (registered only after a live update).
 *
 * @category Plugins
 */
export const KHO_INCOMING: InjectionToken<KhoIncoming> = Symbol.for("luo.KhoIncoming");
/**
 * The kernel's Live Update Orchestrator.
 *
 * @category Plugins
 */
export const LIVE_UPDATE: InjectionToken<LiveUpdate> = Symbol.for("luo.LiveUpdate");
