/**
 * Plugins: how file types, handlers, FLBs and device nodes get into a kernel.
 *
 * The lifecycle, with its happy and unhappy paths, is documented on {@link definePlugin}.
 *
 * @module
 */
import type { DependencyContainer } from "tsyringe";
import { describeValue, LiveUpdateError } from "../errors.js";
import type { DeviceOpener, KernelContext } from "../kernel/index.js";
import type { Kho, KhoIncoming } from "../kho/index.js";
import type { Machine } from "../machine/index.js";
import type { Awaitable, FileHandler, Flb, FlbAccess, LiveUpdate } from "../liveupdate/index.js";

/**
 * What `register` receives.
 *
 * @category Entry points
 */
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
  /**
   * FLB access, as handler callbacks get it: after registering an FLB a plugin may take the
   * previous kernel's state at boot (`getIncoming`: `ENODATA` after a cold boot, `ENOENT` when
   * that FLB was not handed over, `KernelPanicError` or the FLB's own error when it is corrupt),
   * as a driver that must adopt hardware early does.
   */
  readonly flb: FlbAccess;
  /** Registers a file handler (errors as `Registry.registerHandler`). */
  registerFileHandler(handler: FileHandler): Promise<void>;
  /** Links an FLB to a handler (errors as `Registry.registerFlb`). */
  registerFlb(handler: FileHandler, flb: Flb): Promise<void>;
  /** Adds a device node such as `/dev/iommu`. `EEXIST` if taken. */
  registerDevice(path: string, open: DeviceOpener): void;
  /** Adds a teardown callback; they run last-registered first. */
  onTeardown(fn: () => Awaitable<void>): void;
}

/**
 * A plugin definition.
 *
 * @category Plugins
 */
export interface Plugin {
  /** Unique name. */
  readonly name: string;
  /** Names of plugins that must register first. */
  readonly dependencies: readonly string[];
  /** Called once per boot, in dependency order. */
  register(ctx: PluginContext): Awaitable<void>;
}

/**
 * What {@link definePlugin} accepts.
 *
 * @category Plugins
 */
export interface PluginSpec {
  /** Unique name. */
  readonly name: string;
  /** Names of plugins that must register first. */
  readonly dependencies?: readonly string[];
  /** Called once per boot, in dependency order. */
  register(ctx: PluginContext): Awaitable<void>;
}

/**
 * Validates a plugin definition. `EINVAL` for a missing name or `register`, or bad dependencies.
 *
 * A plugin is `definePlugin({ name, dependencies, register })`. At boot the kernel orders plugins
 * so every dependency registers first (`ENOENT` for a missing dependency, `ELOOP` for a cycle,
 * `EEXIST` for a duplicate name) and awaits each `register(ctx)` in turn, before
 * /dev/liveupdate can be opened. `ctx` offers the kernel's child DI container and registration
 * helpers; `onTeardown` callbacks run in reverse order when the kernel goes away (after a live
 * update or on shutdown), continuing past failures.
 *
 * @example
 * ```ts
 * import { Machine, definePlugin } from "@luo/core";
 *
 * const hello = definePlugin({
 *   name: "hello",
 *   dependencies: [], // names of plugins that must register first
 *   register(ctx) {
 *     console.log(`registering on a machine of ${ctx.machine.stats().totalPages} pages`);
 *     ctx.onTeardown(() => console.log("kernel going away"));
 *   },
 * });
 * const kernel = await new Machine({ memory: "16 MiB" }).boot({ plugins: [hello] });
 * await kernel.shutdown(); // "kernel going away"
 * ```
 *
 * @category Entry points
 */
export function definePlugin(spec: PluginSpec): Plugin {
  checkPlugin(spec, "definePlugin");
  return Object.freeze({
    name: spec.name,
    dependencies: [...(spec.dependencies ?? [])],
    register: spec.register,
  });
}

/**
 * Checks that `v` has a plugin's shape (from plain JavaScript anything can arrive): a non-empty
 * string `name`, a `register` function, and `dependencies` absent or an array of strings.
 * `EINVAL` naming `where` and the plugin otherwise.
 */
function checkPlugin(v: unknown, where: string): asserts v is PluginSpec {
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new LiveUpdateError("EINVAL", `${where}: a plugin must be an object, not ${describeValue(v)}`);
  }
  const spec = v as Partial<PluginSpec>;
  if (typeof spec.name !== "string" || spec.name.length === 0) {
    throw new LiveUpdateError(
      "EINVAL",
      `${where}: a plugin needs a non-empty name, not ${describeValue(spec.name)}`,
    );
  }
  if (typeof spec.register !== "function") {
    throw new LiveUpdateError("EINVAL", `${where}: plugin "${spec.name}" has no register function`);
  }
  const dependencies: unknown = spec.dependencies ?? [];
  if (!Array.isArray(dependencies) || dependencies.some((d) => typeof d !== "string")) {
    throw new LiveUpdateError(
      "EINVAL",
      `${where}: plugin "${spec.name}" has malformed dependencies (expected an array of plugin names)`,
    );
  }
}

/**
 * Validates a plugin list as passed by a caller (`boot({ plugins })`, `kexec({ plugins })`) and
 * orders it (see {@link orderPlugins}). Nothing is registered here, so a bad list fails before
 * anything changes. Errors: `EINVAL` (not an array, or an element without a plugin's shape),
 * then the errors of {@link orderPlugins}.
 */
export function checkPlugins(plugins: unknown, where: string): Plugin[] {
  if (!Array.isArray(plugins)) {
    throw new LiveUpdateError(
      "EINVAL",
      `${where}: plugins must be an array of plugins, not ${describeValue(plugins)}`,
    );
  }
  plugins.forEach((p, i) => checkPlugin(p, `${where}: plugins[${i}]`));
  return orderPlugins(plugins as Plugin[]);
}

/**
 * Orders plugins so dependencies come first (stable otherwise).
 * Errors: `EEXIST` duplicate name, `ENOENT` missing dependency, `ELOOP` dependency cycle.
 *
 * @category Plugins
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
    for (const d of p.dependencies ?? []) {
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
