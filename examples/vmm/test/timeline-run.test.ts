// The HTML timeline of a real fleet run in headless chromium: the trace the run wrote becomes the
// page; every guest row has its eight phases, its guest blackout and its DMA blackout; the
// kernel-wide bands (freeze, kexec, boot) are drawn; the page loads nothing else; the screenshot
// has the drawing's colours.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { chromium } from "playwright-core";
import { describe, expect, it } from "vitest";
import { screenshotColours } from "./helpers/screenshot.js";
import { CHROMIUM, CHROMIUM_ARGS, haveChromium } from "../../../scripts/browser-tools.mjs";
import { runFleet } from "../src/fleet.js";
import { PHASES } from "../src/report.js";
import { renderTimelineHtml } from "../src/timeline-html.js";
import { timelineFromTrace } from "../src/trace.js";

describe("the timeline of a real run", () => {
  it("draws what the run did, per guest and phase, in chromium", async () => {
    if (!haveChromium()) {
      throw new Error(
        `this test needs ${CHROMIUM}: run scripts/ensure-tools.mjs as root (apt-get install -y chromium)`,
      );
    }
    const report = await runFleet({ guests: 3, sizesMiB: [8, 12], stepsBefore: 12, stepsAfter: 6 });
    expect(report.ok).toBe(true);
    const dir = mkdtempSync(join(tmpdir(), "luo-timeline-run-"));
    const file = join(dir, "timeline.html");
    writeFileSync(
      file,
      renderTimelineHtml(timelineFromTrace(JSON.parse(JSON.stringify(report.trace)), "fleet")),
    );
    const url = pathToFileURL(file).href;
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: [...CHROMIUM_ARGS] });
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 600 } });
      const requests: string[] = [];
      page.on("request", (r) => requests.push(r.url()));
      await page.goto(url);
      for (const g of report.guests) {
        for (const p of PHASES) {
          expect(await page.locator(`rect.phase[data-guest="${g.name}"][data-phase="${p}"]`).count()).toBe(1);
        }
        expect(await page.locator(`rect.blackout[data-guest="${g.name}"]`).count()).toBe(1);
        expect(await page.locator(`rect.dma-blackout[data-guest="${g.name}"]`).count()).toBe(1);
      }
      expect(await page.locator("rect.phase").count()).toBe(report.guests.length * PHASES.length);
      const bands = await page
        .locator("rect.band")
        .evaluateAll((els) => els.map((e) => e.getAttribute("data-phase")));
      expect(bands).toEqual(["freeze", "kexec", "boot"]);
      // The blackout of each guest spans its phases from pause to resume.
      const span = await page
        .locator('rect.blackout[data-guest="vm-1"]')
        .evaluate((e) => e.getBoundingClientRect().width);
      expect(span).toBeGreaterThan(20);
      expect(requests).toEqual([url]);
      const colours = await screenshotColours(page);
      expect(colours).toBeGreaterThan(12);
    } finally {
      await browser.close();
    }
  });
});
