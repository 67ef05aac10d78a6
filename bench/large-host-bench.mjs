#!/usr/bin/env node
// `pnpm bench`: production-sized hosts. Three series, each point the median of REPEATS runs
// with the spread:
// 1. host memory: a 1 TiB machine with 64 GiB of guest memfds in 2 MiB folios, 1 GiB of it
//    written, live-updated in process (preserve fills the untouched 63 GiB with zeroed folios,
//    as Linux does, which need no host memory here); peak RSS growth against the 2 GiB target,
//    each run in a fresh Node process.
// 2. memfd preserve / blackout / finish per GiB for 1, 8 and 64 GiB memfds with 2 MiB folios
//    against 4 KiB folios at 1 GiB (8 GiB with --full: 2 M folios, minutes per run; 64 GiB would
//    be 16 M folio records, beyond V8's Map size limit in the folio table — the cost 2 MiB
//    folios remove).
// 3. blackout (freeze + kexec + boot + retrieve) of 64 GiB in 2 MiB folios against 1 GiB:
//    the ratio, target <= 2.
// Every point is the median of 5 runs (series 1: 3), after one discarded warm-up round.
// Writes bench/results/large-host.json (--quick: 1 and 8 GiB only and one run of series 1,
// written to quick-large-host.json, a scratch file like quick.json).
import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { Machine, PAGE_SIZE } from "../packages/core/dist/index.js";
import { memfd, memfdCreate, memfdFile } from "../packages/memfd-handler/dist/index.js";
import { repeated, round } from "./lib/stats.mjs";
import { benchArgs } from "./lib/args.mjs";

const args = benchArgs("large-host-bench", {
  // internal: one run of series 1 in a fresh process, printed as JSON
  "host-memory-child": { type: "boolean" },
});
const quick = args.quick === true;
const REPEATS = 3;
/** Runs per point of series 2 and 3 (a 64 GiB round takes about a second). */
const ROUND_REPEATS = 5;
const GiB = 2 ** 30;
const MiB = 2 ** 20;
const HUGE = 2 * MiB;
const now = () => performance.now();
const gc = () => globalThis.gc?.();
const rss = () => process.memoryUsage().rss;

async function bootHost(memory) {
  const machine = new Machine({ memory });
  const kernel = await machine.boot({ plugins: [memfd({ shmemHuge: "always" })] });
  const proc = kernel.spawn("vmm");
  return { machine, kernel, proc, dev: await proc.openLiveUpdate() };
}

async function nextKernel(kernel) {
  const k = await kernel.kexec();
  const proc = k.spawn("vmm");
  return { kernel: k, proc, dev: await proc.openLiveUpdate() };
}

// ---------------------------------------------------------------- 1. host memory

async function hostMemory() {
  gc();
  const base = rss();
  let peak = 0;
  const sample = () => (peak = Math.max(peak, rss() - base));
  const t0 = now();
  const h = await bootHost("1 TiB");
  const s = await h.dev.createSession("guests");
  const GUESTS = 8;
  const size = 8 * GiB; // 64 GiB in all
  const chunk = new Uint8Array(HUGE).fill(0x5a);
  const fds = [];
  for (let g = 0; g < GUESTS; g++) {
    const fd = memfdCreate(h.proc, `guest-${g}`);
    h.proc.ftruncate(fd, size);
    // 128 MiB written per guest, one 2 MiB folio every 128 MiB: 1 GiB touched in all.
    for (let off = 0; off < size; off += 128 * MiB) h.proc.pwrite(fd, chunk, off);
    fds.push(fd);
  }
  sample();
  for (const [g, fd] of fds.entries()) await s.preserveFd(fd, BigInt(g));
  sample();
  const k2 = await nextKernel(h.kernel);
  sample();
  const s2 = await k2.dev.retrieveSession("guests");
  let folios = 0;
  for (let g = 0; g < GUESTS; g++)
    folios += memfdFile(k2.proc, await s2.retrieveFd(BigInt(g))).memfd.folioCount;
  await s2.finish();
  sample();
  const seconds = (now() - t0) / 1000;
  await k2.kernel.shutdown();
  return { peakRssGrowthMiB: Math.round(peak / MiB), folios, seconds: round(seconds, 2) };
}

// ---------------------------------------------------------------- 2. and 3. preserve and blackout

