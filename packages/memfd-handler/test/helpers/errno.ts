// Errno capture for the memfd tests: the LiveUpdateError code a call throws or a promise
// rejects with, so a test can assert on the errno alone (or on the errno and the message).
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

/** The errno and message `p` rejects with as a LiveUpdateError (`undefined` if it resolves); other errors propagate. */
export async function rejection(p: Promise<unknown>): Promise<{ code: string; message: string } | undefined> {
  try {
    await p;
  } catch (e) {
    if (isLiveUpdateError(e)) return { code: e.code, message: e.message };
    throw e;
  }
  return undefined;
}

/** The errno and message `fn` throws as a LiveUpdateError (`undefined` if it returns); other errors propagate. */
export function thrown(fn: () => unknown): { code: string; message: string } | undefined {
  try {
    fn();
  } catch (e) {
    if (isLiveUpdateError(e)) return { code: e.code, message: e.message };
    throw e;
  }
  return undefined;
}
