// Types of scripts/readme-block.mjs (runs the root README's code blocks in the README tests).

/** The ```ts block after `marker` in the root README.md, and the marker's offset in it. */
export declare function readmeBlock(marker: string): Promise<{ markerAt: number; code: string }>;

/** What {@link runReadmeBlock} runs and where it writes the block. */
export interface ReadmeBlockRun {
  /** The comment that precedes the block, e.g. `"<!-- readme-example"`. */
  marker: string;
  /** The calling test's directory; the block is written to `<testDir>/generated/<file>`. */
  testDir: string;
  /** The generated file's name, e.g. `"readme-example.ts"`. */
  file: string;
  /** String replacements applied to the block before it is written (first occurrence each). */
  replace?: readonly (readonly [from: string, to: string])[];
}

/** Writes and imports the block; `logged` is the first argument of each console.log call. */
export declare function runReadmeBlock(run: ReadmeBlockRun): Promise<{ markerAt: number; logged: string[] }>;
