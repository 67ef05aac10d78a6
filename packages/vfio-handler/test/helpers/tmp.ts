// A temporary directory per test file, removed when the process exits.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

let dir: string | undefined;

/** A temporary directory (one per test file), removed at exit. */
export async function tempDir(): Promise<string> {
  if (!dir) {
    const d = mkdtempSync(join(tmpdir(), "luo-vfio-"));
    dir = d;
    process.on("exit", () => rmSync(d, { recursive: true, force: true }));
  }
  return dir;
}

/** Byte-wise equality via memcmp (vitest's deep equality is slow on large arrays). */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
}
