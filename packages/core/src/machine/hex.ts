// The one formatting of physical addresses (and other u64 values) in messages: `0x` and lower-case
// hex digits. Internal: not re-exported from the package entry.

/**
 * `0x…` lower-case hex of `value`, as messages name physical addresses.
 *
 * @category Machine
 */
export function hex(value: bigint): string {
  return `0x${value.toString(16)}`;
}
