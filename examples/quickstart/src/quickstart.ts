/**
 * The quickstart live update, as a function that returns what happened.
 *
 * Boots a machine with the memfd plugin, puts known data into five memfds in two sessions (1 MiB
 * of random bytes, an empty memfd, a sealed config file, a sparse file, a log), preserves them,
 * writes more after preserving (captured at reboot, not at preserve), kexecs — in this process,
 * or through a machine image with `saveImage` — retrieves everything in the next kernel,
 * verifies every byte, size, position and seal, checks that no page was copied (the same
 * physical pages before and after), finishes, and checks that nothing leaked.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import {
  F_ADD_SEALS,
  F_GET_SEALS,
  Machine,
  PAGE_SIZE,
  SEEK_CUR,
  SEEK_SET,
  inspectHandover,
  isLiveUpdateError,
  type HandoverReport,
  type Kernel,
  type MemorySize,
  type Process,
  type SessionHandle,
} from "@luo/core";
import {
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  MEMFD_LUO_COMPATIBLE,
  memfd,
  memfdCreate,
  memfdFile,
  memfdPages,
  readMemfdHandover,
  type MemfdHandover,
} from "@luo/memfd-handler";

/** Options of {@link runQuickstart}. */
export interface QuickstartOptions {
  /** Write the machine image here at kexec and boot the next kernel from it (kept afterwards). */
  readonly saveImage?: string;
  /** RAM of the machine (default 256 MiB). */
  readonly memory?: MemorySize;
}

/** One timed step. */
export interface Step {
  /** What the step did. */
  readonly name: string;
  /** Wall time in milliseconds. */
  readonly ms: number;
}

/** One verified property. */
export interface Check {
  /** What was checked. */
  readonly name: string;
  /** Whether it held. */
  readonly ok: boolean;
  /** Why it failed. */
  readonly detail?: string;
}

/** A preserved memfd as its handover record describes it. */
export interface RecordSummary {
  /** Session name. */
  readonly session: string;
  /** Token. */
  readonly token: bigint;
  /** The decoded record and folio list. */
  readonly handover: MemfdHandover;
}

/** What {@link runQuickstart} found. */
export interface QuickstartResult {
  /** RAM size as given. */
  readonly memory: MemorySize;
  /** Timed steps in order. */
  readonly steps: readonly Step[];
  /** Every check; the run passed when all are ok. */
  readonly checks: readonly Check[];
  /** Sessions preserved. */
  readonly sessions: number;
  /** Files preserved. */
  readonly files: number;
  /** Sum of the preserved memfds' sizes at reboot. */
  readonly bytesPreserved: number;
  /** Pages marked preserved at the handover (memfd folios, their records, the LUO and KHO metadata). */
  readonly pagesHandedOver: number;
  /** Pages backing the memfds at reboot. */
  readonly memfdPages: number;
  /** memfd pages whose physical address changed across the live update (copied): must be 0. */
  readonly pagesCopied: number;
  /** From `reboot:started` in the old kernel to the first successful retrieve in the new one. */
  readonly blackoutMs: number;
  /**
   * The handover: as `luo inspect` shows it when an image was saved; otherwise what the new
   * kernel received (`liveupdate.received`: sessions, files, FLBs) with its KHO summary and no
   * raw blobs.
   */
  readonly handover: HandoverReport;
  /** Where {@link QuickstartResult.handover} comes from: `luo inspect` of the image, or `liveupdate.received`. */
  readonly handoverScope: "inspect" | "received";
  /** The memfd records of the handover. */
  readonly records: readonly RecordSummary[];
  /** The machine image, when one was saved. */
  readonly image: string | undefined;
}

/** A memfd of the demo and what it must hold after the live update. */
interface Planned {
  readonly session: string;
  readonly token: bigint;
  readonly name: string;
  fd: number;
  data: Uint8Array;
  pos: number;
  seals: number;
  pages: Map<number, bigint>;
}

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const KiB = 1024;
const MiB = 1024 * KiB;

/** `1234567` → `1,234,567` (without Intl, whose first use costs milliseconds inside a timed step). */
export function thousands(n: number): string {
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/** The errno `fn` throws (any other error as text), or `undefined` when it returns. */
function errnoOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return isLiveUpdateError(e) ? e.code : String(e);
  }
  return undefined;
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));
}

/** Overwrites `data` at `offset` in the planned content. */
function patch(f: Planned, data: Uint8Array, offset: number): void {
  f.data.set(data, offset);
}

