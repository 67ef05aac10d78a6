// PCI hardware without a kernel: topology and bus numbers, config-space semantics (command,
// status W1C, BAR sizing, capabilities, PM, FLR, MSI-X), and the DMA engine's registers, DMA
// through a port with bus mastering, machine-time progress and interrupts.
import { describe, expect, it } from "vitest";
import { Machine, isLiveUpdateError } from "@luo/core";
import { sameBytes } from "./helpers/tmp.js";
import {
  DMA_CMD,
  DMA_ENGINE_ID,
  DMA_IRQ,
  DMA_REG,
  DMA_STATUS,
  DmaEngine,
  PCI_BASE_ADDRESS_0,
  PCI_CAP_ID_EXP,
  PCI_CAP_ID_MSIX,
  PCI_CAP_ID_PM,
  PCI_COMMAND,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_EXP_DEVCTL,
  PCI_EXP_DEVCTL_BCR_FLR,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
  PCI_PM_CTRL,
  PCI_STATUS,
  PCI_STATUS_REC_MASTER_ABORT,
  PciBridge,
  PciSegment,
  dmaEngine,
  pciBridge,
  ramDmaPort,
  rootPort,
  type PciFunction,
} from "@luo/vfio-handler";

function topology(): PciSegment {
  return new PciSegment({
    devices: [
      rootPort({
        device: 1,
        children: [
          pciBridge({ device: 0, children: [dmaEngine({ device: 0 }), dmaEngine({ device: 1, vf: true })] }),
        ],
      }),
      rootPort({ device: 2, children: [dmaEngine({ device: 0, acsQuirk: true })] }),
    ],
  });
}

const bdf = (bus: number, dev: number, fn = 0): number => (bus << 8) | (dev << 3) | fn;

function enable(f: PciFunction, bits = PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER): void {
  f.configWrite(PCI_COMMAND, 2, f.configRead(PCI_COMMAND, 2) | bits);
}

describe("PCI topology", () => {
  it("numbers buses depth first and finds functions by BDF", () => {
    const seg = topology();
    const rp1 = seg.find(bdf(0, 1)) as PciBridge;
    expect(rp1.kind).toBe("root-port");
    expect([rp1.primaryBus, rp1.secondaryBus, rp1.subordinateBus]).toEqual([0, 1, 2]);
    const br = seg.find(bdf(1, 0)) as PciBridge;
    expect(br.kind).toBe("bridge");
    expect([br.primaryBus, br.secondaryBus, br.subordinateBus]).toEqual([1, 2, 2]);
    const e0 = seg.find(bdf(2, 0))!;
    expect(e0).toBeInstanceOf(DmaEngine);
    expect(e0.address).toBe("0000:02:00.0");
    expect(seg.find(bdf(2, 1))!.isVirtualFn).toBe(true);
    expect(seg.find(bdf(3, 0))!.needsAcsQuirk).toBe(true);
    expect(seg.upstream(e0).map((b) => b.address)).toEqual(["0000:01:00.0", "0000:00:01.0"]);
    expect(seg.functions()).toHaveLength(6);
  });

  it("routes by the bridges' registers: an unconfigured bridge hides what is below", () => {
    const seg = topology();
    (seg.find(bdf(0, 2)) as PciBridge).setBusNumbers(0, 0, 0);
    seg.reindex();
    expect(seg.find(bdf(3, 0))).toBeUndefined();
    expect(seg.find(bdf(2, 0))).toBeDefined();
  });

  it("refuses malformed descriptions with EINVAL", () => {
    const bad = [
      () => new PciSegment({ devices: [dmaEngine({ device: 0 }), dmaEngine({ device: 0 })] }),
      () => new PciSegment({ devices: [dmaEngine({ device: 32 })] }),
      () => new PciSegment({ devices: [dmaEngine({ device: 0, function: 8 })] }),
      () => new PciSegment({ domain: 0x10000, devices: [] }),
      () => new PciSegment({ devices: [{ device: 0 } as never] }),
      () => new PciSegment({ devices: [dmaEngine({ device: 0, bytesPerNs: 0 })] }),
    ];
    for (const f of bad) expect(() => f()).toThrow(expect.objectContaining({ code: "EINVAL" }));
  });
});

