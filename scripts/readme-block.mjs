// Runs a code block of the root README.md as a test: the fenced ```ts block that follows a marker
// comment (`<!-- name ... -->`) is written, exactly as it stands (after optional string
// replacements), to `<test dir>/generated/<file>`, imported there (so relative imports and the
// workspace packages resolve as they would for a user), and what it printed with console.log is
// returned. Shared by the README tests of every package so the README cannot drift from the API.
// Unhappy paths: a missing marker or an unterminated block throws before anything is written;
// an error thrown by the block rejects after console.log is restored.
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const README = join(dirname(fileURLToPath(import.meta.url)), "..", "README.md");
const FENCE = "```ts\n";

/** The ts block after `marker` in the root README, and where the marker stands. */
export async function readmeBlock(marker) {
  const readme = await readFile(README, "utf8");
  const markerAt = readme.indexOf(marker);
  if (markerAt < 0) throw new Error(`README.md has no marker ${JSON.stringify(marker)}`);
  const open = readme.indexOf(FENCE, markerAt);
  const close = open < 0 ? -1 : readme.indexOf("```", open + FENCE.length);
  if (close < 0) throw new Error(`README.md has no \`\`\`ts block after ${JSON.stringify(marker)}`);
  return { markerAt, code: readme.slice(open + FENCE.length, close) };
}

/**
 * Writes the block after `marker` to `join(testDir, "generated", file)` (applying `replace`, a
 * list of [from, to] string pairs, first occurrence each), imports it and returns the first
 * argument of every console.log call it made, as strings, with the marker's offset.
 */
export async function runReadmeBlock({ marker, testDir, file, replace = [] }) {
  const { markerAt, code: raw } = await readmeBlock(marker);
  const code = replace.reduce((c, [from, to]) => c.replace(from, to), raw);
  const path = join(testDir, "generated", file);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, `// generated from README.md by readme.test.ts\n${code}\nexport {};\n`);
  const logged = [];
  const log = console.log;
  console.log = (...args) => void logged.push(String(args[0]));
  try {
    await import(/* @vite-ignore */ path);
  } finally {
    console.log = log;
  }
  return { markerAt, logged };
}
