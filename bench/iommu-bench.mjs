#!/usr/bin/env node
// `pnpm bench`: device DMA through the emulated IOMMU and the cost of handing I/O page tables over.
// 1. DMA: a device bound to an iommufd reads (into its own buffer, dmaReadInto) and writes guest
//    RAM (a memfd mapped with IOAS_MAP_FILE, 4 KiB leaves; and a table of 2 MiB leaves) by IOVA
//    with the IOTLB warm, for 4 KiB, 64 KiB and 2 MiB transfers, against a plain copy of the same
//    bytes between the same kind of buffers in the same run (target: >= 0.5x at 64 KiB and up).
// 2. Preserve / restore of a paging domain per mapped GiB, 4 KiB and 2 MiB leaves: preserve =
//    what the iommufd handler does per HWPT (KHO-preserve every table page in place, append the
//    FLB record); restore = what the next kernel does (walk the handed-over table, take its pages
//    over, adopt it as a domain). Measured on 256 MiB and scaled to 1 GiB.
// Writes bench/results/iommu.json (iommu-quick.json with --quick: fewer repetitions).
import { mkdirSync, writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { F_ADD_SEALS, Kho, Machine, PAGE_SIZE } from "../packages/core/dist/index.js";
import {
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  memfd,
  memfdCreate,
} from "../packages/memfd-handler/dist/index.js";
import {
  IOMMU_READ,
  IOMMU_WRITE,
  IoPageTable,
  IommuCore,
  IommuFlbOutgoing,
  hwptAlloc,
  ioasAlloc,
  ioasMapFile,
  iommuFor,
  iommuUnit,
  iommufd,
  iommufdBind,
  iommufdOpen,
  pciRequester,
  tablePagesOf,
} from "../packages/iommufd-handler/dist/index.js";
import { benchArgs } from "./lib/args.mjs";

const quick = benchArgs("iommu-bench").quick === true;
const now = () => performance.now();
const RID = pciRequester(0, 1, 0, 0);
const RW = IOMMU_READ | IOMMU_WRITE;
const MiB = 1 << 20;

/** Median ns per op over `reps` batches of `n` calls of `fn`. */
function timeNs(fn, n, reps = quick ? 5 : 15) {
  for (let i = 0; i < n; i++) fn(i); // warm up (JIT, IOTLB)
  const samples = [];
  for (let r = 0; r < reps; r++) {
    const t0 = now();
    for (let i = 0; i < n; i++) fn(i);
    samples.push(((now() - t0) * 1e6) / n);
  }
  samples.sort((a, b) => a - b);
  return samples[samples.length >> 1];
}

async function dmaBench() {
  const machine = new Machine({ memory: "256 MiB", hardware: [iommuUnit({ name: "dmar0" })] });
  const k = await machine.boot({ plugins: [memfd(), iommufd()] });
  const p = k.spawn("vmm");
  const size = 16 * MiB;
  const ram = memfdCreate(p, "guest-ram", { allowSealing: true });
  p.fallocate(ram, 0, 0, size);
  p.fcntl(ram, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_GROW | F_SEAL_SHRINK);
  const fd = await iommufdOpen(p);
  const ioas = ioasAlloc(p, fd);
  const IOVA = 0x1_0000_0000;
  ioasMapFile(p, fd, ram, 0, { ioasId: ioas, length: size, iova: IOVA });
  const dev = iommufdBind(p, fd, { rid: RID, name: "bench-dev" });
  dev.attach(hwptAlloc(p, fd, dev.id, ioas));
  const port = iommuFor(machine, RID).port(RID);

  // A second domain with 2 MiB leaves over physically contiguous blocks, for another device.
  const RID2 = pciRequester(0, 2, 0, 0);
  const pt2 = IoPageTable.create(machine);
  for (let i = 0; i < size / (2 * MiB); i++)
    pt2.map(IOVA + i * 2 * MiB, Number(machine.allocPages(9)), 2 * MiB, RW);
  const unit = iommuFor(machine, RID2);
  unit.setContext(RID2, { domainId: 99, root: pt2.top });
  const port2 = unit.port(RID2);

  const src = machine.view(machine.allocPages(9), 2 * MiB); // a RAM buffer for the baseline
  const rows = [];
  for (const [leaf, pt] of [
    ["4 KiB", port],
    ["2 MiB", port2],
  ]) {
    for (const len of [4096, 64 * 1024, 2 * MiB]) {
      const n = Math.max(4, Math.floor(((quick ? 64 : 256) * MiB) / len / 16));
      const slots = size / len;
      const data = new Uint8Array(len).fill(7);
      const buf = new Uint8Array(len);
      const read = timeNs((i) => pt.dmaReadInto(IOVA + (i % slots) * len, buf), n);
      const write = timeNs((i) => pt.dmaWrite(IOVA + (i % slots) * len, data), n);
      const s = src.subarray(0, len);
      const memcpyRead = timeNs(() => buf.set(s), n);
      const dst = src.subarray(0, len);
      const memcpyWrite = timeNs(() => dst.set(data), n);
      rows.push({
        leaf,
        bytes: len,
        readGiBs: len / read,
        writeGiBs: len / write,
        memcpyReadGiBs: len / memcpyRead,
        memcpyWriteGiBs: len / memcpyWrite,
        readRatio: memcpyRead / read,
        writeRatio: memcpyWrite / write,
      });
    }
  }
  const stats = iommuFor(machine, RID).stats();
  await k.shutdown();
  return { rows, iotlb: stats };
}

/** Preserve / restore of one domain mapping `bytes` with `leaf`-sized leaves. */
function handoverBench(leafOrder, bytes) {
  const machine = new Machine({ memory: "512 MiB", hardware: [iommuUnit({ name: "dmar0" })] });
  const core = new IommuCore(machine);
  const domain = core.allocDomain(RID);
  const leaf = PAGE_SIZE << leafOrder;
  let iova = 0x1_0000_0000;
  for (let done = 0; done < bytes; done += 2 * MiB) {
    const block = machine.allocPages(9);
    // 4 KiB leaves: map the block page by page (what a memfd of 4 KiB folios gives).
    if (leafOrder === 0)
      for (let o = 0; o < 2 * MiB; o += leaf) core.map(domain, iova + o, block + BigInt(o), leaf, RW);
    else core.map(domain, iova, block, 2 * MiB, RW);
    iova += 2 * MiB;
  }
  const kho = new Kho(machine);
  const flb = new IommuFlbOutgoing(kho);
  const t0 = now();
  const ser = core.preserveDomain(domain, flb, kho);
  const preserveMs = now() - t0;
  const pages = domain.pt.stats().tablePages;
  // Restore as the next kernel: walk the table from its top page, then adopt it (no copy).
  const t1 = now();
  const found = tablePagesOf(machine, domain.pt.top, 3, () => true);
  const adopted = IoPageTable.adopt(machine, domain.pt.top);
  const restoreMs = now() - t1;
  if (found.length !== pages || adopted.stats().tablePages !== pages)
    throw new Error("restore walked a different table");
  void ser;
  const perGiB = (1 << 30) / bytes;
  return {
    leaf: leafOrder === 0 ? "4 KiB" : "2 MiB",
    mappedMiB: bytes / MiB,
    tablePages: pages,
    preserveMsPerGiB: preserveMs * perGiB,
    restoreMsPerGiB: restoreMs * perGiB,
  };
}

const dma = await dmaBench();
console.log("DMA through the IOMMU (IOTLB warm) vs a plain copy of the same bytes:");
for (const r of dma.rows) {
  console.log(
    `  ${r.leaf} leaves  ${String(r.bytes / 1024).padStart(5)} KiB  read ${r.readGiBs.toFixed(2)} GB/s (${r.readRatio.toFixed(2)}x memcpy ${r.memcpyReadGiBs.toFixed(2)})  write ${r.writeGiBs.toFixed(2)} GB/s (${r.writeRatio.toFixed(2)}x memcpy ${r.memcpyWriteGiBs.toFixed(2)})`,
  );
}
const handover = [];
for (const order of [0, 9]) {
  const r = handoverBench(order, (quick ? 64 : 256) * MiB);
  handover.push(r);
  console.log(
    `domain handover, ${r.leaf} leaves: ${r.tablePages} table pages for ${r.mappedMiB} MiB; preserve ${r.preserveMsPerGiB.toFixed(2)} ms/GiB, restore ${r.restoreMsPerGiB.toFixed(2)} ms/GiB`,
  );
}
mkdirSync(new URL("./results/", import.meta.url), { recursive: true });
const out = quick ? "iommu-quick.json" : "iommu.json";
writeFileSync(
  new URL(`./results/${out}`, import.meta.url),
  JSON.stringify(
    { date: new Date().toISOString(), node: process.version, dma: dma.rows, iotlb: dma.iotlb, handover },
    null,
    2,
  ) + "\n",
);
console.log(`wrote bench/results/${out}`);
