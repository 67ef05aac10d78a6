// Shared setup of the memfd tests: a machine booted with the memfd plugin, a process with
// /dev/liveupdate open, one memfd preserved in a session, a kexec helper, and deterministic
// test data.
import { Machine, type Kernel, type LiveUpdateDevice, type Process, type SessionHandle } from "@luo/core";
import { memfd, memfdCreate } from "@luo/memfd-handler";

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

/** A booted kernel whose session holds one preserved memfd. */
export interface Preserved {
  readonly k1: Booted;
  readonly session: SessionHandle;
  readonly fd: number;
  /** Physical address of the memfd's handover record (memfd_luo_ser, the file's `data`). */
  readonly ser: bigint;
}

/**
 * Boots (see {@link boot}), creates session `session` and a memfd `name` holding `data`, and
 * preserves it as `token`.
 */
export async function bootAndPreserve(
  data: Uint8Array,
  { session = "vm", name = "ram", token = 1n }: { session?: string; name?: string; token?: bigint } = {},
): Promise<Preserved> {
  const k1 = await boot();
  const s = await k1.dev.createSession(session);
  const fd = memfdCreate(k1.proc, name);
  k1.proc.pwrite(fd, data, 0);
  await s.preserveFd(fd, token);
  const ser = k1.kernel.liveupdate
    .handingOver()
    .sessions.find((x) => x.name === session)!
    .files.find((f) => f.token === token)!.data;
  return { k1, session: s, fd, ser };
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
