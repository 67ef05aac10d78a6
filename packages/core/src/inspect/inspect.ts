/**
 * Reading a pending handover without booting a kernel: what `luo inspect` shows.
 *
 * {@link inspectHandover} takes a machine whose `khoRoot` points at a handover (typically loaded
 * from an image written by `kexec({ saveTo })`), validates it exactly as the next kernel's early
 * boot would (so a corrupt handover fails with the same {@link KernelPanicError}), and returns
 * the sessions, files, FLBs, page counts and the raw FDT blobs. The machine's allocator is
 * rebuilt as a booting kernel would, so inspect a copy you do not intend to boot.
 *
 * @module
 */
import { LiveUpdateError } from "../errors.js";
import { FDT_HEADER_SIZE, peekFdtHeader } from "../fdt/index.js";
import { KhoIncoming } from "../kho/index.js";
import { LUO_KHO_NAME, readLuoHandover } from "../abi/index.js";
import { hex } from "../machine/hex.js";
import type { Machine } from "../machine/index.js";
import type { HandoverView } from "../liveupdate/index.js";

/**
 * Everything a handover carries, as `luo inspect` reports it: the sessions, files and FLBs of
 * {@link HandoverView} plus the KHO facts and the raw blobs.
 *
 * @category Inspect
 */
export interface HandoverReport extends HandoverView {
  /** Physical address of the KHO root FDT. */
  readonly khoRoot: bigint;
  /** Subtree names published in the KHO root. */
  readonly subtrees: readonly string[];
  /** Pages marked preserved on the machine. */
  readonly preservedPages: number;
  /** Raw FDT blobs by name (`kho-root`, `luo`). */
  readonly blobs: Readonly<Record<string, Uint8Array>>;
}

function blobAt(machine: Machine, phys: bigint): Uint8Array {
  const size = peekFdtHeader(machine.peek(phys, FDT_HEADER_SIZE)).totalSize;
  return machine.peek(phys, size).slice();
}

/**
 * Validates and reads the handover of `machine`. Errors: `ENOENT` when no handover is pending,
 * {@link KernelPanicError} when it is corrupt.
 *
 * @example
 * ```ts
 * import { Machine, formatHandoverReport, inspectHandover } from "@luo/core";
 * import { rm } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const image = join(tmpdir(), `inspect-example-${process.pid}.img`);
 * await (await new Machine({ memory: "16 MiB" }).boot()).kexec({ saveTo: image });
 * // Inspect a copy you will not boot: inspecting rebuilds its allocator.
 * console.log(formatHandoverReport(inspectHandover(await Machine.load(image))));
 * await rm(image);
 * ```
 *
 * @category Entry points
 */
export function inspectHandover(machine: Machine): HandoverReport {
  if (machine.khoRoot === 0n)
    throw new LiveUpdateError("ENOENT", "the machine has no pending handover (KHO root is 0)");
  const preservedPages = machine.stats().preservedPages;
  const kho = KhoIncoming.boot(machine)!;
  const blobs: Record<string, Uint8Array> = { "kho-root": blobAt(machine, kho.root) };
  const names = kho.subtreeNames();
  if (names.includes(LUO_KHO_NAME)) blobs.luo = blobAt(machine, kho.getSubtree(LUO_KHO_NAME));
  const h = readLuoHandover(kho);
  return {
    khoRoot: kho.root,
    subtrees: names,
    preservedPages,
    liveupdateNumber: h?.liveupdateNumber ?? 0n,
    sessions: (h?.sessions ?? []).map((s) => ({ name: s.name, files: s.files })),
    flbs: h?.flbs ?? [],
    blobs,
  };
}

/**
 * Renders a report as the text `luo inspect` prints.
 *
 * @category Inspect
 */
export function formatHandoverReport(r: HandoverReport): string {
  const lines = [
    `KHO root: ${hex(r.khoRoot)} (subtrees: ${r.subtrees.join(", ") || "none"})`,
    `preserved pages: ${r.preservedPages}`,
    `liveupdate-number: ${r.liveupdateNumber}`,
    `sessions: ${r.sessions.length}`,
  ];
  for (const s of r.sessions) {
    lines.push(`  session ${JSON.stringify(s.name)}: ${s.files.length} file(s)`);
    for (const f of s.files) lines.push(`    token ${f.token}  ${f.compatible}  data ${hex(f.data)}`);
  }
  lines.push(`FLBs: ${r.flbs.length}`);
  for (const f of r.flbs) lines.push(`  ${f.compatible}  data ${hex(f.data)}  count ${f.count}`);
  return lines.join("\n");
}

/**
 * The report as JSON-safe data, blobs omitted: addresses (`khoRoot`, file and FLB `data`) as
 * `0x` hex strings, the other bigints (`liveupdateNumber`, tokens, FLB counts) as decimal strings.
 *
 * @category Inspect
 */
export function handoverReportJson(r: HandoverReport): unknown {
  return {
    khoRoot: hex(r.khoRoot),
    subtrees: r.subtrees,
    preservedPages: r.preservedPages,
    liveupdateNumber: r.liveupdateNumber.toString(),
    sessions: r.sessions.map((s) => ({
      name: s.name,
      files: s.files.map((f) => ({ compatible: f.compatible, token: f.token.toString(), data: hex(f.data) })),
    })),
    flbs: r.flbs.map((f) => ({ compatible: f.compatible, data: hex(f.data), count: f.count.toString() })),
  };
}
