/**
 * Child-process entry of `--image`: `node next-main.js <machine image> <input.json>`. Loads the
 * host from the image (RAM with the handover, the IOMMU and the PCI devices with their state),
 * lets `gapNs` of machine time pass (devices that keep running work in it), boots the next kernel,
 * runs the fleet's next-kernel side and prints its result as one JSON object on stdout.
 *
 * @module
 */
import { readFile } from "node:fs/promises";
import { hostPlugins, loadHost, type BootClock } from "./host.js";
import { runNextKernel, type NextKernelInput } from "./next-kernel.js";

const [image, inputPath] = process.argv.slice(2);
if (!image || !inputPath) {
  process.stderr.write("usage: next-main.js <machine image> <input.json>\n");
  process.exit(2);
}
const input = JSON.parse(await readFile(inputPath, "utf8")) as NextKernelInput;
const machine = await loadHost(image);
machine.advanceTime(input.config.gapNs);
const clock: BootClock = { last: 0 };
const kernel = await machine.boot({ plugins: hostPlugins(input.config, clock) });
const result = await runNextKernel(kernel, input, clock.last);
process.stdout.write(JSON.stringify(result));
