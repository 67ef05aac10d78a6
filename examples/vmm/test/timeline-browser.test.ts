// The HTML timeline in a real headless browser (Debian's chromium, driven by playwright-core):
// elements per guest and phase are counted in the rendered DOM, the page makes no request but
// its own file, and the screenshot is not blank (its pixels are counted in the browser itself).
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { chromium, type Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { screenshotColours } from "./helpers/screenshot.js";
import { CHROMIUM, CHROMIUM_ARGS, haveChromium } from "../../../scripts/browser-tools.mjs";
import { renderTimelineHtml } from "../src/timeline-html.js";
import { FleetTrace, timelineFromTrace } from "../src/trace.js";

const PHASES = ["pause", "preserve", "freeze", "kexec", "boot", "retrieve", "restore", "resume"];
const GUESTS = ["vm-0", "vm-1", "vm-2", "vm-3"];

function sampleTrace(): ReturnType<FleetTrace["toJSON"]> {
  const trace = new FleetTrace();
  const kernel = trace.row("kernel 1", "kernel");
  trace.span(kernel, "band", "kexec", 20, 32);
  GUESTS.forEach((name, i) => {
    const pid = trace.row(name, "guest");
    let t = 2 + i;
    const start = t;
    for (const phase of PHASES) {
      const d = 1 + ((i + phase.length) % 4);
      trace.span(pid, "phase", phase, t, t + d);
      t += d + 0.5;
    }
    trace.span(pid, "blackout", "blackout", start, t);
    trace.span(pid, "dma-blackout", "dma-blackout", start + 3, t - 2);
  });
  return trace.toJSON();
}

describe("HTML timeline in headless chromium", () => {
  let browser: Browser;
  let url: string;

  beforeAll(async () => {
    if (!haveChromium()) {
      throw new Error(
        `the timeline test needs ${CHROMIUM}: run scripts/ensure-tools.mjs as root (apt-get install -y chromium)`,
      );
    }
    const dir = mkdtempSync(join(tmpdir(), "luo-timeline-"));
    const file = join(dir, "timeline.html");
    writeFileSync(file, renderTimelineHtml(timelineFromTrace(sampleTrace(), "fleet live update")));
    url = pathToFileURL(file).href;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: [...CHROMIUM_ARGS] });
  });

  afterAll(async () => {
    await browser?.close();
  });

  it("draws every phase of every guest, the blackouts and the kexec band, and loads nothing else", async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const requests: string[] = [];
    page.on("request", (r) => requests.push(r.url()));
    await page.goto(url);
    for (const g of GUESTS) {
      expect(await page.locator(`rect.phase[data-guest="${g}"]`).count()).toBe(PHASES.length);
      for (const p of PHASES) {
        expect(await page.locator(`rect.phase[data-guest="${g}"][data-phase="${p}"]`).count()).toBe(1);
      }
      expect(await page.locator(`rect.blackout[data-guest="${g}"]`).count()).toBe(1);
      expect(await page.locator(`rect.dma-blackout[data-guest="${g}"]`).count()).toBe(1);
      expect(await page.locator(`tr[data-guest="${g}"] td`).count()).toBe(PHASES.length + 2);
    }
    expect(await page.locator("rect.band").count()).toBe(1);
    // Phases of one guest are drawn left to right in time order, with a real width.
    const boxes = await page
      .locator('rect.phase[data-guest="vm-2"]')
      .evaluateAll((els) => els.map((e) => e.getBoundingClientRect()).map((r) => ({ x: r.x, w: r.width })));
    for (let i = 1; i < boxes.length; i++) expect(boxes[i]!.x).toBeGreaterThan(boxes[i - 1]!.x);
    for (const b of boxes) expect(b.w).toBeGreaterThan(2);
    expect(requests).toEqual([url]);
    await page.close();
  });

  it("renders a screenshot that is not blank", async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.goto(url);
    const colours = await screenshotColours(page);
    // Eight phase colours, the blackout tint, text and grid: far more than a blank page's one.
    expect(colours).toBeGreaterThan(12);
    await page.close();
  });
});