describe("config space", () => {
  it("has vendor/device, a capability list with PM, PCIe and MSI-X, and read-only bits", () => {
    const e = topology().find(bdf(2, 0))!;
    expect(e.configRead(0, 4)).toBe(0x11e91234);
    expect(e.configRead(PCI_STATUS, 2) & 0x10).toBe(0x10);
    const ids: number[] = [];
    for (let at = e.configRead(0x34, 1); at; at = e.configRead(at + 1, 1)) ids.push(e.configRead(at, 1));
    expect(ids).toEqual([PCI_CAP_ID_PM, PCI_CAP_ID_EXP, PCI_CAP_ID_MSIX]);
    e.configWrite(0, 4, 0);
    expect(e.configRead(0, 4)).toBe(0x11e91234);
    expect(() => e.configRead(1, 2)).toThrow(expect.objectContaining({ code: "EINVAL" }));
    expect(() => e.configRead(4096, 1)).toThrow(expect.objectContaining({ code: "EINVAL" }));
    expect(() => e.configWrite(0, 3 as never, 0)).toThrow(expect.objectContaining({ code: "EINVAL" }));
  });

  it("sizes BARs like hardware: all-ones reads back the size mask", () => {
    const e = topology().find(bdf(2, 0))!;
    e.configWrite(PCI_BASE_ADDRESS_0, 4, 0xffffffff);
    expect(e.configRead(PCI_BASE_ADDRESS_0, 4)).toBe(0xfffff000);
    expect(e.configRead(PCI_BASE_ADDRESS_0 + 4, 4)).toBe(0);
  });

  it("clears status error bits by writing 1", () => {
    const seg = topology();
    const e = seg.find(bdf(2, 0)) as DmaEngine;
    enable(e, PCI_COMMAND_MEMORY);
    e.barWrite(0, DMA_REG.count, 8, 16n);
    e.barWrite(0, DMA_REG.cmd, 4, BigInt(DMA_CMD.start));
    e.advance(100);
    expect(e.configRead(PCI_STATUS, 2) & PCI_STATUS_REC_MASTER_ABORT).toBeTruthy();
    e.configWrite(PCI_STATUS, 2, 0);
    expect(e.configRead(PCI_STATUS, 2) & PCI_STATUS_REC_MASTER_ABORT).toBeTruthy();
    e.configWrite(PCI_STATUS, 2, PCI_STATUS_REC_MASTER_ABORT);
    expect(e.configRead(PCI_STATUS, 2) & PCI_STATUS_REC_MASTER_ABORT).toBe(0);
  });

  it("D3hot stops BAR decode until D0; FLR restores power-on values", () => {
    const e = topology().find(bdf(2, 0)) as DmaEngine;
    enable(e);
    e.barWrite(0, DMA_REG.liveness, 4, 0x1234n);
    expect(e.barRead(0, DMA_REG.liveness, 4)).toBe(BigInt(~0x1234 >>> 0));
    e.configWrite(e.caps.pm + PCI_PM_CTRL, 2, 3);
    expect(e.powerState).toBe("D3hot");
    expect(e.barRead(0, DMA_REG.id, 4)).toBe(0xffffffffn);
    e.configWrite(e.caps.pm + PCI_PM_CTRL, 2, 0);
    expect(e.barRead(0, DMA_REG.id, 4)).toBe(BigInt(DMA_ENGINE_ID));
    e.configWrite(PCI_BASE_ADDRESS_0, 4, 0xfe000000);
    e.configWrite(e.caps.exp + PCI_EXP_DEVCTL, 2, PCI_EXP_DEVCTL_BCR_FLR);
    expect(e.counters.resets).toBe(1);
    expect(e.command).toBe(0);
    expect(e.configRead(PCI_BASE_ADDRESS_0, 4)).toBe(0);
    expect(e.configRead(e.caps.exp + PCI_EXP_DEVCTL, 2) & PCI_EXP_DEVCTL_BCR_FLR).toBe(0);
    enable(e);
    expect(e.barRead(0, DMA_REG.liveness, 4)).toBe(0xffffffffn);
  });

  it("ignores BAR accesses with memory decode off, refuses bad BARs and alignment", () => {
    const e = topology().find(bdf(2, 0))!;
    expect(e.barRead(0, DMA_REG.id, 4)).toBe(0xffffffffn);
    expect(() => e.barRead(1, 0, 4)).toThrow(expect.objectContaining({ code: "EINVAL" }));
    expect(() => e.barRead(0, 2, 4)).toThrow(expect.objectContaining({ code: "EINVAL" }));
  });
});

