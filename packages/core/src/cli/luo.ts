#!/usr/bin/env node
/**
 * The `luo` command line.
 *
 *   luo inspect <machine-image> [--json] [--dtb <dir>]
 *
 * Loads a machine image written by `kernel.kexec({ saveTo })`, validates the pending handover as
 * the next kernel would, and prints it: live-update number, sessions with their files
 * (compatible, token, data), FLBs and the preserved page count. `--json` prints machine-readable
 * output; `--dtb <dir>` also writes every FDT blob (`kho-root.dtb`, `luo.dtb`) for `dtc`.
 * Exit status: 0 on success, 1 with the error (e.g. the kernel panic message) on a corrupt or
 * unreadable image, 2 on bad usage.
 *
 * @module
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Machine } from "../machine/index.js";
import { formatHandoverReport, handoverReportJson, inspectHandover } from "../inspect/index.js";

const USAGE = "usage: luo inspect <machine-image> [--json] [--dtb <dir>]";

async function main(argv: string[]): Promise<number> {
  const args = argv[0] === "--" ? argv.slice(1) : argv;
  if (args[0] !== "inspect") {
    console.error(USAGE);
    return 2;
  }
  let image: string | undefined;
  let json = false;
  let dtbDir: string | undefined;
  for (let i = 1; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--json") json = true;
    else if (a === "--dtb") dtbDir = args[++i];
    else if (!a.startsWith("-") && image === undefined) image = a;
    else {
      console.error(`luo: unexpected argument ${a}\n${USAGE}`);
      return 2;
    }
  }
  if (image === undefined || (args.includes("--dtb") && dtbDir === undefined)) {
    console.error(USAGE);
    return 2;
  }
  try {
    const machine = await Machine.load(image);
    const report = inspectHandover(machine);
    if (dtbDir !== undefined) {
      await mkdir(dtbDir, { recursive: true });
      for (const [name, blob] of Object.entries(report.blobs))
        await writeFile(join(dtbDir, `${name}.dtb`), blob);
    }
    console.log(json ? JSON.stringify(handoverReportJson(report), null, 2) : formatHandoverReport(report));
    return 0;
  } catch (e) {
    console.error(`luo inspect: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
