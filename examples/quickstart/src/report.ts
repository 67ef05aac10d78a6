/**
 * The quickstart's printed report: the timed steps, the handover totals (sessions, files, bytes,
 * pages handed over, pages copied, blackout), the handover as `luo inspect` prints it (or, without
 * an image, as the new kernel received it) plus the memfd records, and the checks.
 *
 * @module
 */
import { PAGE_SIZE, formatHandoverReport } from "@luo/core";
import { formatSeals } from "@luo/memfd-handler";
import { thousands as num, type QuickstartResult } from "./quickstart.js";

const ms = (v: number): string => `${v.toFixed(2)} ms`;
const hex = (v: bigint): string => `0x${v.toString(16)}`;
const indent = (text: string, by = "  "): string =>
  text
    .split("\n")
    .map((l) => by + l)
    .join("\n");

/**
 * The handover section: the `luo inspect` text of the image, or — in-process, where there is no
 * image — the same text for what kernel#2 received (`liveupdate.received`), under a title that
 * says so.
 */
function handoverView(r: QuickstartResult): string[] {
  const title =
    r.handoverScope === "inspect"
      ? `luo inspect ${r.image ?? ""}`.trimEnd()
      : "handover as kernel#2 received it (liveupdate.received; --save-image shows luo inspect of the image)";
  return [title, indent(formatHandoverReport(r.handover))];
}

/** Renders the report; the last line says whether every check passed. */
export function formatQuickstartReport(r: QuickstartResult): string {
  const width = Math.max(...r.steps.map((s) => s.name.length));
  const passed = r.checks.filter((c) => c.ok).length;
  const lines = [
    `luo-ts quickstart: a live update of ${r.sessions} sessions and ${r.files} memfds (handler "memfd-v2")`,
    "",
    "steps",
    ...r.steps.map((s) => `  ${s.name.padEnd(width)}  ${ms(s.ms).padStart(10)}`),
    "",
    "handover",
    `  sessions preserved   ${r.sessions}`,
    `  files preserved      ${r.files}`,
    `  bytes preserved      ${num(r.bytesPreserved)} (${num(r.memfdPages)} memfd pages)`,
    `  pages handed over    ${num(r.pagesHandedOver)} (${num(r.pagesHandedOver * PAGE_SIZE)} bytes: memfd pages, their records, LUO and KHO metadata)`,
    `  pages copied         ${r.pagesCopied} of ${num(r.memfdPages)} (physical page addresses compared before and after)`,
    `  blackout             ${ms(r.blackoutMs)} (reboot:started → first successful retrieve${r.image === undefined ? "" : ", including the image write and load"})`,
    "",
    ...handoverView(r),
    "  memfd records (memfd_luo_ser, 48 bytes each; 16-byte folio records in preserved pages)",
    ...r.records.map((rec) => {
      const h = rec.handover;
      const arrayPages = h.area?.pages.length ?? 0;
      const chunks = h.area?.chunks.length ?? 0;
      return (
        `    ${rec.session}/${rec.token} at ${hex(h.ser)}: size ${num(Number(h.record.size))}, ` +
        `pos ${h.record.pos}, seals ${formatSeals(h.record.seals)}, ${h.record.nrFolios} folio(s)` +
        (arrayPages > 0 ? ` listed in ${arrayPages} page(s) + ${chunks} chunk page(s)` : "")
      );
    }),
    "",
    `checks: ${passed}/${r.checks.length} passed`,
    ...r.checks.map((c) => `  ${c.ok ? "ok  " : "FAIL"} ${c.name}${c.ok ? "" : `: ${c.detail ?? ""}`}`),
  ];
  if (r.image !== undefined) {
    lines.push("", `machine image kept: ${r.image} — inspect it again with: ./dev luo inspect ${r.image}`);
  }
  lines.push("", passed === r.checks.length ? "live update OK" : "live update FAILED");
  return lines.join("\n");
}
