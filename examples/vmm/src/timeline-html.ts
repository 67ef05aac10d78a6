/**
 * The blackout timeline as one self-contained HTML page: inline CSS and an inline SVG drawn here,
 * no scripts, no fonts, no network. One row per guest with its phases on a shared time axis, the
 * guest blackout (vCPUs paused → resumed) highlighted behind them, the device DMA blackout as a
 * bar underneath, fleet-wide bands (the kexec) behind every row, a legend and a table of phase
 * durations.
 *
 * Every drawn element carries `data-guest` / `data-phase` attributes, so a browser test can count
 * what was drawn per guest and phase.
 *
 * @module
 */
import type { TimelineModel, TimelineSpan } from "./trace.js";

/** Phase colours, in the order phases happen. */
export const PHASE_COLOURS: Readonly<Record<string, string>> = Object.freeze({
  pause: "#4e79a7",
  preserve: "#f28e2b",
  freeze: "#e15759",
  kexec: "#76b7b2",
  boot: "#59a14f",
  retrieve: "#edc948",
  restore: "#b07aa1",
  resume: "#ff9da7",
});

const OTHER_COLOUR = "#9c755f";
const WIDTH = 1200;
const LABEL = 150;
const ROW = 40;
const TOP = 40;

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function fmt(ms: number): string {
  return ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2);
}

/** A tick step of 1, 2 or 5 × 10^k that gives about `target` ticks over `span`. */
function tickStep(span: number, target: number): number {
  const raw = span / target;
  const p = 10 ** Math.floor(Math.log10(raw));
  const m = raw / p;
  return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

/** Renders `model` as a complete HTML document. */
export function renderTimelineHtml(model: TimelineModel): string {
  const spans: TimelineSpan[] = [...model.bands];
  for (const g of model.guests) {
    spans.push(...g.phases);
    if (g.blackout) spans.push(g.blackout);
    if (g.dmaBlackout) spans.push(g.dmaBlackout);
  }
  const t0 = spans.length ? Math.min(...spans.map((s) => s.start)) : 0;
  const t1 = spans.length ? Math.max(...spans.map((s) => s.end)) : 1;
  const span = Math.max(t1 - t0, 1e-3);
  const plot = WIDTH - LABEL - 50;
  const x = (t: number): number => LABEL + ((t - t0) / span) * plot;
  const w = (s: TimelineSpan): number => Math.max(1, ((s.end - s.start) / span) * plot);
  const height = TOP + model.guests.length * ROW + 30;
  const out: string[] = [];

  const step = tickStep(span, 10);
  for (let t = 0; t <= span + 1e-9; t += step) {
    const px = x(t0 + t).toFixed(1);
    out.push(`<line class="tick" x1="${px}" x2="${px}" y1="${TOP - 6}" y2="${height - 30}"/>`);
    out.push(`<text class="tick-label" x="${px}" y="${TOP - 10}">${fmt(t)} ms</text>`);
  }
  for (const b of model.bands) {
    out.push(
      `<rect class="band" data-phase="${esc(b.name)}" x="${x(b.start).toFixed(1)}" y="${TOP}" width="${w(b).toFixed(1)}" height="${model.guests.length * ROW}"><title>${esc(b.name)}: ${fmt(b.end - b.start)} ms</title></rect>`,
    );
    out.push(
      `<text class="band-label" x="${(x(b.start) + 3).toFixed(1)}" y="${height - 14}">${esc(b.name)}</text>`,
    );
  }
  model.guests.forEach((g, i) => {
    const y = TOP + i * ROW;
    const guest = esc(g.name);
    out.push(`<text class="guest-label" x="8" y="${y + ROW / 2 + 4}">${guest}</text>`);
    if (g.blackout) {
      const b = g.blackout;
      out.push(
        `<rect class="blackout" data-guest="${guest}" x="${x(b.start).toFixed(1)}" y="${y + 2}" width="${w(b).toFixed(1)}" height="${ROW - 4}"><title>${guest} blackout: ${fmt(b.end - b.start)} ms</title></rect>`,
      );
    }
    for (const p of g.phases) {
      const colour = PHASE_COLOURS[p.name] ?? OTHER_COLOUR;
      out.push(
        `<rect class="phase" data-guest="${guest}" data-phase="${esc(p.name)}" fill="${colour}" x="${x(p.start).toFixed(1)}" y="${y + 8}" width="${w(p).toFixed(1)}" height="${ROW - 20}"><title>${guest} ${esc(p.name)}: ${fmt(p.end - p.start)} ms</title></rect>`,
      );
    }
    if (g.dmaBlackout) {
      const d = g.dmaBlackout;
      out.push(
        `<rect class="dma-blackout" data-guest="${guest}" x="${x(d.start).toFixed(1)}" y="${y + ROW - 10}" width="${w(d).toFixed(1)}" height="4"><title>${guest} DMA blackout: ${fmt(d.end - d.start)} ms</title></rect>`,
      );
    }
  });

  const phaseNames = [...new Set(model.guests.flatMap((g) => g.phases.map((p) => p.name)))];
  const legend = phaseNames
    .map(
      (n) =>
        `<span class="key"><i style="background:${PHASE_COLOURS[n] ?? OTHER_COLOUR}"></i>${esc(n)}</span>`,
    )
    .concat([
      '<span class="key"><i class="k-blackout"></i>guest blackout</span>',
      '<span class="key"><i class="k-dma"></i>DMA blackout</span>',
    ])
    .join("");
  const rows = model.guests
    .map((g) => {
      const cells = phaseNames.map((n) => {
        const p = g.phases.find((q) => q.name === n);
        return `<td>${p ? fmt(p.end - p.start) : "–"}</td>`;
      });
      const bo = g.blackout ? fmt(g.blackout.end - g.blackout.start) : "–";
      const dma = g.dmaBlackout ? fmt(g.dmaBlackout.end - g.dmaBlackout.start) : "–";
      return `<tr data-guest="${esc(g.name)}"><th>${esc(g.name)}</th>${cells.join("")}<td class="bo">${bo}</td><td>${dma}</td></tr>`;
    })
    .join("\n");

  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${esc(model.title)}</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 18px; }
svg { border: 1px solid #ddd; background: #fcfcfc; }
.tick { stroke: #e4e4e4; }
.tick-label { font-size: 11px; fill: #666; text-anchor: middle; }
.band-label { font-size: 11px; fill: #666; }
.guest-label { font-size: 13px; fill: #222; }
.band { fill: #000; fill-opacity: 0.06; }
.blackout { fill: #d62728; fill-opacity: 0.18; stroke: #d62728; stroke-width: 1; }
.dma-blackout { fill: #111; }
.legend { margin: 10px 0; }
.key { margin-right: 16px; white-space: nowrap; }
.key i { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -1px; }
.k-blackout { background: rgba(214, 39, 40, 0.25); border: 1px solid #d62728; }
.k-dma { background: #111; height: 4px !important; vertical-align: 3px !important; }
table { border-collapse: collapse; margin-top: 14px; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { text-align: left; }
td.bo { font-weight: 600; color: #b01c1c; }
</style>
</head>
<body>
<h1>${esc(model.title)}</h1>
<div class="legend">${legend}</div>
<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" role="img" aria-label="live update timeline">
${out.join("\n")}
</svg>
<table>
<thead><tr><th>guest (ms)</th>${phaseNames.map((n) => `<th>${esc(n)}</th>`).join("")}<th>blackout</th><th>DMA blackout</th></tr></thead>
<tbody>
${rows}
</tbody>
</table>
</body>
</html>
`;
}
