// Errno capture for the memfd tests: the LiveUpdateError code a call throws or a promise
// rejects with, so a test can assert on the errno alone.
import { isLiveUpdateError } from "@luo/core";

/** The errno `fn` throws as a LiveUpdateError, or `undefined` if it returns; other errors propagate. */
export function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    if (isLiveUpdateError(e)) return e.code;
    throw e;
  }
  return undefined;
}

/** The errno `p` rejects with as a LiveUpdateError, or `undefined` if it resolves; other errors propagate. */
export async function rejects(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (e) {
    if (isLiveUpdateError(e)) return e.code;
    throw e;
  }
  return undefined;
}