/** One memfd of `bytes` (fallocated: every folio allocated, none written) through a live update. */
async function memfdRound(bytes, huge) {
  gc();
  const h = await bootHost(`${Math.max(4, (2 * bytes) / GiB)} GiB`);
  const s = await h.dev.createSession("vm");
  const fd = memfdCreate(h.proc, "guest", { huge: huge ? "always" : "never" });
  h.proc.fallocate(fd, 0, 0, bytes);
  const t0 = now();
  await s.preserveFd(fd, 1n);
  const t1 = now();
  const k2 = await nextKernel(h.kernel);
  const s2 = await k2.dev.retrieveSession("vm");
  const fd2 = await s2.retrieveFd(1n);
  const t2 = now();
  const folios = memfdFile(k2.proc, fd2).memfd.folioCount;
  await s2.finish();
  const t3 = now();
  await k2.kernel.shutdown();
  return { preserveMs: t1 - t0, blackoutMs: t2 - t1, finishMs: t3 - t2, folios };
}

if (args["host-memory-child"]) {
  console.log(JSON.stringify(await hostMemory()));
  process.exit(0);
}

/** Series 1 in a fresh Node process: RSS growth is only meaningful from a clean start. */
function hostMemoryInChild() {
  const r = spawnSync(
    process.execPath,
    ["--expose-gc", new URL(import.meta.url).pathname, "--host-memory-child"],
    { encoding: "utf8" },
  );
  if (r.status !== 0) throw new Error(`host memory run failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

const result = { repeats: REPEATS, pageSize: PAGE_SIZE };

console.log(`host memory: 1 TiB machine, 64 GiB of memfds (2 MiB folios), 1 GiB written, live update`);
const hm = await repeated(quick ? 1 : REPEATS, hostMemoryInChild);
console.log(
  `  peak RSS growth ${hm.peakRssGrowthMiB} MiB (±${(hm.spread.peakRssGrowthMiB.spread * 100).toFixed(0)}%, target ≤ 2048), ${hm.folios} folios handed over, ${hm.seconds} s per run`,
);
result.hostMemory = { machine: "1 TiB", guests: "64 GiB", touched: "1 GiB", ...hm };

const SIZES = quick ? [1, 8] : [1, 8, 64];
// One discarded round first, so that the first point measured (1 GiB) does not carry the JIT's
// compile time of the whole path — every later point runs warm, and the blackout ratio compares
// like with like.
await memfdRound(GiB, true);
await memfdRound(GiB, false);
const rows = [];
console.log(
  `\nmemfd live update per GiB (median of ${ROUND_REPEATS}; blackout = freeze + kexec + boot + retrieve)`,
);
console.log("  size  folio      folios   preserve/GiB    blackout/GiB      finish/GiB");
for (const gib of SIZES) {
  for (const huge of [true, false]) {
    if (!huge && gib > (args.full ? 8 : 1)) continue; // see the module comment
    const r = await repeated(ROUND_REPEATS, () => memfdRound(gib * GiB, huge));
    const per = (k) =>
      `${(r[k] / gib).toFixed(1).padStart(8)} ms ±${(r.spread[k].spread * 100).toFixed(0).padStart(3)}%`;
    console.log(
      `${String(gib).padStart(4)} GiB ${huge ? "2 MiB" : "4 KiB"} ${String(r.folios).padStart(10)} ${per("preserveMs")} ${per("blackoutMs")} ${per("finishMs")}`,
    );
    rows.push({
      gib,
      folio: huge ? "2MiB" : "4KiB",
      folios: r.folios,
      preserveMsPerGiB: round(r.preserveMs / gib),
      blackoutMsPerGiB: round(r.blackoutMs / gib),
      finishMsPerGiB: round(r.finishMs / gib),
      blackoutMs: round(r.blackoutMs),
      spread: r.spread,
    });
  }
}
result.memfd = rows;
const hugeRows = rows.filter((r) => r.folio === "2MiB");
const big = hugeRows[hugeRows.length - 1];
const small = hugeRows[0];
result.blackoutRatio = {
  large: `${big.gib} GiB`,
  small: `${small.gib} GiB`,
  ratio: round(big.blackoutMs / small.blackoutMs),
};
console.log(
  `\nblackout ${big.gib} GiB vs ${small.gib} GiB (2 MiB folios): ${big.blackoutMs.toFixed(1)} ms vs ${small.blackoutMs.toFixed(1)} ms = ${result.blackoutRatio.ratio}× (target ≤ 2)`,
);
const ram4k = rows.find((r) => r.folio === "4KiB" && r.gib === small.gib);
if (ram4k) {
  console.log(
    `preserve at ${small.gib} GiB: 2 MiB folios ${small.preserveMsPerGiB} ms/GiB vs 4 KiB ${ram4k.preserveMsPerGiB} ms/GiB`,
  );
}

mkdirSync(new URL("./results/", import.meta.url), { recursive: true });
const out = quick ? "quick-large-host.json" : "large-host.json";
writeFileSync(new URL(`./results/${out}`, import.meta.url), JSON.stringify(result, null, 2) + "\n");
console.log(`wrote bench/results/${out}`);
