/**
 * Building and navigating {@link FdtNode} trees in memory: a node builder that checks names as it
 * goes, a tree builder with defaults, path lookup and property access (interpret values with the `readFdt*` helpers, which
 * report a missing property).
 *
 * @module
 */
import { FdtError } from "../errors.js";
import { isValidFdtNodeName, isValidFdtPropertyName } from "./names.js";
import type { FdtNode, FdtReservation, FdtTree } from "./types.js";

/**
 * Properties given to {@link fdtNode}: a record (object key order) or name/value pairs in order.
 *
 * @category FDT
 */
export type FdtPropsInit = Readonly<Record<string, Uint8Array>> | Iterable<readonly [string, Uint8Array]>;

/**
 * Options of {@link fdtTree}.
 *
 * @category FDT
 */
export interface FdtTreeOptions {
  /** Memory reservation entries (default none). */
  reservations?: readonly FdtReservation[];
  /** `boot_cpuid_phys` (default 0). */
  bootCpuid?: number;
}

function isIterable(x: FdtPropsInit): x is Iterable<readonly [string, Uint8Array]> {
  return typeof (x as { [Symbol.iterator]?: unknown })[Symbol.iterator] === "function";
}

/**
 * Builds a node, checking the names: `name` must be `""` (a root) or a valid node name, every
 * property name must be valid and unique, every value a `Uint8Array`, and child names unique.
 *
 * Note that a plain-object `props` enumerates integer-like keys (e.g. `"0"`) first; pass pairs
 * or a `Map` when the order of such names matters.
 *
 * @param name - node name (`""` for the root)
 * @param props - properties, in blob order
 * @param children - child nodes, in blob order
 * @throws {@link FdtError} on an invalid or duplicate name or a non-byte value
 *
 * @category FDT
 */
export function fdtNode(name: string, props: FdtPropsInit = {}, children: readonly FdtNode[] = []): FdtNode {
  if (name !== "" && !isValidFdtNodeName(name))
    throw new FdtError(`invalid node name ${JSON.stringify(name)}`);
  const map = new Map<string, Uint8Array>();
  const entries = isIterable(props) ? props : Object.entries(props);
  for (const [key, value] of entries) {
    if (!isValidFdtPropertyName(key)) throw new FdtError(`invalid property name ${JSON.stringify(key)}`);
    if (map.has(key)) throw new FdtError(`duplicate property ${JSON.stringify(key)} in node "${name}"`);
    if (!(value instanceof Uint8Array))
      throw new FdtError(`property ${JSON.stringify(key)} is not a Uint8Array`);
    map.set(key, value);
  }
  const seen = new Set<string>();
  for (const child of children) {
    if (seen.has(child.name)) throw new FdtError(`duplicate child node "${child.name}" in node "${name}"`);
    seen.add(child.name);
  }
  return { name, props: map, children: [...children] };
}

/**
 * Builds a tree around `root` (which must be named `""`).
 *
 * @param root - the root node
 * @param options - reservations and boot CPU id
 * @throws {@link FdtError} when the root has a name
 *
 * @category FDT
 */
export function fdtTree(root: FdtNode, options: FdtTreeOptions = {}): FdtTree {
  if (root.name !== "") throw new FdtError(`root node must be named "", not "${root.name}"`);
  return {
    root,
    reservations: (options.reservations ?? []).map((r) => ({ address: r.address, size: r.size })),
    bootCpuid: options.bootCpuid ?? 0,
  };
}

/**
 * Finds a node by absolute path, e.g. `"/LUO"` or `"/a/b@1"` (`"/"` is the root). Names are
 * matched exactly, unit address included; empty path components are ignored.
 *
 * @param from - a tree, or a node the path is taken relative to
 * @param path - an absolute path starting with `/`
 * @returns the node, or `undefined` when there is none at that path
 * @throws {@link FdtError} when `path` does not start with `/`
 *
 * @category FDT
 */
export function findFdtNode(from: FdtTree | FdtNode, path: string): FdtNode | undefined {
  if (!path.startsWith("/")) throw new FdtError(`path must be absolute: ${JSON.stringify(path)}`);
  let node: FdtNode | undefined = "root" in from ? from.root : from;
  for (const part of path.split("/")) {
    if (part === "") continue;
    node = node.children.find((c) => c.name === part);
    if (node === undefined) return undefined;
  }
  return node;
}

/**
 * Returns the raw value of property `name` of `node`, or `undefined` when it has none.
 *
 * @param node - the node
 * @param name - the property name
 *
 * @category FDT
 */
export function getProp(node: FdtNode, name: string): Uint8Array | undefined {
  return node.props.get(name);
}
