#!/usr/bin/env node
// `pnpm bench` (VMM fleet): guest blackout (vCPUs paused → running again) and device DMA blackout
// (interrupts off → the device driven again) of the examples/vmm fleet through one in-process live
// update, for 1, 4 and 16 guests of 8 MiB, and for one guest of 256 MiB and up (every page of guest
// RAM is populated: the IOAS pins it). Prints each run's phases and the ratios against the
// smallest run of its series in the same process, and writes bench/results/vmm-latest.json.
// Usage: node bench/vmm-bench.mjs [--quick | --full]   (--quick: 1 and 4 guests, 256 MiB only, writes
// vmm-quick.json; --full adds a 1 GiB guest and writes vmm-full.json)
import { writeFileSync } from "node:fs";
import os from "node:os";
import { runFleet } from "../examples/vmm/dist/fleet.js";
import { benchArgs } from "./lib/args.mjs";

const args = benchArgs("vmm-bench");
const GUESTS = args.quick ? [1, 4] : [1, 4, 16];
const SIZES = args.quick ? [256] : args.full ? [256, 512, 1024] : [256, 512];

async function measure(options) {
  const r = await runFleet({ stepsBefore: 12, stepsAfter: 6, ...options });
  if (!r.ok) throw new Error(`a fleet check failed: ${JSON.stringify(r.guests.flatMap((g) => g.problems))}`);
  const phase = (name) => Math.max(...r.guests.map((g) => g.phases.find((p) => p.name === name)?.ms ?? 0));
  return {
    guests: r.guests.length,
    ramMiB: r.guests.reduce((n, g) => n + g.ramMiB, 0),
    pages: r.totals.pagesHandedOver,
    pagesCopied: r.totals.pagesCopied,
    blackoutMs: r.totals.maxBlackoutMs,
    dmaBlackoutMs: r.totals.maxDmaBlackoutMs,
    phasesMs: Object.fromEntries(
      ["pause", "preserve", "freeze", "kexec", "boot", "retrieve", "restore", "resume"].map((p) => [
        p,
        phase(p),
      ]),
    ),
  };
}

const f = (v) => (v >= 100 ? v.toFixed(0) : v.toFixed(1)).padStart(7);
function print(title, rows, key) {
  console.log(`\n${title}`);
  console.log(
    `${key.padEnd(8)} ${"pages".padStart(7)} ${"blackout".padStart(9)} ${"DMA".padStart(7)} ${"ratio".padStart(6)}   pause preserve  freeze   kexec    boot retrieve restore  resume (ms)`,
  );
  const base = rows[0];
  for (const r of rows) {
    const k = key === "guests" ? String(r.guests) : `${r.ramMiB} MiB`;
    const p = r.phasesMs;
    console.log(
      `${k.padEnd(8)} ${String(r.pages).padStart(7)} ${f(r.blackoutMs)}ms ${f(r.dmaBlackoutMs)} ${(r.blackoutMs / base.blackoutMs).toFixed(2).padStart(6)} ` +
        [p.pause, p.preserve, p.freeze, p.kexec, p.boot, p.retrieve, p.restore, p.resume].map(f).join(" "),
    );
  }
}

const byGuests = [];
for (const n of GUESTS) byGuests.push(await measure({ guests: n, sizesMiB: [8] }));
print("guests of 8 MiB (ratio: blackout / blackout of 1 guest)", byGuests, "guests");
const bySize = [];
for (const s of SIZES) bySize.push(await measure({ guests: 1, sizesMiB: [s] }));
print("one guest (ratio: blackout / blackout of the smallest)", bySize, "RAM");

const perGuest = byGuests.map((r) => r.blackoutMs / r.guests);
const largest = bySize[bySize.length - 1];
console.log(
  `\nblackout per guest: ${perGuest.map((v) => v.toFixed(1)).join(", ")} ms for ${GUESTS.join(", ")} guests` +
    ` (at most linear growth: per-guest cost ${perGuest[perGuest.length - 1] <= perGuest[0] * 1.5 ? "does not grow" : "grows"})`,
);
console.log(
  `largest / smallest guest blackout: ${(largest.blackoutMs / bySize[0].blackoutMs).toFixed(2)} for ` +
    `${largest.ramMiB} / ${bySize[0].ramMiB} MiB; guest RAM is in 4 KiB folios here (the memfd handler ` +
    `preserves and restores each folio), so the handover work grows with the pages of guest RAM`,
);

const result = {
  date: new Date().toISOString(),
  node: process.version,
  cpus: os.cpus().length,
  byGuests,
  bySize,
};
const out = args.quick ? "vmm-quick.json" : args.full ? "vmm-full.json" : "vmm-latest.json";
writeFileSync(new URL(`./results/${out}`, import.meta.url), JSON.stringify(result, null, 2) + "\n");
