/**
 * The DMA engine: an emulated PCI endpoint that copies memory between two IOVAs, programmed
 * through BAR registers only. It is modelled on QEMU's `edu` teaching device (`hw/misc/edu.c`,
 * 1234:11e8): the same BAR0 layout for identification, the liveness check, interrupt status,
 * raise and acknowledge, and the DMA block (source, destination, count, command with "start" and
 * "raise interrupt when done", interrupt status bit 0x100 on completion). Two changes make it the
 * memcpy engine that the kernel's vfio selftests drive: the transfer is a copy from one IOVA to
 * another (edu copies between RAM and a 4 KiB on-device buffer), and a descriptor count repeats
 * the copy (`memcpy_start(src, dst, size, count)`), so a long transfer needs no huge buffer.
 * Interrupts are MSI-X (edu has MSI): vector 0 on completion, vector 1 on error. Device ID 0x11e9.
 *
 * BAR0 (4 KiB, registers; little-endian):
 * | offset | access | register |
 * |---|---|---|
 * | 0x00 | RO u32 | identification `0x010000ed` (version 1.0, "ed") |
 * | 0x04 | RW u32 | liveness check: reads the bitwise inverse of the last value written |
 * | 0x20 | RO u32 | status: bit 0 busy (a transfer is in flight), bit 1 error |
 * | 0x24 | RO u32 | interrupt status: 0x100 transfer done, 0x200 transfer failed, plus raised bits |
 * | 0x60 | WO u32 | interrupt raise: ORs the value into interrupt status and signals vector 0 |
 * | 0x64 | WO u32 | interrupt acknowledge: clears those bits of interrupt status |
 * | 0x80 | RW u64 | DMA source IOVA |
 * | 0x88 | RW u64 | DMA destination IOVA |
 * | 0x90 | RW u64 | DMA count: bytes per descriptor |
 * | 0x98 | RW u32 | DMA command: bit 0 start (reads 1 while busy), bit 2 interrupt when done |
 * | 0xa0 | RW u32 | descriptor count: how many times the copy runs (0 counts as 1) |
 * | 0xa4 | RO u32 | descriptors completed |
 * | 0xa8 | RO u64 | bytes of the current descriptor already copied |
 * | 0xb0 | RO u64 | IOVA of the last failed access (translation fault or master abort) |
 * BAR2 (4 KiB): the MSI-X table at 0, the PBA at 0x800.
 *
 * The engine works when machine time advances ({@link DmaEngine.advance}): `bytesPerNs` bytes
 * per nanosecond, in bursts of at most {@link DMA_BURST} bytes, each read from the source then
 * written to the destination through the segment's DMA port (the IOMMU) with the function's
 * requester ID. A transfer therefore keeps going while kernels change. Bus mastering off on the
 * path, a translation fault, or no DMA port stops the transfer with the error bit, the failing
 * IOVA in 0xb0 and (when asked) vector 1. Writing the start bit while busy, a count of 0, or
 * registers written while busy are ignored (the engine latches them at start). A reset (FLR)
 * drops the transfer in flight.
 *
 * @module
 */
import { LiveUpdateError } from "@luo/core";
import { PciEndpoint, type PciEndpointDesc } from "./endpoint.js";
import type { PciNodeDesc } from "./bridge.js";

/** Vendor ID of the engine (QEMU's, as `edu`). */
export const DMA_ENGINE_VENDOR = 0x1234;
/** Device ID of the engine (`edu` is 0x11e8). */
export const DMA_ENGINE_DEVICE = 0x11e9;
/** Value of the identification register. */
export const DMA_ENGINE_ID = 0x010000ed;
/** Largest burst the engine moves in one step. */
export const DMA_BURST = 64 * 1024;

