#!/usr/bin/env node
/**
 * The quickstart command: `node examples/quickstart/dist/main.js [--save-image <path>]`
 * (`pnpm quickstart [--] [--save-image <path>]` from the repository root builds first).
 *
 * Runs the live update of `quickstart.ts` and prints its report. `--save-image <path>` kexecs
 * through a machine image kept at `path`, which `luo inspect` can read. Exit status: 0 when every
 * check passed, 1 when a check failed or the run broke, 2 on bad usage.
 *
 * @module
 */
import "reflect-metadata";
import { parseQuickstartArgs } from "./args.js";
import { runQuickstart } from "./quickstart.js";
import { formatQuickstartReport } from "./report.js";

async function main(argv: readonly string[]): Promise<number> {
  const args = parseQuickstartArgs(argv);
  if (!args.run) {
    if (args.status === 0) console.log(args.message);
    else console.error(args.message);
    return args.status;
  }
  try {
    const result = await runQuickstart({ saveImage: args.saveImage });
    console.log(formatQuickstartReport(result));
    return result.checks.every((c) => c.ok) ? 0 : 1;
  } catch (e) {
    console.error(`quickstart failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
