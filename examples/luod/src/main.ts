#!/usr/bin/env node
/**
 * `node examples/luod/dist/main.js [--vmms <n>]`: a host under luod through one live update.
 *
 * Runs `runLuodDemo` (see `demo.ts`) and prints as it goes. Exit status: 0 when every VMM got
 * its RAM back and luod finished its own session, 1 otherwise, 2 on bad usage.
 *
 * @module
 */
import "reflect-metadata";
import { parseArgs } from "node:util";
import { runLuodDemo } from "./demo.js";

const USAGE = "usage: luod-demo [--vmms <n>]   (1..16 VMMs, default 3)";

async function main(argv: readonly string[]): Promise<number> {
  let vmms = 3;
  try {
    const { values } = parseArgs({
      args: [...argv],
      options: { vmms: { type: "string" }, help: { type: "boolean", short: "h" } },
    });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    if (values.vmms !== undefined) vmms = Number(values.vmms);
  } catch (e) {
    console.error(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (!Number.isSafeInteger(vmms) || vmms < 1 || vmms > 16) {
    console.error(`bad --vmms\n${USAGE}`);
    return 2;
  }
  try {
    return await runLuodDemo(vmms, (line) => console.log(line));
  } catch (e) {
    console.error(`luod demo failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
