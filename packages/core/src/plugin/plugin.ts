/**
 * Plugins: how file types, handlers, FLBs and device nodes get into a kernel.
 *
 * A plugin is `definePlugin({ name, dependencies, register })`. At boot the kernel orders plugins
 * so every dependency registers first (`ENOENT` for a missing dependency, `ELOOP` for a cycle,
 * `EEXIST` for a duplicate name) and awaits each `register(ctx)` in turn, before
 * /dev/liveupdate can be opened. `ctx` offers the kernel's child DI container and registration
 * helpers; `onTeardown` callbacks run in reverse order when the kernel goes away (after a live
 * update or on shutdown), continuing past failures.
 *
 * @module
 */
import type { DependencyContainer } from "tsyringe";
import { LiveUpdateError } from "../errors.js";
import type { DeviceOpener, KernelContext } from "../kernel/index.js";
import type { Kho, KhoIncoming } from "../kho/index.js";
import type { Machine } from "../machine/index.js";
import type { Awaitable, FileHandler, Flb, LiveUpdate } from "../liveupdate/index.js";

/** What `register` receives. */
export interface PluginContext {
  /** The kernel's child DI container: register your services here, never in the global one. */
  readonly container: DependencyContainer;
  /** The machine the kernel runs on (physical memory, the page allocator). */
  readonly machine: Machine;
  /** The kernel's outgoing KHO: preserve pages and publish subtrees for the next kernel. */
  readonly kho: Kho;
  /** What the previous kernel handed over through KHO; `undefined` after a cold boot. */
  readonly incoming: KhoIncoming | undefined;
  /** The kernel's VFS context. */
  readonly kernel: KernelContext;
  /** The kernel's orchestrator. */
  readonly liveupdate: LiveUpdate;
  /** Registers a file handler (errors as `Registry.registerHandler`). */
  registerFileHandler(handler: FileHandler): Promise<void>;
  /** Links an FLB to a handler (errors as `Registry.registerFlb`). */
  registerFlb(handler: FileHandler, flb: Flb): Promise<void>;
  /** Adds a device node such as `/dev/iommu`. `EEXIST` if taken. */
  registerDevice(path: string, open: DeviceOpener): void;
  /** Adds a teardown callback; they run last-registered first. */
  onTeardown(fn: () => Awaitable<void>): void;
}

/** A plugin definition. */
export interface Plugin {
  /** Unique name. */
  readonly name: string;
  /** Names of plugins that must register first. */
  readonly dependencies: readonly string[];
  /** Called once per boot, in dependency order. */
  register(ctx: PluginContext): Awaitable<void>;
}

/** What {@link definePlugin} accepts. */
export interface PluginSpec {
  /** Unique name. */
  readonly name: string;
  /** Names of plugins that must register first. */
  readonly dependencies?: readonly string[];
  /** Called once per boot, in dependency order. */
  register(ctx: PluginContext): Awaitable<void>;
}

/** Validates a plugin definition. `EINVAL` for a missing name or `register`, or bad dependencies. */
export function definePlugin(spec: PluginSpec): Plugin {
  if (typeof spec?.name !== "string" || spec.name.length === 0) {
    throw new LiveUpdateError("EINVAL", "a plugin needs a non-empty name");
  }
  if (typeof spec.register !== "function") {
    throw new LiveUpdateError("EINVAL", `plugin "${spec.name}" has no register function`);
  }
  const dependencies = spec.dependencies ?? [];
  if (!Array.isArray(dependencies) || dependencies.some((d) => typeof d !== "string")) {
    throw new LiveUpdateError("EINVAL", `plugin "${spec.name}" has malformed dependencies`);
  }
  return Object.freeze({ name: spec.name, dependencies: [...dependencies], register: spec.register });
}

/**
 * Orders plugins so dependencies come first (stable otherwise).
 * Errors: `EEXIST` duplicate name, `ENOENT` missing dependency, `ELOOP` dependency cycle.
 */
export function orderPlugins(plugins: readonly Plugin[]): Plugin[] {
  const byName = new Map<string, Plugin>();
  for (const p of plugins) {
    if (byName.has(p.name)) throw new LiveUpdateError("EEXIST", `plugin "${p.name}" is listed twice`);
    byName.set(p.name, p);
  }
  const out: Plugin[] = [];
  const state = new Map<string, "visiting" | "done">();
  const visit = (p: Plugin, path: string[]): void => {
    const s = state.get(p.name);
    if (s === "done") return;
    if (s === "visiting") {
      throw new LiveUpdateError("ELOOP", `plugin dependency cycle: ${[...path, p.name].join(" → ")}`);
    }
    state.set(p.name, "visiting");
    for (const d of p.dependencies) {
      const dep = byName.get(d);
      if (!dep)
        throw new LiveUpdateError("ENOENT", `plugin "${p.name}" depends on "${d}", which is not loaded`);
      visit(dep, [...path, p.name]);
    }
    state.set(p.name, "done");
    out.push(p);
  };
  for (const p of plugins) visit(p, []);
  return out;
}
