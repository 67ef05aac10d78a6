#!/usr/bin/env node
/**
 * The `luo` command line.
 *
 *   luo inspect <machine-image> [--json] [--dtb <dir>] [--with <module>]...
 *   luo --help
 *
 * Loads a machine image written by `kernel.kexec({ saveTo })`, validates the pending handover as
 * the next kernel would, and prints it: live-update number, sessions with their files
 * (compatible, token, data), FLBs and the preserved page count. `--json` prints machine-readable
 * output (only the JSON document goes to stdout, so it can be piped to `jq`); `--dtb <dir>` also
 * writes every FDT blob (`kho-root.dtb`, `luo.dtb`) for `dtc`. `--with <module>` (repeatable)
 * loads an inspect extension (a path, or a package name resolvable from the current directory,
 * exporting `luoInspect`): its hardware loaders are used to load the image and its section is
 * printed after the core report (e.g. `--with @luo/iommufd-handler` decodes iommufd records and
 * the IOMMU FLB). Arguments are parsed with `node:util` `parseArgs`; a leading `--` (as
 * `pnpm run luo -- …` passes it) is ignored.
 * Exit status: 0 on success and for `--help`, 1 with the error (e.g. the kernel panic message)
 * on a corrupt or unreadable image or a bad extension, 2 on bad usage (unknown option, missing
 * image).
 *
 * @module
 */
import { mkdir, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { isAbsolute, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { Machine } from "../machine/index.js";
import {
  checkInspectExtension,
  formatHandoverReport,
  handoverReportJson,
  inspectHandover,
  type InspectExtension,
} from "../inspect/index.js";

const USAGE_LINES = `usage: luo inspect <machine-image> [--json] [--dtb <dir>] [--with <module>]...
       luo --help`;

const USAGE = `${USAGE_LINES}

Validates the live-update handover pending in a machine image (written by
kernel.kexec({ saveTo })) as the next kernel would, and prints it.

  --json            print the report as JSON (only JSON on stdout)
  --dtb <dir>       also write every FDT blob of the handover to <dir> (for dtc)
  --with <module>   load an inspect extension (path or package exporting luoInspect);
                    repeatable
  -h, --help        print this help and exit`;

/** Bad usage: exit status 2 with the message and the usage lines on stderr. */
function usageError(message: string): number {
  console.error(`luo: ${message}\n${USAGE_LINES}`);
  return 2;
}

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
  let parsed;
  try {
    parsed = parseArgs({
      args: argv[0] === "--" ? argv.slice(1) : argv,
      allowPositionals: true,
      strict: true,
      options: {
        json: { type: "boolean" },
        dtb: { type: "string" },
        help: { type: "boolean", short: "h" },
        with: { type: "string", multiple: true },
      },
    });
  } catch (e) {
    // parseArgs reports unknown options and missing option values as ERR_PARSE_ARGS_* errors.
    return usageError(e instanceof Error ? e.message : String(e));
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const [command, image, ...extra] = positionals;
  if (command === undefined) return usageError("missing command");
  if (command !== "inspect") return usageError(`unknown command ${JSON.stringify(command)}`);
  if (image === undefined) return usageError("inspect needs a machine image");
  if (extra.length > 0) return usageError(`unexpected argument ${JSON.stringify(extra[0])}`);
  try {
    const exts: InspectExtension[] = [];
    for (const w of values.with ?? []) exts.push(await loadExtension(w));
    const machine = await Machine.load(image, { hardware: exts.flatMap((e) => e.hardware ?? []) });
    const report = inspectHandover(machine);
    const sections = exts.map((e) => ({ name: e.name, ...e.inspect(machine, report) }));
    if (values.dtb !== undefined) {
      await mkdir(values.dtb, { recursive: true });
      for (const [name, blob] of Object.entries(report.blobs))
        await writeFile(join(values.dtb, `${name}.dtb`), blob);
    }
    if (values.json) {
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
