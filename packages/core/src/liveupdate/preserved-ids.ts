/**
 * The double-preservation registry: one entry per file identity that LUO currently owns, system
 * wide — preserved in any outgoing session, or retrieved and not yet finished. A second
 * preservation of the same identity fails with `EBUSY`. The identity is the handler's `getId(file)`
 * when it has one (e.g. a memfd's inode, so two fds of one memfd collide), else the file object.
 *
 * @module
 */
import { LiveUpdateError } from "../errors.js";

/** Identity → a description of its owner (for messages). */
export class PreservedIds {
  private readonly ids = new Map<unknown, string>();

  /** Adds `id`; `EBUSY` (naming the current owner) if present. */
  insert(id: unknown, owner: string): void {
    const current = this.ids.get(id);
    if (current !== undefined) {
      throw new LiveUpdateError("EBUSY", `${owner}: the file is already owned by live update (${current})`);
    }
    this.ids.set(id, owner);
  }

  /** Removes `id` (no-op when absent). */
  remove(id: unknown): void {
    this.ids.delete(id);
  }

  /** Number of owned identities. */
  get size(): number {
    return this.ids.size;
  }
}
