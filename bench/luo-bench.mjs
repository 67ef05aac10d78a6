#!/usr/bin/env node
// `pnpm bench`: scaling of the orchestrator. For sessions (no files) and for files in
// one session it times create/preserve, kexec (freeze + serialize), boot + first open
// (deserialize) and retrieve + finish; prints per-item costs (the median of REPEATS runs, with
// the spread), the scaling slope of a log-log fit over all points with n >= 10k next to the
// worst t(10n)/t(n) ratio, compares serialization with a plain copy of the same handover bytes,
// and writes bench/results/latest.json (both scaling figures). Handlers here do no work of their
// own so the core is what is timed.
// Usage: node bench/luo-bench.mjs [--full] [--quick]   (--full adds the 1M-file run and writes
// bench/results/full-1m.json instead; --quick runs only n = 1000 and 10000 and writes
// bench/results/quick.json, a scratch file not meant to be committed, so it never replaces the
// recorded latest.json or full-1m.json)
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import { performance } from "node:perf_hooks";
import {
  KernelFile,
  Machine,
  defineFileHandler,
  definePlugin,
  PAGE_SIZE,
} from "../packages/core/dist/index.js";
import { logLogSlope, repeated, round, worstRatio } from "./lib/stats.mjs";
import { benchArgs } from "./lib/args.mjs";

const args = benchArgs("luo-bench");
const quick = args.quick === true;
const SESSION_SIZES = quick ? [1000, 10000] : [1000, 10000, 100000, 500000];
/** Runs per point: the median is reported, with min/max and (max - min) / median. */
const REPEATS = 3;
const FILE_SIZES = quick ? [1000, 10000] : args.full ? [1000, 10000, 100000, 1000000] : [1000, 10000, 100000];

class BenchFile extends KernelFile {
  description = "benchfile";
}
const handler = defineFileHandler({
  compatible: "bench-v1",
  canPreserve: (f) => f instanceof BenchFile,
  preserve: ({ token }) => ({ data: token }),
  unpreserve() {},
  retrieve: () => new BenchFile(),
  finish() {},
});
const plugin = definePlugin({ name: "bench", register: (ctx) => ctx.registerFileHandler(handler) });

const now = () => performance.now();
const gc = () => globalThis.gc?.();
const rssMiB = () => process.memoryUsage().rss / 2 ** 20;
let peakRss = 0;
const sampleRss = () => (peakRss = Math.max(peakRss, rssMiB()));

/** Runs one scenario; returns totals in ns and the handover bytes written. */
async function scenario(kind, n) {
  gc();
  const machine = new Machine({ memory: "1 GiB" });
  let k = await machine.boot({ plugins: [plugin] });
  const p = k.spawn("bench");
  const dev = await p.openLiveUpdate();
  const heapBefore = process.memoryUsage().heapUsed;
  const t0 = now();
  if (kind === "sessions") {
    for (let i = 0; i < n; i++) await dev.createSession(`session-${i}`);
  } else {
    const s = await dev.createSession("files");
    const files = [];
    for (let i = 0; i < n; i++) files.push(p.installFile(new BenchFile()));
    for (let i = 0; i < n; i++) await s.preserveFd(files[i], BigInt(i));
  }
  const t1 = now();
  gc();
  const heapAfter = process.memoryUsage().heapUsed;
  sampleRss();
  let tStart = 0;
  let tDone = 0;
  k.liveupdate.events.on("reboot:started", () => (tStart = now()));
  k.liveupdate.events.on("reboot:done", () => (tDone = now()));
  const stats0 = machine.stats();
  k = await k.kexec();
  const q = k.spawn("bench");
  const dev2 = await q.openLiveUpdate();
  const t2 = now();
  sampleRss();
  if (kind === "sessions") {
    for (let i = 0; i < n; i++) {
      const s = await dev2.retrieveSession(`session-${i}`);
      await s.finish();
      await s.close();
    }
  } else {
    const s = await dev2.retrieveSession("files");
    for (let i = 0; i < n; i++) q.close(await s.retrieveFd(BigInt(i)));
    await s.finish();
    await s.close();
  }
  const t3 = now();
  sampleRss();
  const handoverBytes = stats0.preservedPages * PAGE_SIZE;
  // A plain copy of the same number of bytes, in the same run.
  // Both buffers are touched first (no page faults in the timing) and the fastest of three
  // copies counts, so the ratio is against the best case of a plain memcpy.
  const src = Buffer.alloc(handoverBytes, 1);
  const dst = Buffer.alloc(handoverBytes, 2);
  let copyMs = Infinity;
  for (let r = 0; r < 3; r++) {
    const c0 = now();
    src.copy(dst);
    copyMs = Math.min(copyMs, now() - c0);
  }
  await k.shutdown();
  const ns = (ms) => Math.round(ms * 1e6);
  return {
    n,
    createNs: ns(t1 - t0),
    kexecNs: ns(tDone - tStart),
    bootNs: ns(t2 - tDone),
    finishNs: ns(t3 - t2),
    handoverBytes,
    copyNs: ns(copyMs),
    heapPerItemBytes: Math.round((heapAfter - heapBefore) / n),
  };
}

