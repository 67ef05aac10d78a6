/**
 * Registration of file handlers and FLBs, with quiesce/resume around every change (see docs/differences.md).
 *
 * Every (un)registration first quiesces: it takes the incoming then the outgoing session-list
 * locks for writing; if either list holds a session the call fails with `EBUSY`; otherwise it
 * makes the change and resumes (releases outgoing, then incoming). So the handler list never
 * changes under a live session, and handlers must be registered before the first
 * /dev/liveupdate open of a boot that has incoming sessions. Errors: missing callbacks or a bad
 * compatible `EINVAL`, duplicate compatible `EEXIST`, unregistering a handler with FLBs `EBUSY`,
 * FLB on an unknown handler `EINVAL`, the same FLB twice `EEXIST`, more than 63 FLBs `ENOSPC`,
 * unregistering an unlinked FLB `ENOENT`.
 *
 * @module
 */
import { LiveUpdateError } from "../errors.js";
import type { KernelFile } from "../kernel/index.js";
import { FLB_AREA } from "../abi/index.js";
import { checkHandlerShape, type FileHandler } from "./handler.js";
import { checkFlbShape, type Flb, type FlbManager, type FlbState } from "./flb.js";
import type { LevelRwLock } from "./locks.js";

/** A registered handler and its FLB links (registration order). */
export interface RegisteredHandler {
  /** The handler. */
  readonly handler: FileHandler;
  /** Linked FLBs in link order. */
  readonly flbs: FlbState[];
}

/** The compatibles a kernel serves: what it can take over from a previous kernel. */
export interface ServedCompatibles {
  /** Compatibles of the registered file handlers, in registration order. */
  readonly fileHandlers: readonly string[];
  /** Compatibles of the FLBs linked to them (each once), in link order. */
  readonly flbs: readonly string[];
}

/** Lists that must be empty for registration to proceed. */
export interface QuiesceTarget {
  /** Incoming session-list lock. */
  readonly incomingLock: LevelRwLock;
  /** Outgoing session-list lock. */
  readonly outgoingLock: LevelRwLock;
  /** Number of incoming and outgoing sessions. */
  sessionCounts(): { incoming: number; outgoing: number };
}

/** Handler and FLB registry of one kernel. */
export class Registry {
  /** Registered handlers by compatible; the map's insertion order is the registration order. */
  private readonly byCompatible = new Map<string, RegisteredHandler>();

  /**
   * @param sessions - the session lists to quiesce
   * @param flbs - the FLB manager
   */
  constructor(
    private readonly sessions: QuiesceTarget,
    private readonly flbs: FlbManager,
  ) {}

  private async quiesce<T>(what: string, fn: () => T): Promise<T> {
    return this.sessions.incomingLock.write(() =>
      this.sessions.outgoingLock.write(() => {
        const { incoming, outgoing } = this.sessions.sessionCounts();
        if (incoming + outgoing > 0) {
          throw new LiveUpdateError(
            "EBUSY",
            `cannot ${what}: ${outgoing} outgoing and ${incoming} incoming sessions exist`,
          );
        }
        return fn();
      }),
    );
  }

  /** The handler with `compatible`, if registered. */
  find(compatible: string): RegisteredHandler | undefined {
    return this.byCompatible.get(compatible);
  }

  /** The compatibles of every registered handler and linked FLB. */
  compatibles(): ServedCompatibles {
    const flbs = new Set<string>();
    for (const e of this.byCompatible.values()) for (const f of e.flbs) flbs.add(f.flb.compatible);
    return { fileHandlers: [...this.byCompatible.keys()], flbs: [...flbs] };
  }

  /** First handler whose `canPreserve` accepts `file` (registration order). */
  select(file: KernelFile): RegisteredHandler | undefined {
    for (const h of this.byCompatible.values()) {
      if (h.handler.canPreserve(file)) return h;
    }
    return undefined;
  }

  /** Registers a handler. `EINVAL`, `EEXIST`, `EBUSY` (see module comment). */
  async registerHandler(handler: FileHandler): Promise<void> {
    const h = handler;
    checkHandlerShape(h);
    await this.quiesce(`register handler "${h.compatible}"`, () => {
      if (this.byCompatible.has(h.compatible)) {
        throw new LiveUpdateError(
          "EEXIST",
          `a handler with compatible "${h.compatible}" is already registered`,
        );
      }
      this.byCompatible.set(h.compatible, { handler: h, flbs: [] });
    });
  }

  /** Unregisters a handler. `ENOENT` if unknown, `EBUSY` if FLBs are linked or sessions exist. */
  async unregisterHandler(handler: FileHandler): Promise<void> {
    const h = handler;
    await this.quiesce(`unregister handler "${h.compatible}"`, () => {
      const entry = this.entryOf(h);
      if (!entry) {
        throw new LiveUpdateError("ENOENT", `handler "${h.compatible}" is not registered`);
      }
      if (entry.flbs.length > 0) {
        throw new LiveUpdateError(
          "EBUSY",
          `handler "${h.compatible}" still has ${entry.flbs.length} FLBs linked`,
        );
      }
      this.byCompatible.delete(h.compatible);
    });
  }

  private entryOf(handler: FileHandler): RegisteredHandler | undefined {
    const entry = this.byCompatible.get(handler.compatible);
    return entry && entry.handler === handler ? entry : undefined;
  }

  /** Links an FLB to a registered handler. `EINVAL`, `EEXIST`, `ENOSPC`, `EBUSY`. */
  async registerFlb(handler: FileHandler, flb: Flb): Promise<void> {
    checkFlbShape(flb);
    const f = flb;
    await this.quiesce(`register FLB "${f.compatible}"`, () => {
      const entry = this.entryOf(handler);
      if (!entry) {
        throw new LiveUpdateError(
          "EINVAL",
          `cannot link FLB "${f.compatible}": handler "${handler.compatible}" is not registered`,
        );
      }
      if (entry.flbs.some((s) => s.flb === f)) {
        throw new LiveUpdateError(
          "EEXIST",
          `FLB "${f.compatible}" is already linked to handler "${handler.compatible}"`,
        );
      }
      entry.flbs.push(this.flbs.link(f, FLB_AREA.max));
    });
  }

  /** Unlinks an FLB from a handler. `ENOENT` if not linked, `EBUSY` while sessions exist. */
  async unregisterFlb(handler: FileHandler, flb: Flb): Promise<void> {
    const f = flb;
    await this.quiesce(`unregister FLB "${f.compatible}"`, () => {
      const entry = this.entryOf(handler);
      const i = entry ? entry.flbs.findIndex((s) => s.flb === f) : -1;
      if (!entry || i < 0) {
        throw new LiveUpdateError(
          "ENOENT",
          `FLB "${f.compatible}" is not linked to handler "${handler.compatible}"`,
        );
      }
      entry.flbs.splice(i, 1);
      this.flbs.unlink(f);
    });
  }
}