describe("DMA engine", () => {
  async function setup() {
    const machine = new Machine({ memory: "8 MiB" });
    const seg = topology();
    seg.dma = ramDmaPort(machine);
    const e = seg.find(bdf(2, 0)) as DmaEngine;
    const src = machine.allocPages(4);
    const dst = machine.allocPages(4);
    const data = new Uint8Array(65536).map((_, i) => (i * 7 + 3) & 0xff);
    machine.write(src, data);
    return { machine, seg, e, src, dst, data };
  }

  function program(e: DmaEngine, src: bigint, dst: bigint, count: number, descriptors = 1, irq = true): void {
    e.barWrite(0, DMA_REG.src, 8, src);
    e.barWrite(0, DMA_REG.dst, 4, dst & 0xffffffffn);
    e.barWrite(0, DMA_REG.dst + 4, 4, dst >> 32n);
    e.barWrite(0, DMA_REG.count, 8, BigInt(count));
    e.barWrite(0, DMA_REG.descriptors, 4, BigInt(descriptors));
    e.barWrite(0, DMA_REG.cmd, 4, BigInt(DMA_CMD.start | (irq ? DMA_CMD.irq : 0)));
  }

  it("copies only as machine time advances, then raises MSI-X vector 0", async () => {
    const { machine, seg, e, src, dst, data } = await setup();
    const got: Array<[number, number]> = [];
    seg.setMsiSink((f, v, _a, d) => (got.push([v, d]), f === e));
    for (const b of seg.upstream(e)) enable(b, PCI_COMMAND_MASTER);
    enable(e);
    e.configWrite(e.caps.msix + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE);
    e.programMsixEntry(0, 0xfee00000n, 0x41, false);
    program(e, src, dst, 65536);
    expect(e.barRead(0, DMA_REG.dst, 8)).toBe(dst);
    expect(e.barRead(0, DMA_REG.status, 4) & BigInt(DMA_STATUS.busy)).toBe(1n);
    e.advance(1000);
    expect(e.barRead(0, DMA_REG.progress, 8)).toBe(1000n);
    expect(sameBytes(machine.read(dst, 1000), data.subarray(0, 1000))).toBe(true);
    expect(machine.read(dst + 1000n, 1)[0]).toBe(0);
    e.advance(1e6);
    expect(e.busy).toBe(false);
    expect(sameBytes(machine.read(dst, 65536), data)).toBe(true);
    expect(e.barRead(0, DMA_REG.irqStatus, 4)).toBe(BigInt(DMA_IRQ.done));
    expect(got).toEqual([[0, 0x41]]);
    e.barWrite(0, DMA_REG.irqAck, 4, BigInt(DMA_IRQ.done));
    expect(e.barRead(0, DMA_REG.irqStatus, 4)).toBe(0n);
  });

  it("repeats the copy per descriptor and reports progress", async () => {
    const { e, seg, src, dst } = await setup();
    for (const b of seg.upstream(e)) enable(b, PCI_COMMAND_MASTER);
    enable(e);
    program(e, src, dst, 4096, 3, false);
    e.advance(4096 * 2 + 10);
    expect(e.barRead(0, DMA_REG.done, 4)).toBe(2n);
    expect(e.barRead(0, DMA_REG.progress, 8)).toBe(10n);
    e.advance(5000);
    expect(e.busy).toBe(false);
    expect(e.barRead(0, DMA_REG.done, 4)).toBe(3n);
    expect(e.bytesCopied).toBe(3 * 4096);
  });

  it("does not DMA without bus mastering on itself and every bridge above", async () => {
    const { machine, e, seg, src, dst } = await setup();
    enable(e);
    enable(seg.upstream(e)[0]!, PCI_COMMAND_MASTER); // the root port stays off
    program(e, src, dst, 4096);
    e.advance(10_000);
    expect(e.busy).toBe(false);
    expect(e.barRead(0, DMA_REG.status, 4)).toBe(BigInt(DMA_STATUS.error));
    expect(e.barRead(0, DMA_REG.faultIova, 8)).toBe(src);
    expect(machine.read(dst, 4096).every((b) => b === 0)).toBe(true);
    expect(e.counters.masterAborts).toBeGreaterThan(0);
  });

  it("stops with the error bit and the IOVA when the port faults", async () => {
    const { e, seg, src } = await setup();
    for (const b of seg.upstream(e)) enable(b, PCI_COMMAND_MASTER);
    enable(e);
    program(e, src, 0x10n, 4096); // below RAM
    e.advance(10_000);
    expect(e.barRead(0, DMA_REG.status, 4)).toBe(BigInt(DMA_STATUS.error));
    expect(e.barRead(0, DMA_REG.faultIova, 8)).toBe(0x10n);
    expect(e.barRead(0, DMA_REG.irqStatus, 4)).toBe(BigInt(DMA_IRQ.error));
  });

  it("keeps a masked vector pending and delivers it when unmasked; loses it with MSI-X off", async () => {
    const { e, seg } = await setup();
    const got: number[] = [];
    seg.setMsiSink((_f, v) => (got.push(v), true));
    for (const b of seg.upstream(e)) enable(b, PCI_COMMAND_MASTER);
    enable(e);
    e.barWrite(0, DMA_REG.irqRaise, 4, 1n);
    expect(e.counters.interruptsLost).toBe(1);
    e.configWrite(e.caps.msix + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE);
    e.barWrite(0, DMA_REG.irqRaise, 4, 1n);
    expect(e.msixPending(0)).toBe(true);
    expect(got).toEqual([]);
    e.barWrite(2, 12, 4, 0n); // unmask vector 0 through the table in BAR2
    expect(e.msixPending(0)).toBe(false);
    expect(got).toEqual([0]);
  });

  it("a reset drops the transfer in flight", async () => {
    const { machine, e, seg, src, dst } = await setup();
    for (const b of seg.upstream(e)) enable(b, PCI_COMMAND_MASTER);
    enable(e);
    program(e, src, dst, 65536);
    e.advance(100);
    e.resetFunction();
    expect(e.busy).toBe(false);
    enable(e);
    e.advance(1e6);
    expect(machine.read(dst + 100n, 100).every((b) => b === 0)).toBe(true);
  });

  it("saves and restores registers and the transfer in flight", async () => {
    const { machine, seg, e, src, dst, data } = await setup();
    for (const b of seg.upstream(e)) enable(b, PCI_COMMAND_MASTER);
    enable(e);
    program(e, src, dst, 65536);
    e.advance(5000);
    const state = JSON.parse(JSON.stringify(seg.saveState()));
    const seg2 = topology();
    seg2.dma = ramDmaPort(machine);
    seg2.loadState(state);
    const e2 = seg2.find(bdf(2, 0)) as DmaEngine;
    expect(e2.busy).toBe(true);
    expect(e2.barRead(0, DMA_REG.progress, 8)).toBe(5000n);
    e2.advance(1e6);
    expect(sameBytes(machine.read(dst, 65536), data)).toBe(true);
    expect(() => new PciSegment({ devices: [] }).loadState(state)).toThrow(
      expect.objectContaining({ code: "EINVAL" }),
    );
    const bad = { ...state, states: state.states.map((s: object) => ({ ...s, config: "00" })) };
    try {
      topology().loadState(bad);
      expect.unreachable();
    } catch (err) {
      expect(isLiveUpdateError(err, "EINVAL")).toBe(true);
    }
  });
});