function table(title, rows) {
  console.log(`\n${title} (median of ${REPEATS} runs, ±spread = (max - min) / median)`);
  console.log(
    "       n        create/item         kexec/item          boot/item        finish/item   heap/item   handover",
  );
  for (const r of rows) {
    const per = (k) =>
      `${(r[k] / r.n).toFixed(0).padStart(7)} ns ±${(r.spread[k].spread * 100).toFixed(0).padStart(3)}%`;
    console.log(
      `${String(r.n).padStart(8)} ${per("createNs")}  ${per("kexecNs")}  ${per("bootNs")}  ${per("finishNs")} ${String(r.heapPerItemBytes).padStart(8)} B ${(r.handoverBytes / 2 ** 20).toFixed(1).padStart(7)} MiB`,
    );
  }
}

const sessions = [];
for (const n of SESSION_SIZES) sessions.push(await repeated(REPEATS, () => scenario("sessions", n)));
table("sessions (no files)", sessions);
const files = [];
for (const n of FILE_SIZES) files.push(await repeated(REPEATS, () => scenario("files", n)));
table("files in one session", files);

const PHASES = ["createNs", "kexecNs", "bootNs", "finishNs"];
const rowOut = (r) => ({
  n: r.n,
  ...Object.fromEntries(PHASES.map((k) => [k, r[k]])),
  spread: Object.fromEntries(PHASES.map((k) => [k, r.spread[k]])),
});
const slopes = {};
for (const [kind, rows] of [
  ["sessions", sessions],
  ["files", files],
]) {
  for (const k of PHASES) {
    const name = kind + k[0].toUpperCase() + k.slice(1, -2);
    slopes[name] = round(logLogSlope(rows, k));
  }
}

// Serialization vs a plain copy of the same bytes, at the largest run of each kind; the worst
// of the two is the reported figure.
const largest = [sessions[sessions.length - 1], files[files.length - 1]];
const ratios = largest.map((r) => ({ n: r.n, handoverBytes: r.handoverBytes, ratio: r.kexecNs / r.copyNs }));
const worst = ratios.reduce((a, b) => (b.ratio > a.ratio ? b : a));
const result = {
  machine: {
    node: process.version,
    cpus: os.cpus().length,
    cpu: os.cpus()[0]?.model,
    totalMemMiB: Math.round(os.totalmem() / 2 ** 20),
  },
  repeats: REPEATS,
  sessions: sessions.map(rowOut),
  files: files.map(rowOut),
  // Slope of log t against log n over all points with n >= 10k (all points in a --quick run):
  // 1.0 is linear, target <= 1.1. Noise in one point moves it a little instead of deciding it.
  scalingSlope: slopes,
  // The worst t(10n)/t(n) of consecutive points (the older figure, kept for comparison).
  scaling: {
    sessionsKexec10x: worstRatio(sessions, "kexecNs"),
    filesKexec10x: worstRatio(files, "kexecNs"),
    sessionsCreate10x: worstRatio(sessions, "createNs"),
    filesCreate10x: worstRatio(files, "createNs"),
    sessionsBoot10x: worstRatio(sessions, "bootNs"),
    filesBoot10x: worstRatio(files, "bootNs"),
    sessionsFinish10x: worstRatio(sessions, "finishNs"),
    filesFinish10x: worstRatio(files, "finishNs"),
  },
  serializeVsCopy: worst.ratio,
  serializeVsCopyRuns: ratios,
  memoryPerSessionBytes: sessions[sessions.length - 1].heapPerItemBytes,
  peakRssMiB: Math.round(peakRss),
};
console.log(
  "\nscaling slope, log-log fit over n >= 10k (target ≤ 1.1):",
  JSON.stringify(result.scalingSlope),
);
console.log("scaling t(10n)/t(n), worst (target ≤ 12):", JSON.stringify(result.scaling));
for (const r of ratios) {
  console.log(
    `serialize vs copy at n=${r.n} (${(r.handoverBytes / 2 ** 20).toFixed(1)} MiB): ${r.ratio.toFixed(2)}×`,
  );
}
console.log(`serialize vs copy, worst: ${result.serializeVsCopy.toFixed(2)}× (target ≤ 5)`);
console.log(
  `heap per session beyond the handover: ${result.memoryPerSessionBytes} B (target ≤ 1024); peak RSS ${result.peakRssMiB} MiB`,
);
mkdirSync(new URL("./results/", import.meta.url), { recursive: true });
// The 1M-file run keeps its own file so `pnpm bench` results stay comparable run to run; a quick
// run (smaller sizes, whatever else is given) never overwrites either.
const out = quick ? "quick.json" : args.full ? "full-1m.json" : "latest.json";
writeFileSync(new URL(`./results/${out}`, import.meta.url), JSON.stringify(result, null, 2) + "\n");
console.log(`wrote bench/results/${out}`);
