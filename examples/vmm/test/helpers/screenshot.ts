// The browser tests' check that a page is drawn: take a PNG screenshot and count its distinct
// colours by decoding it in the browser itself (no PNG decoder in the tests).
import type { Page } from "playwright-core";

/** Distinct RGB colours of a screenshot of `page` (a blank page has one). */
export async function screenshotColours(page: Page): Promise<number> {
  const png = await page.screenshot({ type: "png" });
  if (png.subarray(1, 4).toString("latin1") !== "PNG") throw new Error("the screenshot is not a PNG");
  return page.evaluate(async (b64) => {
    const img = new Image();
    img.src = `data:image/png;base64,${b64}`;
    await img.decode();
    const canvas = document.createElement("canvas");
    canvas.width = img.width;
    canvas.height = img.height;
    const ctx = canvas.getContext("2d")!;
    ctx.drawImage(img, 0, 0);
    const data = ctx.getImageData(0, 0, img.width, img.height).data;
    const seen = new Set<number>();
    for (let i = 0; i < data.length; i += 4) seen.add((data[i]! << 16) | (data[i + 1]! << 8) | data[i + 2]!);
    return seen.size;
  }, png.toString("base64"));
}
