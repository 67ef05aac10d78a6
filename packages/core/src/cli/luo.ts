#!/usr/bin/env node
/**
 * The `luo` command line.
 *
 *   luo inspect <machine-image> [--json] [--dtb <dir>] [--with <module>]…
 *
 * Loads a machine image written by `kernel.kexec({ saveTo })`, validates the pending handover as
 * the next kernel would, and prints it: live-update number, sessions with their files
 * (compatible, token, data), FLBs and the preserved page count. `--json` prints machine-readable
 * output; `--dtb <dir>` also writes every FDT blob (`kho-root.dtb`, `luo.dtb`) for `dtc`.
 * `--with <module>` loads an inspect extension (a path or a package name resolvable from the
 * current directory, exporting `luoInspect`): its hardware loaders are used to load the image and
 * its section is printed after the core report (e.g. `--with @luo/iommufd-handler` decodes
 * iommufd records and the IOMMU FLB).
 * Exit status: 0 on success, 1 with the error (e.g. the kernel panic message) on a corrupt or
 * unreadable image, 2 on bad usage.
 *
 * @module
 */
import { mkdir, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { isAbsolute, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { Machine } from "../machine/index.js";
import {
  checkInspectExtension,
  formatHandoverReport,
  handoverReportJson,
  inspectHandover,
  type InspectExtension,
} from "../inspect/index.js";

const USAGE = "usage: luo inspect <machine-image> [--json] [--dtb <dir>] [--with <module>]...";

/** Imports an extension module: a path (relative to the current directory) or a package name. */
async function loadExtension(spec: string): Promise<InspectExtension> {
  const url =
    spec.startsWith(".") || isAbsolute(spec)
      ? pathToFileURL(resolve(spec)).href
      : pathToFileURL(createRequire(join(process.cwd(), "luo-inspect.cjs")).resolve(spec)).href;
  const mod = (await import(url)) as { luoInspect?: unknown; default?: unknown };
  return checkInspectExtension(mod.luoInspect ?? mod.default, spec);
}

async function main(argv: string[]): Promise<number> {
  const args = argv[0] === "--" ? argv.slice(1) : argv;
  if (args[0] !== "inspect") {
    console.error(USAGE);
    return 2;
  }
  let image: string | undefined;
  let json = false;
  let dtbDir: string | undefined;
  const withs: string[] = [];
  for (let i = 1; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--json") json = true;
    else if (a === "--dtb") dtbDir = args[++i];
    else if (a === "--with" && args[i + 1] !== undefined) withs.push(args[++i]!);
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
    const exts: InspectExtension[] = [];
    for (const w of withs) exts.push(await loadExtension(w));
    const machine = await Machine.load(image, { hardware: exts.flatMap((e) => e.hardware ?? []) });
    const report = inspectHandover(machine);
    const sections = exts.map((e) => ({ name: e.name, ...e.inspect(machine, report) }));
    if (dtbDir !== undefined) {
      await mkdir(dtbDir, { recursive: true });
      for (const [name, blob] of Object.entries(report.blobs))
        await writeFile(join(dtbDir, `${name}.dtb`), blob);
    }
    if (json) {
      const out = handoverReportJson(report) as Record<string, unknown>;
      if (sections.length > 0) out.extensions = Object.fromEntries(sections.map((s) => [s.name, s.json]));
      console.log(JSON.stringify(out, null, 2));
    } else {
      const text = [formatHandoverReport(report)];
      for (const s of sections) text.push(`${s.name}:`, ...s.lines.map((l) => `  ${l}`));
      console.log(text.join("\n"));
    }
    return 0;
  } catch (e) {
    console.error(`luo inspect: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
