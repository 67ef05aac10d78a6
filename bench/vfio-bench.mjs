#!/usr/bin/env node
// `pnpm bench`: the vfio package's figures. (1) DMA throughput of the memcpy engine through the
// IOMMU (IOTLB warm) against a plain memcpy of the same bytes in the same run, for transfers of
// 64 KiB, 1 MiB and 16 MiB; target ≥ 0.5× from 64 KiB up. (2) The cost of preserving 1, 16 and
// 256 devices that sit behind bridges (16 devices per bridge under their own root port), per
// device (median of every single preserve over REPS+2 runs), with the ratio t(256)/(16·t(16)) for linearity. Writes bench/results/vfio.json.
// Usage: node bench/vfio-bench.mjs [--quick]   (--quick: fewer repetitions, writes vfio-quick.json)
import { mkdirSync, writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { F_ADD_SEALS, Machine } from "../packages/core/dist/index.js";
import {
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  memfd,
  memfdCreate,
} from "../packages/memfd-handler/dist/index.js";
import {
  hwptMarkPreserve,
  ioasAlloc,
  ioasMapFile,
  iommuUnit,
  iommufd,
  iommufdOpen,
} from "../packages/iommufd-handler/dist/index.js";
import {
  DmaEngineDriver,
  dmaEngine,
  pciBridge,
  pciSegment,
  rootPort,
  vfio,
  vfioDevice,
  vfioOpen,
} from "../packages/vfio-handler/dist/index.js";
import { median } from "./lib/stats.mjs";
import { benchArgs } from "./lib/args.mjs";

const quick = benchArgs("vfio-bench").quick === true;
const REPS = quick ? 2 : 5;
const now = () => performance.now();
const IOVA = 0x4000_0000_0000n;

/** A machine with an IOMMU and `n` engines, 16 per bridge, each bridge under its own root port. */
function machineWith(n, memory) {
  const ports = [];
  for (let p = 0; p * 16 < n; p++) {
    const engines = [];
    for (let d = 0; d < Math.min(16, n - p * 16); d++)
      engines.push(dmaEngine({ device: d, bytesPerNs: 1e9 }));
    ports.push(rootPort({ device: p + 1, children: [pciBridge({ device: 0, children: engines })] }));
  }
  return new Machine({ memory, hardware: [iommuUnit({ name: "dmar0" }), pciSegment({ devices: ports })] });
}

/** Boots, maps a sealed memfd of `size` bytes at IOVA, binds and attaches `n` devices to one marked HWPT. */
async function setup(n, size, memory) {
  const machine = machineWith(n, memory);
  const kernel = await machine.boot({ plugins: [memfd(), iommufd(), vfio()] });
  const proc = kernel.spawn("bench");
  const ram = memfdCreate(proc, "dma", { allowSealing: true });
  proc.ftruncate(ram, size);
  proc.fcntl(ram, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_GROW | F_SEAL_SHRINK);
  const ifd = await iommufdOpen(proc);
  const ioas = ioasAlloc(proc, ifd);
  ioasMapFile(proc, ifd, ram, 0, { ioasId: ioas, length: size, iova: IOVA });
  const devices = [];
  let hwpt;
  for (let i = 0; i < n; i++) {
    const fd = await vfioOpen(proc, i);
    const dev = vfioDevice(proc, fd);
    await dev.bindIommufd(ifd);
    hwpt = await dev.attach(ioas);
    devices.push({ fd, dev });
  }
  hwptMarkPreserve(proc, ifd, hwpt, 1n);
  return { machine, kernel, proc, ram, ifd, devices };
}

async function dmaThroughput() {
  const size = 64 << 20;
  const { machine, proc, ram, devices } = await setup(1, size, "256 MiB");
  proc.pwrite(ram, new Uint8Array(size / 2).fill(0x5a), 0);
  const drv = new DmaEngineDriver(devices[0].dev);
  drv.enable();
  const rows = [];
  for (const bytes of [64 << 10, 1 << 20, 16 << 20]) {
    const count = Math.max(1, Math.floor((256 << 20) / bytes));
    const total = bytes * count;
    const run = () => {
      drv.memcpyStart(IOVA, IOVA + BigInt(size / 2), bytes, count);
      const t0 = now();
      machine.advanceTime(BigInt(total)); // bytesPerNs is huge: the engine is never the limit
      const t = now() - t0;
      if (drv.busy() || drv.failed()) throw new Error("DMA did not complete");
      return t;
    };
    run(); // IOTLB warm
    globalThis.gc?.();
    const dma = median(Array.from({ length: REPS }, run));
    const a = new Uint8Array(bytes).fill(1);
    const b = new Uint8Array(bytes);
    const copy = () => {
      const t0 = now();
      for (let i = 0; i < count; i++) b.set(a);
      return now() - t0;
    };
    copy();
    const mem = median(Array.from({ length: REPS }, copy));
    const gbs = (ms) => total / (ms / 1000) / 1e9;
    rows.push({ bytes, count, dmaGBs: gbs(dma), memcpyGBs: gbs(mem), ratio: mem / dma });
    console.log(
      `DMA ${String(bytes >> 10).padStart(6)} KiB × ${String(count).padStart(5)}: ${gbs(dma).toFixed(2)} GB/s through the IOMMU, memcpy ${gbs(mem).toFixed(2)} GB/s, ratio ${(mem / dma).toFixed(2)}×`,
    );
  }
  return rows;
}

/**
 * Preserves `n` bound, attached devices (their memfd and iommufd preserved first, untimed) and
 * returns the per-device times in ms.
 */
async function timePreserve(n) {
  const { proc, ram, ifd, devices } = await setup(n, 1 << 20, "128 MiB");
  const s = await (await proc.openLiveUpdate()).createSession("vm");
  await s.preserveFd(ram, 0n);
  await s.preserveFd(ifd, 1n);
  globalThis.gc?.(); // earlier machines are garbage: collect them outside the timed part
  const times = [];
  for (let i = 0; i < n; i++) {
    const t0 = now();
    await s.preserveFd(devices[i].fd, BigInt(2 + i));
    times.push(now() - t0);
  }
  return times;
}

async function preserveCost() {
  const rows = [];
  await timePreserve(16); // warm-up (JIT, first FLB preserve), not reported
  for (const n of [1, 16, 256]) {
    const times = [];
    for (let r = 0; r < REPS + 2; r++) times.push(...(await timePreserve(n)));
    // The median per-device time over all runs: on a shared machine single preserves vary by
    // 20x (other processes, GC), and a total would be decided by a few outliers.
    const us = median(times) * 1000;
    rows.push({ devices: n, usPerDevice: us, ms: (us * n) / 1000 });
    console.log(
      `preserve ${String(n).padStart(3)} devices behind bridges: ${((us * n) / 1000).toFixed(2)} ms, median ${us.toFixed(1)} µs/device`,
    );
  }
  const by = Object.fromEntries(rows.map((r) => [r.devices, r.ms]));
  const linearity = by[256] / (16 * by[16]);
  console.log(`linearity t(256)/(16·t(16)) = ${linearity.toFixed(2)} (1.0 = linear; per-device medians)`);
  return { rows, linearity };
}

console.log("vfio: DMA engine through the IOMMU vs memcpy; preserving devices behind bridges");
const result = {
  date: new Date().toISOString(),
  node: process.version,
  dma: await dmaThroughput(),
  preserve: await preserveCost(),
};
mkdirSync(new URL("./results/", import.meta.url), { recursive: true });
const out = quick ? "vfio-quick.json" : "vfio.json";
writeFileSync(new URL(`./results/${out}`, import.meta.url), JSON.stringify(result, null, 2) + "\n");
console.log(`wrote bench/results/${out}`);
