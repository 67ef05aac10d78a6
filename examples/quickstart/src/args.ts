/**
 * The quickstart's command line: `[--] [--save-image <path> | --save-image=<path>] [-h | --help]`,
 * parsed with `node:util` `parseArgs`. A leading `--` is dropped, so `pnpm quickstart -- --save-image
 * m.img` and `pnpm quickstart --save-image m.img` mean the same.
 *
 * @module
 */
import { parseArgs } from "node:util";

/** Usage line. */
export const USAGE = "usage: node examples/quickstart/dist/main.js [--save-image <path>] [--help]";

/** What the command line asks for: a run (with options), or an exit with a message. */
export type ParsedArgs =
  | { readonly run: true; readonly saveImage?: string }
  | { readonly run: false; readonly status: number; readonly message: string };

/** Parses the arguments after the script name: `--help` exits 0, bad usage exits 2. */
export function parseQuickstartArgs(argv: readonly string[]): ParsedArgs {
  const bad = (message: string): ParsedArgs => ({
    run: false,
    status: 2,
    message: `quickstart: ${message}\n${USAGE}`,
  });
  let values: { "save-image"?: string; help?: boolean };
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv[0] === "--" ? argv.slice(1) : [...argv],
      allowPositionals: true,
      strict: true,
      options: { "save-image": { type: "string" }, help: { type: "boolean", short: "h" } },
    }));
  } catch (e) {
    // Unknown options and a missing --save-image value (ERR_PARSE_ARGS_*).
    return bad(e instanceof Error ? e.message : String(e));
  }
  if (values.help) return { run: false, status: 0, message: USAGE };
  if (positionals.length > 0) return bad(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const saveImage = values["save-image"];
  if (saveImage === "") return bad("--save-image needs a path");
  return saveImage === undefined ? { run: true } : { run: true, saveImage };
}
