/**
 * The quickstart's command line: `[--] [--save-image <path> | --save-image=<path>] [--help]`.
 * A leading `--` is dropped, so `pnpm demo -- --save-image m.img` and `pnpm demo --save-image
 * m.img` mean the same.
 *
 * @module
 */

/** Usage line. */
export const USAGE = "usage: node examples/quickstart/dist/main.js [--save-image <path>]";

/** What the command line asks for: a run (with options), or an exit with a message. */
export type ParsedArgs =
  | { readonly run: true; readonly saveImage?: string }
  | { readonly run: false; readonly status: number; readonly message: string };

/** Parses the arguments after the script name. */
export function parseQuickstartArgs(argv: readonly string[]): ParsedArgs {
  const args = argv[0] === "--" ? argv.slice(1) : argv;
  let saveImage: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--help" || a === "-h") return { run: false, status: 0, message: USAGE };
    if (a === "--save-image" && i + 1 < args.length && !args[i + 1]!.startsWith("-")) saveImage = args[++i];
    else if (a.startsWith("--save-image=") && a.length > "--save-image=".length) {
      saveImage = a.slice("--save-image=".length);
    } else {
      return {
        run: false,
        status: 2,
        message: `quickstart: unexpected argument ${JSON.stringify(a)}\n${USAGE}`,
      };
    }
  }
  return saveImage === undefined ? { run: true } : { run: true, saveImage };
}