/** BAR0 register offsets of the engine. */
export const DMA_REG = {
  /** Identification (RO). */
  id: 0x00,
  /** Liveness check (RW, reads inverted). */
  liveness: 0x04,
  /** Status (RO): {@link DMA_STATUS}. */
  status: 0x20,
  /** Interrupt status (RO). */
  irqStatus: 0x24,
  /** Interrupt raise (WO). */
  irqRaise: 0x60,
  /** Interrupt acknowledge (WO). */
  irqAck: 0x64,
  /** Source IOVA (u64). */
  src: 0x80,
  /** Destination IOVA (u64). */
  dst: 0x88,
  /** Bytes per descriptor (u64). */
  count: 0x90,
  /** Command (u32): {@link DMA_CMD}. */
  cmd: 0x98,
  /** Descriptor count (u32). */
  descriptors: 0xa0,
  /** Descriptors completed (RO u32). */
  done: 0xa4,
  /** Bytes of the current descriptor copied (RO u64). */
  progress: 0xa8,
  /** IOVA of the last failed access (RO u64). */
  faultIova: 0xb0,
} as const;

/** Bits of the status register. */
export const DMA_STATUS = {
  /** A transfer is in flight. */
  busy: 0x1,
  /** The last transfer failed. */
  error: 0x2,
} as const;

/** Bits of the command register. */
export const DMA_CMD = {
  /** Start the transfer (reads 1 while busy). */
  start: 0x1,
  /** Raise an interrupt when done (vector 0) or failed (vector 1). */
  irq: 0x4,
} as const;

/** Bits of the interrupt status register the engine sets. */
export const DMA_IRQ = {
  /** Transfer done. */
  done: 0x100,
  /** Transfer failed. */
  error: 0x200,
} as const;

/** MSI-X vectors of the engine. */
export const DMA_VECTOR = {
  /** Transfer done, and the raise register. */
  done: 0,
  /** Transfer failed. */
  error: 1,
} as const;

/** Description of a DMA engine. */
export interface DmaEngineDesc extends PciEndpointDesc {
  /** Copy speed in bytes per nanosecond of machine time (default 1, i.e. about 1 GB/s). */
  readonly bytesPerNs?: number;
}

/** A transfer latched at start. */
interface DmaJob {
  readonly src: bigint;
  readonly dst: bigint;
  readonly count: bigint;
  readonly descriptors: number;
  readonly irq: boolean;
}

/** The memcpy DMA engine (see the module comment for its registers). */
export class DmaEngine extends PciEndpoint {
  /** Copy speed in bytes per nanosecond. */
  readonly bytesPerNs: number;
  #liveness = 0;
  #status = 0;
  #irqStatus = 0;
  #src = 0n;
  #dst = 0n;
  #count = 0n;
  #cmd = 0;
  #descriptors = 0;
  #done = 0;
  #progress = 0n;
  #faultIova = 0n;
  /** Latched at start: the transfer in flight. */
  #job: DmaJob | undefined;
  /** The engine's FIFO, allocated at its first transfer (256 idle engines need no 16 MiB). */
  #fifo: Uint8Array | undefined;
  /** Fractional nanosecond budget carried between advances. */
  #credit = 0;
  /** Bytes the engine has copied since power-on (all transfers). */
  bytesCopied = 0;

  /** @param desc - slot, flags and speed; `EINVAL` for a speed that is not a positive number */
  constructor(desc: DmaEngineDesc) {
    super(desc, DMA_ENGINE_VENDOR, DMA_ENGINE_DEVICE, 0x00ff00);
    const rate = desc.bytesPerNs ?? 1;
    if (typeof rate !== "number" || !(rate > 0) || !Number.isFinite(rate)) {
      throw new LiveUpdateError(
        "EINVAL",
        `DMA engine speed ${String(rate)} bytes/ns is not a positive number`,
      );
    }
    this.bytesPerNs = rate;
    this.defineBar(0, 4096);
    this.defineBar(2, 4096);
    this.addPowerManagement();
    this.addExpress(0, true);
    this.addMsix({ vectors: 2, bar: 2, tableOffset: 0, pbaOffset: 0x800 });
    this.sealPowerOnState();
  }

  override get busy(): boolean {
    return this.#job !== undefined;
  }

