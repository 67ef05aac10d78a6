/**
 * Validity of node and property names (devicetree specification §2.2.1 and §2.2.4.1). Both the
 * writer and the reader apply these rules, so every blob this project accepts or produces also
 * passes `dtc`'s name checks.
 *
 * - Node name: `node-name[@unit-address]`. `node-name` is 1–31 characters from
 *   `[0-9A-Za-z,._+-]` and starts with a letter; `unit-address`, when the `@` is present, is one
 *   or more characters from the same set. The root node (and only the root) is named `""`.
 * - Property name: 1–31 characters from `[0-9A-Za-z,._+?#-]`.
 *
 * @module
 */

const NODE_NAME = /^[A-Za-z][0-9A-Za-z,._+-]{0,30}(?:@[0-9A-Za-z,._+-]+)?$/;
const PROPERTY_NAME = /^[0-9A-Za-z,._+?#-]{1,31}$/;

/**
 * True when `name` is a valid name for a non-root node (`node-name[@unit-address]`, node-name
 * 1–31 characters from `[0-9A-Za-z,._+-]` starting with a letter).
 *
 * @param name - the candidate node name
 *
 * @category FDT
 */
export function isValidFdtNodeName(name: string): boolean {
  return NODE_NAME.test(name);
}

/**
 * True when `name` is a valid property name (1–31 characters from `[0-9A-Za-z,._+?#-]`).
 *
 * @param name - the candidate property name
 *
 * @category FDT
 */
export function isValidFdtPropertyName(name: string): boolean {
  return PROPERTY_NAME.test(name);
}
