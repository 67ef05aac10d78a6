/**
 * The services one kernel's orchestrator shares between sessions and files: allocator, handover,
 * registries, events and the DI container. A plain record, built once per boot by the core.
 *
 * @module
 */
import type { DependencyContainer } from "tsyringe";
import type { Kho, KhoIncoming } from "../kho/index.js";
import type { Machine } from "../machine/index.js";
import type { FlbManager } from "./flb.js";
import type { LiveUpdateEvents } from "./events.js";
import type { PreservedIds } from "./preserved-ids.js";
import type { Registry } from "./registration.js";

/** Shared per-kernel services of the orchestrator. */
export interface LuoServices {
  /** The machine. */
  readonly machine: Machine;
  /** Outgoing KHO. */
  readonly kho: Kho;
  /** Incoming KHO handover, after a live update. */
  readonly incoming: KhoIncoming | undefined;
  /** Handler and FLB registry. */
  readonly registry: Registry;
  /** FLB lifecycle. */
  readonly flbs: FlbManager;
  /** Double-preservation registry. */
  readonly ids: PreservedIds;
  /** Lifecycle events. */
  readonly events: LiveUpdateEvents;
  /** The kernel's DI container. */
  readonly container: DependencyContainer;
}