  #reg32(o: number): number {
    switch (o) {
      case DMA_REG.id:
        return DMA_ENGINE_ID;
      case DMA_REG.liveness:
        return ~this.#liveness >>> 0;
      case DMA_REG.status:
        return this.#status | (this.#job ? DMA_STATUS.busy : 0);
      case DMA_REG.irqStatus:
        return this.#irqStatus;
      case DMA_REG.cmd:
        return this.#cmd | (this.#job ? DMA_CMD.start : 0);
      case DMA_REG.descriptors:
        return this.#descriptors;
      case DMA_REG.done:
        return this.#done;
      default:
        return 0;
    }
  }

  #reg64(o: number): bigint {
    switch (o) {
      case DMA_REG.src:
        return this.#src;
      case DMA_REG.dst:
        return this.#dst;
      case DMA_REG.count:
        return this.#count;
      case DMA_REG.progress:
        return this.#progress;
      default:
        return this.#faultIova;
    }
  }

  protected override mmioRead(bar: number, offset: number, width: number): bigint {
    if (bar !== 0) return 0n;
    const mask = (1n << BigInt(8 * width)) - 1n;
    const base = offset & ~7;
    if (isU64(base)) return (this.#reg64(base) >> BigInt(8 * (offset - base))) & mask;
    const lo = offset & ~3;
    const v = BigInt(this.#reg32(lo)) | (width === 8 ? BigInt(this.#reg32(lo + 4)) << 32n : 0n);
    return (v >> BigInt(8 * (offset - lo))) & mask;
  }

  protected override mmioWrite(bar: number, offset: number, width: number, value: bigint): void {
    if (bar !== 0 || width < 4) return;
    const base = offset & ~7;
    if (isU64(base)) {
      if (this.#job) return;
      const old = this.#reg64(base);
      let v: bigint;
      if (width === 8) v = value;
      else if (offset === base) v = (old & ~0xffffffffn) | (value & 0xffffffffn);
      else v = (old & 0xffffffffn) | ((value & 0xffffffffn) << 32n);
      this.#setU64(base, BigInt.asUintN(64, v));
      return;
    }
    const v = Number(value & 0xffffffffn);
    switch (offset) {
      case DMA_REG.liveness:
        this.#liveness = v;
        break;
      case DMA_REG.irqRaise:
        this.#irqStatus = (this.#irqStatus | v) >>> 0;
        this.raiseMsix(DMA_VECTOR.done);
        break;
      case DMA_REG.irqAck:
        this.#irqStatus = (this.#irqStatus & ~v) >>> 0;
        break;
      case DMA_REG.cmd:
        if (this.#job) return;
        this.#cmd = v & DMA_CMD.irq;
        if (v & DMA_CMD.start) this.#start();
        break;
      case DMA_REG.descriptors:
        if (!this.#job) this.#descriptors = v;
        break;
    }
  }

  #setU64(o: number, v: bigint): void {
    if (o === DMA_REG.src) this.#src = v;
    else if (o === DMA_REG.dst) this.#dst = v;
    else if (o === DMA_REG.count) this.#count = v;
  }

  #start(): void {
    if (this.#count === 0n) return;
    this.#status = 0;
    this.#done = 0;
    this.#progress = 0n;
    this.#job = {
      src: this.#src,
      dst: this.#dst,
      count: this.#count,
      descriptors: Math.max(1, this.#descriptors),
      irq: (this.#cmd & DMA_CMD.irq) !== 0,
    };
  }

  /** Copies for `ns` nanoseconds of machine time. */
  override advance(ns: number): void {
    const job = this.#job;
    if (!job || !(ns > 0)) return;
    this.#credit += ns * this.bytesPerNs;
    const port = this.segment?.dma;
    while (this.#job && this.#credit >= 1) {
      const left = job.count - this.#progress;
      const n = Number(left < BigInt(DMA_BURST) ? left : BigInt(DMA_BURST));
      const burst = Math.min(n, Math.floor(this.#credit));
      if (!this.dmaPathEnabled) {
        this.masterAbort();
        this.#fail(job.src + this.#progress, job);
        return;
      }
      const srcIova = job.src + this.#progress;
      const dstIova = job.dst + this.#progress;
      // The engine's FIFO: one buffer reused for every burst (no allocation per burst).
      const chunk = (this.#fifo ??= new Uint8Array(DMA_BURST)).subarray(0, burst);
      try {
        if (!port) throw new LiveUpdateError("EFAULT", `${this.address}: no DMA path`);
        port.read(this.domain, this.bdf, srcIova, chunk);
      } catch {
        this.#fail(srcIova, job);
        return;
      }
      try {
        port!.write(this.domain, this.bdf, dstIova, chunk);
      } catch {
        this.#fail(dstIova, job);
        return;
      }
      this.#credit -= burst;
      this.bytesCopied += burst;
      this.#progress += BigInt(burst);
      if (this.#progress === job.count) {
        this.#progress = 0n;
        this.#done++;
        if (this.#done === job.descriptors) this.#finish(job);
      }
    }
    if (!this.#job) this.#credit = 0;
  }

  #finish(job: DmaJob): void {
    this.#job = undefined;
    if (job.irq) {
      this.#irqStatus = (this.#irqStatus | DMA_IRQ.done) >>> 0;
      this.raiseMsix(DMA_VECTOR.done);
    }
  }

  #fail(iova: bigint, job: DmaJob): void {
    this.#job = undefined;
    this.#credit = 0;
    this.#status = DMA_STATUS.error;
    this.#faultIova = iova;
    if (job.irq) {
      this.#irqStatus = (this.#irqStatus | DMA_IRQ.error) >>> 0;
      this.raiseMsix(DMA_VECTOR.error);
    }
  }

  protected override onReset(): void {
    this.#liveness = 0;
    this.#status = 0;
    this.#irqStatus = 0;
    this.#src = 0n;
    this.#dst = 0n;
    this.#count = 0n;
    this.#cmd = 0;
    this.#descriptors = 0;
    this.#done = 0;
    this.#progress = 0n;
    this.#faultIova = 0n;
    this.#job = undefined;
    this.#credit = 0;
  }

  protected override saveDeviceState(): unknown {
    const j = this.#job;
    return {
      liveness: this.#liveness,
      status: this.#status,
      irqStatus: this.#irqStatus,
      src: this.#src.toString(),
      dst: this.#dst.toString(),
      count: this.#count.toString(),
      cmd: this.#cmd,
      descriptors: this.#descriptors,
      done: this.#done,
      progress: this.#progress.toString(),
      faultIova: this.#faultIova.toString(),
      credit: this.#credit,
      bytesCopied: this.bytesCopied,
      job: j && {
        src: j.src.toString(),
        dst: j.dst.toString(),
        count: j.count.toString(),
        descriptors: j.descriptors,
        irq: j.irq,
      },
    };
  }

  protected override loadDeviceState(state: unknown): void {
    try {
      const s = state as Record<string, unknown>;
      const job = s.job as Record<string, unknown> | undefined | null;
      this.#liveness = Number(s.liveness);
      this.#status = Number(s.status);
      this.#irqStatus = Number(s.irqStatus);
      this.#src = BigInt(s.src as string);
      this.#dst = BigInt(s.dst as string);
      this.#count = BigInt(s.count as string);
      this.#cmd = Number(s.cmd);
      this.#descriptors = Number(s.descriptors);
      this.#done = Number(s.done);
      this.#progress = BigInt(s.progress as string);
      this.#faultIova = BigInt(s.faultIova as string);
      this.#credit = Number(s.credit);
      this.bytesCopied = Number(s.bytesCopied);
      this.#job = job
        ? {
            src: BigInt(job.src as string),
            dst: BigInt(job.dst as string),
            count: BigInt(job.count as string),
            descriptors: Number(job.descriptors),
            irq: job.irq === true,
          }
        : undefined;
    } catch (e) {
      throw new LiveUpdateError("EINVAL", `saved state of DMA engine ${this.address} is malformed`, {
        cause: e,
      });
    }
  }
}

function isU64(base: number): boolean {
  return (
    base === DMA_REG.src ||
    base === DMA_REG.dst ||
    base === DMA_REG.count ||
    base === DMA_REG.progress ||
    base === DMA_REG.faultIova
  );
}

/** Describes a DMA engine endpoint for a topology. */
export function dmaEngine(desc: DmaEngineDesc): PciNodeDesc {
  return { ...desc, model: "dma-engine" };
}
