/**
 * The kit's own assertions, so the checks run without a test runner: `check(actual, message)`
 * offers the few matchers the cases use and throws a {@link ConformanceFailure} naming what was
 * checked, what was expected and what was found. Deep equality is Node's `isDeepStrictEqual`.
 *
 * @module
 */
import { inspect, isDeepStrictEqual } from "node:util";

/** A failed conformance check: the message says what the handler did wrong; `cause` the error it threw, if any. */
export class ConformanceFailure extends Error {
  override readonly name = "ConformanceFailure";
}

const show = (v: unknown): string => inspect(v, { depth: 4, breakLength: Infinity });

function fail(message: string | undefined, detail: string, cause?: unknown): never {
  throw new ConformanceFailure(message ? `${message}: ${detail}` : detail, { cause });
}

/** The matchers of {@link check}. */
export interface Check<T> {
  /** `Object.is` equality. */
  toBe(expected: T): void;
  /** Deep strict equality. */
  toEqual(expected: T): void;
  /** Not `undefined`. */
  toBeDefined(): void;
  /** `undefined`. */
  toBeUndefined(): void;
  /** A number (or bigint) greater than `n`. */
  toBeGreaterThan(n: number | bigint): void;
  /** A number (or bigint) greater than or equal to `n`. */
  toBeGreaterThanOrEqual(n: number | bigint): void;
  /** An instance of `cls`. */
  toBeInstanceOf(cls: abstract new (...args: never[]) => unknown): void;
  /** An array or string of length `n`. */
  toHaveLength(n: number): void;
  /** An array that does not contain `item`. */
  notToContain(item: unknown): void;
}

/** Assertions on `actual`; `message` says what is checked (it starts the failure message). */
export function check<T>(actual: T, message?: string): Check<T> {
  return {
    toBe(expected) {
      if (!Object.is(actual, expected)) fail(message, `expected ${show(expected)}, got ${show(actual)}`);
    },
    toEqual(expected) {
      if (!isDeepStrictEqual(actual, expected))
        fail(message, `expected ${show(expected)}, got ${show(actual)}`);
    },
    toBeDefined() {
      if (actual === undefined) fail(message, "expected a value, got undefined");
    },
    toBeUndefined() {
      if (actual !== undefined) fail(message, `expected undefined, got ${show(actual)}`);
    },
    toBeGreaterThan(n) {
      if (!((actual as number) > n)) fail(message, `expected more than ${show(n)}, got ${show(actual)}`);
    },
    toBeGreaterThanOrEqual(n) {
      if (!((actual as number) >= n)) fail(message, `expected at least ${show(n)}, got ${show(actual)}`);
    },
    toBeInstanceOf(cls) {
      if (!(actual instanceof cls)) fail(message, `expected a ${cls.name}, got ${show(actual)}`, actual);
    },
    toHaveLength(n) {
      const len = (actual as { length?: unknown }).length;
      if (len !== n) fail(message, `expected length ${n}, got ${show(actual)}`);
    },
    notToContain(item) {
      if ((actual as readonly unknown[]).includes(item))
        fail(message, `${show(actual)} contains ${show(item)}`);
    },
  };
}