/** Runs the quickstart (see the module comment). Rejects only on an unexpected error. */
export async function runQuickstart(options: QuickstartOptions = {}): Promise<QuickstartResult> {
  const memory = options.memory ?? "256 MiB";
  const steps: Step[] = [];
  const checks: Check[] = [];
  const check = (name: string, ok: boolean, detail?: string): void => {
    checks.push(ok ? { name, ok } : { name, ok, detail });
  };
  const timed = async <T>(name: string, fn: () => T | Promise<T>): Promise<T> => {
    const t = performance.now();
    const r = await fn();
    steps.push({ name, ms: performance.now() - t });
    return r;
  };
  const plugins = [memfd()];

  // ---- kernel 1: data, sessions, preserve ------------------------------------------------
  const k1 = await timed(`boot kernel#1 (${String(memory)} machine)`, () =>
    new Machine({ memory }).boot({ plugins }),
  );
  const p = k1.spawn("vmm");
  const dev = await p.openLiveUpdate();
  const sessions = new Map<string, SessionHandle>();
  const planned: Planned[] = [];
  const plan = (session: string, token: bigint, name: string, fd: number, data: Uint8Array): Planned => {
    const f: Planned = { session, token, name, fd, data, pos: 0, seals: F_SEAL_SEAL, pages: new Map() };
    planned.push(f);
    return f;
  };

  await timed("create 2 sessions and 5 memfds, fill them with data", async () => {
    for (const name of ["vm-0", "vm-1"]) sessions.set(name, await dev.createSession(name));
    const ram = plan("vm-0", 1n, "guest-ram", memfdCreate(p, "guest-ram"), new Uint8Array(randomBytes(MiB)));
    p.pwrite(ram.fd, ram.data, 0);
    plan("vm-0", 2n, "empty", memfdCreate(p, "empty"), new Uint8Array(0));
    const config = plan(
      "vm-0",
      3n,
      "config",
      memfdCreate(p, "config", { allowSealing: true }),
      enc(JSON.stringify({ vm: "vm-0", vcpus: 4, memory: "1 MiB" }, null, 2)),
    );
    p.write(config.fd, config.data);
    config.pos = config.data.length;
    p.fcntl(config.fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW);
    config.seals = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW;

    // 256 KiB with holes: only three pages are written; preserve fills the rest with zero pages.
    const sparse = plan("vm-1", 1n, "sparse", memfdCreate(p, "sparse"), new Uint8Array(256 * KiB));
    p.ftruncate(sparse.fd, sparse.data.length);
    for (const [offset, bytes] of [
      [0, enc("header")],
      [128 * KiB, new Uint8Array(randomBytes(PAGE_SIZE))],
      [256 * KiB - 7, enc("trailer")],
    ] as const) {
      p.pwrite(sparse.fd, bytes, offset);
      patch(sparse, bytes, offset);
    }
    p.lseek(sparse.fd, 100, SEEK_SET);
    sparse.pos = 100;

    const log = plan("vm-1", 2n, "log", memfdCreate(p, "log"), enc("kernel#1: vm-0 and vm-1 running\n"));
    p.write(log.fd, log.data);
    log.pos = log.data.length;
  });

  await timed(`preserve ${planned.length} memfds`, async () => {
    for (const f of planned) await sessions.get(f.session)!.preserveFd(f.fd, f.token);
  });

  await timed("write after preserve (captured at reboot)", () => {
    const [ram, , , sparse, log] = planned as [Planned, Planned, Planned, Planned, Planned];
    const fresh = new Uint8Array(randomBytes(64 * KiB));
    p.pwrite(ram.fd, fresh, 512 * KiB);
    patch(ram, fresh, 512 * KiB);
    p.pwrite(sparse.fd, enc("written into a filled hole"), 200 * KiB);
    patch(sparse, enc("written into a filled hole"), 200 * KiB);
    p.pwrite(log.fd, enc("KERNEL#1"), 0);
    patch(log, enc("KERNEL#1"), 0);
    p.lseek(log.fd, 3, SEEK_SET); // the position is captured at reboot too
    log.pos = 3;
  });

  // While preserved the size is frozen: a write past the end is refused, the size stays.
  {
    const log = planned[4]!;
    const code = errnoOf(() => p.pwrite(log.fd, enc("more"), log.data.length));
    check(
      "while preserved, a write past the end is EPERM and the size stays",
      code === "EPERM" && memfdFile(p, log.fd).size() === log.data.length,
      `got ${code ?? "success"}`,
    );
  }

  for (const f of planned) f.pages = memfdPages(memfdFile(p, f.fd));
  const bytesPreserved = planned.reduce((n, f) => n + f.data.length, 0);
  const memfdPageCount = planned.reduce((n, f) => n + f.pages.size, 0);
  // The user may close everything: LUO holds its own references to preserved files.
  for (const f of planned.slice(0, 3)) p.close(f.fd);

  // ---- kexec ------------------------------------------------------------------------------
  let rebootStarted = 0;
  let handedOver = 0;
  k1.liveupdate.events.on("reboot:started", (e) => (rebootStarted = e.time));
  k1.liveupdate.events.on("reboot:done", () => (handedOver = k1.machine.stats().preservedPages));
  let k2: Kernel;
  const image = options.saveImage;
  if (image === undefined) {
    k2 = await timed("kexec: freeze, hand over, scrub, boot kernel#2", () => k1.kexec());
  } else {
    await timed("kexec: freeze, hand over, scrub, save the machine image", () => k1.kexec({ saveTo: image }));
    k2 = await timed("load the image, boot kernel#2 from it", async () =>
      (await Machine.load(image)).boot({ plugins }),
    );
  }
  let firstRetrieve = 0;
  k2.liveupdate.events.on("file:retrieved", (e) => (firstRetrieve ||= e.time));

  {
    const code = errnoOf(() => p.pread(planned[4]!.fd, 1, 0));
    check(
      "kernel#1 is halted: its syscalls fail with ESHUTDOWN",
      code === "ESHUTDOWN",
      `got ${code ?? "success"}`,
    );
  }

  // ---- kernel 2: retrieve, verify, finish ---------------------------------------------------
  const q: Process = k2.spawn("vmm");
  const incomingSessions = new Map<string, SessionHandle>();
  await timed(`retrieve 2 sessions and ${planned.length} memfds`, async () => {
    const dev2 = await q.openLiveUpdate();
    for (const name of sessions.keys()) incomingSessions.set(name, await dev2.retrieveSession(name));
    for (const f of planned) f.fd = await incomingSessions.get(f.session)!.retrieveFd(f.token);
  });
  const blackoutMs = firstRetrieve - rebootStarted;

  // The handover as `luo inspect` shows it: from (a second copy of) the image. Inspecting
  // rebuilds the copy's allocator, so never boot that copy. In-process there is no image to
  // inspect: the report is what kernel#2 received (sessions, files and FLBs, from
  // `liveupdate.received`) plus its KHO facts; only the raw blobs are missing.
  let inspected: { report: HandoverReport; machine: Machine } | undefined;
  if (image !== undefined) {
    const copy = await Machine.load(image);
    inspected = { report: inspectHandover(copy), machine: copy };
  }
  const handover: HandoverReport = inspected?.report ?? {
    ...k2.liveupdate.received,
    khoRoot: k2.incoming!.root,
    subtrees: k2.incoming!.subtreeNames(),
    preservedPages: handedOver,
    blobs: {},
  };
  const recordMachine = inspected?.machine ?? k2.machine;
  const records: RecordSummary[] = handover.sessions.flatMap((s) =>
    s.files
      .filter((f) => f.compatible === MEMFD_LUO_COMPATIBLE)
      .map((f) => ({ session: s.name, token: f.token, handover: readMemfdHandover(recordMachine, f.data) })),
  );

  let pagesCopied = 0;
  await timed("verify every byte, size, position and seal", () => {
    for (const f of planned) {
      const file = memfdFile(q, f.fd);
      const size = file.size();
      const pos = q.lseek(f.fd, 0, SEEK_CUR);
      const seals = q.fcntl(f.fd, F_GET_SEALS);
      const bytes = q.pread(f.fd, size, 0);
      const problems = [
        size !== f.data.length && `size ${size} ≠ ${f.data.length}`,
        !same(bytes, f.data) && "bytes differ",
        pos !== f.pos && `position ${pos} ≠ ${f.pos}`,
        seals !== f.seals && `seals 0x${seals.toString(16)} ≠ 0x${f.seals.toString(16)}`,
      ].filter((x): x is string => typeof x === "string");
      check(
        `${f.session} token ${f.token} (${f.name}): ${thousands(f.data.length)} bytes, size, position and seals`,
        problems.length === 0,
        problems.join(", "),
      );
      const after = memfdPages(file);
      for (const [index, phys] of f.pages) if (after.get(index) !== phys) pagesCopied++;
      for (const index of after.keys()) if (!f.pages.has(index)) pagesCopied++;
    }
  });
  check(
    "zero copy: every memfd page has the same physical address after the live update",
    pagesCopied === 0,
    `${pagesCopied} page(s) moved`,
  );

  await timed("finish 2 sessions", async () => {
    for (const s of incomingSessions.values()) {
      await s.finish();
      await s.close();
    }
  });
  check(
    "after FINISH no handed-over page is left unclaimed",
    k2.incoming!.unrestoredPages === 0,
    `${k2.incoming!.unrestoredPages} page(s) left`,
  );
  check(
    "after FINISH live update owns no file",
    k2.liveupdate.stats().ownedFiles === 0,
    `${k2.liveupdate.stats().ownedFiles} left`,
  );

  return {
    memory,
    steps,
    checks,
    sessions: sessions.size,
    files: planned.length,
    bytesPreserved,
    pagesHandedOver: handover.preservedPages,
    memfdPages: memfdPageCount,
    pagesCopied,
    blackoutMs,
    handover,
    handoverScope: inspected ? "inspect" : "received",
    records,
    image: options.saveImage,
  };
}
