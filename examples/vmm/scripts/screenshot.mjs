#!/usr/bin/env node
// Screenshots an HTML timeline with Debian's chromium (headless, no network):
//   node examples/vmm/scripts/screenshot.mjs <timeline.html> <out.png> [width]
// Used to make docs/vmm-timeline.png from `./dev demo`'s .tmp/vmm-demo/timeline.html.
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { chromium } from "playwright-core";
import { CHROMIUM, CHROMIUM_ARGS } from "../../../scripts/browser-tools.mjs";

const [html, out, width = "1280"] = process.argv.slice(2);
if (!html || !out) {
  process.stderr.write("usage: screenshot.mjs <timeline.html> <out.png> [width]\n");
  process.exit(2);
}
const browser = await chromium.launch({ executablePath: CHROMIUM, args: [...CHROMIUM_ARGS] });
try {
  const page = await browser.newPage({ viewport: { width: Number(width), height: 400 } });
  await page.goto(pathToFileURL(resolve(html)).href);
  await page.screenshot({ path: out, fullPage: true });
} finally {
  await browser.close();
}
