// Command-line options shared by the benchmarks (a helper module, not a benchmark): every bench
// takes --quick, --full and --help; a few add options of their own. Usage errors exit 2 with the
// usage line, --help prints it and exits 0.
import { parseArgs } from "node:util";

/**
 * Parses `process.argv` for the bench `name` (`bench/<name>.mjs`): the common boolean options
 * `quick`, `full`, `help`, plus `extra` (parseArgs option specs). Returns the values.
 */
export function benchArgs(name, extra = {}) {
  const usage = `usage: node bench/${name}.mjs [--quick | --full] [--help]`;
  let values;
  try {
    ({ values } = parseArgs({
      args: process.argv.slice(2).filter((a, i) => i > 0 || a !== "--"),
      strict: true,
      options: {
        quick: { type: "boolean" },
        full: { type: "boolean" },
        help: { type: "boolean", short: "h" },
        ...extra,
      },
    }));
  } catch (e) {
    console.error(`${name}: ${e.message}\n${usage}`);
    process.exit(2);
  }
  if (values.help) {
    console.log(usage);
    process.exit(0);
  }
  return values;
}
