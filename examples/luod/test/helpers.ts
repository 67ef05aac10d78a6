// A host for the luod tests: a machine with memfd and the test handler, luod, and VMM processes
// that each own one session holding a guest-RAM memfd with a known pattern.
import { expect } from "vitest";
import { Machine, type Kernel, type Plugin, type Process, type SessionHandle } from "@luo/core";
import { testHandlerPlugin, type TestPlugin } from "@luo/core/testing";
import { memfd, memfdCreate } from "@luo/memfd-handler";
import {
  connectLuod,
  startLuod,
  type Luod,
  type LuodClient,
  type LuodClientOptions,
  type LuodOptions,
} from "../src/index.js";

export const MEMORY = "64 MiB";
export const RAM_BYTES = 64 * 1024;

/** The guest RAM pattern of VMM `i`. */
export function ramPattern(i: number): Uint8Array {
  const out = new Uint8Array(RAM_BYTES);
  for (let j = 0; j < out.length; j++) out[j] = (j * 31 + i * 7 + (j >> 12)) & 0xff;
  return out;
}

/** A VMM: its process, luod connection and session. */
export interface Vmm {
  readonly name: string;
  readonly proc: Process;
  readonly client: LuodClient;
  readonly session: SessionHandle;
  readonly ram: number;
}

export interface Host {
  readonly machine: Machine;
  readonly kernel: Kernel;
  readonly luod: Luod;
  readonly vmms: Vmm[];
  readonly test: TestPlugin;
  readonly plugins: readonly Plugin[];
  /** Resolves with the next kernel once luod kexec'd in this process. */
  readonly next: Promise<Kernel | undefined>;
}

/** Allocated and preserved pages of a cold boot with `plugins` on a machine like the host's. */
export async function coldBaseline(
  plugins: readonly Plugin[],
): Promise<{ allocatedPages: number; preservedPages: number }> {
  const k = await new Machine({ memory: MEMORY }).boot({ plugins });
  const { allocatedPages, preservedPages } = k.machine.stats();
  await k.shutdown();
  return { allocatedPages, preservedPages };
}

/** Boots the host, starts luod and `n` VMMs, each with session `vm-<i>` holding its RAM at token 1. */
export async function host(
  n = 3,
  options: LuodOptions & { vmm?: (i: number) => Partial<LuodClientOptions>; flbs?: number } = {},
): Promise<Host> {
  const test = testHandlerPlugin({ flbs: options.flbs ?? 0 });
  const plugins = [memfd(), test];
  const machine = new Machine({ memory: MEMORY });
  const kernel = await machine.boot({ plugins });
  let resolveNext!: (k: Kernel | undefined) => void;
  const next = new Promise<Kernel | undefined>((r) => (resolveNext = r));
  const { vmm: vmmOptions, flbs: _flbs, ...luodOptions } = options;
  const luod = await startLuod(kernel, {
    barrierTimeoutMs: 2000,
    ...luodOptions,
    onKexec: async (k) => {
      await options.onKexec?.(k);
      resolveNext(k);
    },
  });
  const vmms: Vmm[] = [];
  for (let i = 0; i < n; i++) vmms.push(await vmm(kernel, i, vmmOptions?.(i)));
  return { machine, kernel, luod, vmms, test, plugins, next };
}

/** Starts VMM `i` on `kernel`: connects, creates `vm-<i>`, preserves its RAM memfd at token 1. */
export async function vmm(kernel: Kernel, i: number, extra: Partial<LuodClientOptions> = {}): Promise<Vmm> {
  const name = `vmm-${i}`;
  const proc = kernel.spawn(name);
  const client = await connectLuod(proc, { name, ...extra });
  const session = await client.createSession(`vm-${i}`);
  const ram = memfdCreate(proc, `guest-ram-${i}`);
  proc.pwrite(ram, ramPattern(i), 0);
  await session.preserveFd(ram, 1n);
  return { name, proc, client, session, ram };
}

/** In the next kernel: VMM `i` reconnects, gets `vm-<i>` back, checks its RAM and finishes. */
export async function reclaim(kernel: Kernel, i: number, path?: string): Promise<void> {
  const proc = kernel.spawn(`vmm-${i}`);
  const client = await connectLuod(proc, { name: `vmm-${i}`, path });
  expect(client.hello.sessions).toContain(`vm-${i}`);
  const s = await client.retrieveSession(`vm-${i}`);
  const ram = await s.retrieveFd(1n);
  expect(proc.pread(ram, RAM_BYTES, 0)).toEqual(ramPattern(i));
  await client.finishSession(s);
  client.close();
  proc.exit();
}

/** Lets pending socket reads and session releases run. */
export async function settle(ms = 0): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}
