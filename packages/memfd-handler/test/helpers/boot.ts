// Shared setup of the memfd tests: a machine booted with the memfd plugin, a process with
// /dev/liveupdate open, a kexec helper, and deterministic test data.
import { Machine, type Kernel, type LiveUpdateDevice, type Process } from "@luo/core";
import { memfd } from "@luo/memfd-handler";

/** A booted kernel with one process that has /dev/liveupdate open. */
export interface Booted {
  readonly machine: Machine;
  readonly kernel: Kernel;
  readonly proc: Process;
  readonly dev: LiveUpdateDevice;
}

/** Boots `machine` (a new 64 MiB one by default) with the memfd plugin. */
export async function boot(machine = new Machine({ memory: "64 MiB" })): Promise<Booted> {
  const kernel = await machine.boot({ plugins: [memfd()] });
  const proc = kernel.spawn("vmm");
  const dev = await proc.openLiveUpdate();
  return { machine, kernel, proc, dev };
}

/** kexec into the next kernel in this process and open /dev/liveupdate there. */
export async function kexec(from: Booted): Promise<Booted> {
  const kernel = (await from.kernel.kexec())!;
  const proc = kernel.spawn("vmm");
  const dev = await proc.openLiveUpdate();
  return { machine: from.machine, kernel, proc, dev };
}

/** `n` pseudo-random bytes from `seed` (xorshift32), the same on every run. */
export function bytes(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** UTF-8 bytes of `s`. */
export const text = (s: string): Uint8Array => new TextEncoder().encode(s);

/**
 * Where `a` and `b` first differ (`-1` when equal). Large byte arrays are compared this way
 * because deep equality of a 1 MiB typed array is slow in the test runner.
 */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length)))
    return -1;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}
