#!/usr/bin/env node
// `pnpm bench`: runs every benchmark script under bench/ (built output) and prints its figures.
import { existsSync, readdirSync } from "node:fs";
import { spawnSync } from "node:child_process";

const dir = new URL("../bench/", import.meta.url);
const scripts = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".mjs")) : [];
if (scripts.length === 0) {
  console.log("no benchmarks yet");
  process.exit(0);
}
for (const s of scripts) {
  const r = spawnSync(process.execPath, ["--expose-gc", new URL(s, dir).pathname, ...process.argv.slice(2)], {
    stdio: "inherit",
  });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
