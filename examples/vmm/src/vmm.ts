/**
 * One VMM process and its guest, as a VMM would drive the kernel's live-update interfaces.
 *
 * Power-on ({@link Vmm.launch}): guest RAM is a memfd sized for the guest and sealed against
 * growing, shrinking and further sealing; it is mapped with `IOAS_MAP_FILE` at IOVA 0 of an IOAS,
 * so guest-physical addresses are IOVAs. The guest's DMA engine (a vfio cdev) is bound to the
 * iommufd and attached to a HWPT marked for preservation; its MSI-X vector 0 signals an eventfd.
 * The vCPUs step the hash-chain workload (`guest.ts`), the guest driver runs DMA jobs
 * (`dma-driver.ts`). The VMM connects to luod under its name and gets a session for its guest.
 *
 * Update, old kernel ({@link Vmm.prepare}, run by luod's prepare barrier): pause the vCPUs and
 * write their registers, the pending interrupt count, the pause times and a digest of guest RAM's
 * physical frames into a small memfd; turn MSI-X off (vfio's freeze refuses a device with
 * interrupts on); preserve guest RAM (token 1), the vCPU memfd (2), the iommufd (3) and the
 * device (4) — in that order, since the device's IOMMU state needs its iommufd preserved first —
 * then answer ready. If the update is abandoned ({@link Vmm.resumeAfterAbort}), interrupts go
 * back on and the vCPUs continue on the old kernel; the files stay preserved for the next try.
 *
 * Update, new kernel ({@link Vmm.reconnect}, a new process): reconnect to luod under the same
 * name, retrieve the session and its four files, bind the device to the retrieved iommufd,
 * restore the preserved HWPT (restore behaviour), map guest RAM into a fresh IOAS, attach the
 * device to a new HWPT marked for the next update, re-enable MSI-X, FINISH the session, let the
 * driver find out what happened to the job in flight, and resume the vCPUs. Every value it needs
 * from before the update comes from preserved memory, never from the old process.
 *
 * Unhappy paths: a VMM that dies during the barrier loses its guest (its fds close, so its
 * session is unpreserved) while luod updates the others; a device left with interrupts on fails
 * its freeze, the kernel unfreezes everything and luod abandons the update for everyone.
 *
 * @module
 */
import { createHash } from "node:crypto";
import {
  EFD_NONBLOCK,
  F_ADD_SEALS,
  LiveUpdateError,
  eventfd,
  isLiveUpdateError,
  type Kernel,
  type Process,
  type SessionHandle,
} from "@luo/core";
import {
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  memfdCreate,
  memfdFile,
  memfdPages,
} from "@luo/memfd-handler";
import {
  hwptAlloc,
  hwptMarkPreserve,
  hwptRestore,
  ioasAlloc,
  ioasMapFile,
  iommufdDestroy,
  iommufdLiveUpdateInfo,
  iommufdOpen,
} from "@luo/iommufd-handler";
import { DmaEngineDriver, vfioDevice, vfioOpen, type VfioDevice } from "@luo/vfio-handler";
import { connectLuod, type LuodClient } from "@luo/example-luod";
import { DMA_LAYOUT_END, GuestDmaDriver, type DmaDriverStats, type InFlightOutcome } from "./dma-driver.js";
import {
  VCPU_STATE_SIZE,
  decodeVcpuState,
  encodeVcpuState,
  initialVcpuState,
  runVcpu,
  verifyGuest,
  type GuestRam,
  type VcpuState,
  type WorkloadRegion,
} from "./guest.js";

/** Session tokens of a guest's files, in preservation order. */
export const TOKEN = { ram: 1n, vcpu: 2n, iommufd: 3n, device: 4n } as const;
/** Token the VMM marks its HWPT with (per iommufd). */
export const HWPT_TOKEN = 1n;
/** Guest-physical start of the vCPU workloads (one region per vCPU). */
export const WORKLOAD_START = 4 << 20;
/** Bytes of one vCPU's workload region. */
export const WORKLOAD_SIZE = 256 * 1024;
/** Smallest guest RAM: the DMA buffers, then the workloads of two vCPUs. */
export const MIN_GUEST_RAM = 8 << 20;

const STATE_MAGIC = 0x5643_5055; // "UPCV"
/** Layout of the vCPU memfd: magic u32, vCPUs u32, pendingIrqs u32, pad, pausedAt f64, irqsOffAt f64, frames f64, digest[32], states. */
const S = {
  magic: 0,
  vcpus: 4,
  pendingIrqs: 8,
  pausedAt: 16,
  irqsOffAt: 24,
  frames: 32,
  digest: 40,
  states: 72,
};
const STATE_BYTES = 4096;

/** Wall-clock milliseconds on the clock the core's events use (one clock for every process). */
export function now(): number {
  return performance.timeOrigin + performance.now();
}

/** Faults to inject (tests and `--fault`). */
export interface VmmFaults {
  /** The VMM process dies when luod asks it to prepare. */
  readonly crashInPrepare?: boolean;
  /** The VMM forgets to turn the device's interrupts off: its device's freeze fails. */
  readonly leaveIrqsOn?: boolean;
}

/** What a VMM runs. */
export interface VmmConfig {
  /** luod client name, e.g. `"vmm-0"` (the process name too). */
  readonly name: string;
  /** Guest name = luod session name, e.g. `"vm-0"`; also the workload seed. */
  readonly guest: string;
  /** Guest RAM bytes (a multiple of 4 KiB, at least {@link MIN_GUEST_RAM}). */
  readonly ramBytes: number;
  /** vfio cdev number of the guest's DMA engine. */
  readonly device: number;
  /** vCPUs (default 2). */
  readonly vcpus?: number;
  /** Workload ticks per vCPU per step (default 8). */
  readonly ticksPerStep?: number;
  /** luod socket path (default luod's). */
  readonly socketPath?: string;
  /** Faults to inject. */
  readonly faults?: VmmFaults;
}

/** Wall-clock times (ms) of one VMM's part in an update. */
export interface VmmTimes {
  /** luod asked to prepare. */
  pauseStart?: number;
  /** vCPUs paused, state saved, interrupts off. */
  paused?: number;
  /** Files preserved (ready answered right after). */
  preserved?: number;
  /** The new VMM process started. */
  reconnect?: number;
  /** Session and files retrieved. */
  retrieved?: number;
  /** HWPT restored, device bound and attached, interrupts on, session finished. */
  restored?: number;
  /** vCPUs running again, the device driven again. */
  resumed?: number;
  /** vCPUs paused (from preserved memory). */
  pausedAt?: number;
  /** Interrupts turned off (from preserved memory). */
  irqsOffAt?: number;
}

/** What crossed the update in the vCPU memfd, as the new VMM read it. */
export interface CrossedState {
  /** vCPU registers at the pause. */
  readonly vcpus: readonly VcpuState[];
  /** Interrupts that arrived after the driver's last look. */
  readonly pendingIrqs: number;
  /** Frames of guest RAM at the pause. */
  readonly frames: number;
  /** SHA-256 of guest RAM's (page index, physical address) list at the pause, hex. */
  readonly digest: string;
}

/** A VMM's own verdict on its guest after an update. */
export interface VmmChecks {
  /** Every vCPU's hash chain continues exactly (replay from the seed matches RAM and registers). */
  readonly hashChain: boolean;
  /** Every DMA completion checked, none failed, each counted once (interrupt or poll). */
  readonly dma: boolean;
  /** The job in flight at the update was handled as the vfio mode says. */
  readonly inFlight: boolean;
  /** Guest RAM is the same physical frames as before (no page copied). */
  readonly zeroCopy: boolean;
  /** The session was finished and luod said done. */
  readonly finished: boolean;
}

function sha(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Physical frames of a memfd and the digest of its (index, address) list. */
export function frameDigest(proc: Process, fd: number): { frames: number; digest: string } {
  const inode = memfdFile(proc, fd).memfd;
  const folios = inode.folios();
  const buf = new Uint8Array(16 * folios.length);
  const dv = new DataView(buf.buffer);
  folios.forEach((f, i) => {
    dv.setBigUint64(16 * i, BigInt(f.index), true);
    dv.setBigUint64(16 * i + 8, f.phys, true);
  });
  return { frames: folios.length << inode.folioOrder, digest: sha(buf) };
}

function check(cond: unknown, what: string): void {
  if (!cond) throw new LiveUpdateError("EINVAL", what);
}

/** One VMM process and its guest (see the module comment). */
export class Vmm {
  /** Update timings. */
  readonly times: VmmTimes = {};
  /** True while the vCPUs are paused. */
  paused = false;
  /** True once the guest's files are in its session. */
  private preservedFiles = false;
  /**
   * What happened to the DMA job in flight at the last update; `device-held` with iommufd
   * phase 1 (the device stays with the preserved domain, nothing can bind it).
   */
  inFlight: InFlightOutcome | "device-held" = "none";
  /** False with iommufd phase 1 after an update: the guest runs without its device. */
  deviceUsable = true;
  /** Phase 1: what binding the retrieved device to a new iommufd answered (`EPERM` expected). */
  deviceBindError: string | undefined;
  /** Phase 1: FINISH as the kernel would answer it now. */
  finishStatus: Awaited<ReturnType<SessionHandle["finishStatus"]>> | undefined;
  /** What the new VMM read from preserved memory. */
  crossed: CrossedState | undefined;
  /** Ticks per vCPU at the last pause. */
  ticksAtPause = 0;
  /** Jobs completed at the last pause. */
  completedAtPause = 0;
  /** Frames digest check after an update (undefined before one). */
  zeroCopy: boolean | undefined;
  /** Session finished after an update. */
  finished = false;
  /** This guest's outgoing session (set once luod gave it). */
  session!: SessionHandle;
  /** Abandoned updates this VMM resumed from. */
  resumedAfterAbort = 0;
  /**
   * Guest RAM's frames, `[page index, physical address hex]`: an observer's record for counting
   * copied pages (the VMM's own check uses the digest it preserved). Pinned RAM cannot move.
   */
  frames(): Array<[number, string]> {
    return [...memfdPages(memfdFile(this.proc, this.ram))].map(([i, p]) => [i, p.toString(16)]);
  }
  /**
   * Guest RAM's frame count and digest, taken once at power-on: the IOAS pins guest RAM, so its
   * frames cannot change until the update (and the pause does not pay for the walk).
   */
  private ramFrames = { frames: 0, digest: "" };
  /** Interrupts taken at the pause, given to the guest when it runs again on this kernel. */
  private pendingIrqs = 0;
  private readonly ramIo: GuestRam;
  private readonly regions: WorkloadRegion[];

  private constructor(
    readonly config: VmmConfig,
    readonly proc: Process,
    /** Guest RAM memfd. */
    readonly ram: number,
    /** The vCPU state memfd. */
    readonly vcpuFd: number,
    /** The iommufd. */
    readonly iommufd: number,
    /** The vfio device fd. */
    readonly deviceFd: number,
    /** The MSI-X eventfd. */
    readonly irqFd: number,
    /** vCPU registers. */
    private vcpus: VcpuState[],
    /** luod connection. */
    readonly client: LuodClient,
    readonly device: VfioDevice,
    readonly driver: GuestDmaDriver,
  ) {
    this.ramIo = {
      read: (offset, length) => proc.pread(ram, length, offset),
      write: (offset, bytes) => void proc.pwrite(ram, bytes, offset),
    };
    this.regions = vcpus.map((_, i) => ({ start: WORKLOAD_START + i * WORKLOAD_SIZE, size: WORKLOAD_SIZE }));
  }

  /** Guest RAM as the guest sees it. */
  get guestRam(): GuestRam {
    return this.ramIo;
  }

  /** Compares guest RAM's frames now with the digest preserved before the update. */
  private checkFrames(): void {
    const now = frameDigest(this.proc, this.ram);
    this.ramFrames = now;
    this.zeroCopy = now.frames === this.crossed?.frames && now.digest === this.crossed.digest;
  }

  /** The vCPU registers now. */
  get vcpuStates(): readonly VcpuState[] {
    return this.vcpus;
  }

  /** Powers the guest on in a new process of `kernel` (see the module comment). */
  static async launch(kernel: Kernel, config: VmmConfig): Promise<Vmm> {
    const nVcpus = config.vcpus ?? 2;
    check(
      Number.isSafeInteger(config.ramBytes) &&
        config.ramBytes % 4096 === 0 &&
        config.ramBytes >= Math.max(MIN_GUEST_RAM, WORKLOAD_START + nVcpus * WORKLOAD_SIZE, DMA_LAYOUT_END),
      `${config.guest}: guest RAM of ${config.ramBytes} bytes is not a multiple of 4 KiB of at least ${MIN_GUEST_RAM}`,
    );
    const proc = kernel.spawn(config.name);
    try {
      const seals = F_SEAL_SEAL | F_SEAL_GROW | F_SEAL_SHRINK;
      const ram = memfdCreate(proc, `${config.guest}-ram`, { allowSealing: true });
      proc.ftruncate(ram, config.ramBytes);
      proc.fcntl(ram, F_ADD_SEALS, seals);
      const vcpuFd = memfdCreate(proc, `${config.guest}-vcpus`, { allowSealing: true });
      proc.ftruncate(vcpuFd, STATE_BYTES);
      proc.fcntl(vcpuFd, F_ADD_SEALS, seals);
      const iommufd = await iommufdOpen(proc);
      const ioas = ioasAlloc(proc, iommufd);
      ioasMapFile(proc, iommufd, ram, 0, { ioasId: ioas, length: config.ramBytes, iova: 0 });
      const deviceFd = await vfioOpen(proc, config.device);
      const device = vfioDevice(proc, deviceFd);
      const devId = await device.bindIommufd(iommufd);
      const hwpt = hwptAlloc(proc, iommufd, devId, ioas);
      await device.attach(hwpt);
      hwptMarkPreserve(proc, iommufd, hwpt, HWPT_TOKEN);
      const engine = new DmaEngineDriver(device);
      engine.enable();
      const irqFd = eventfd(proc, 0, EFD_NONBLOCK);
      await device.setMsix([irqFd]);
      const vcpus = Array.from({ length: nVcpus }, (_, i) => initialVcpuState(`${config.guest}/vcpu${i}`));
      const self: { vmm?: Vmm } = {};
      const client = await connectLuod(proc, {
        name: config.name,
        path: config.socketPath,
        onPrepare: () => self.vmm!.prepare(),
        onResume: () => void self.vmm?.resumeAfterAbort(),
      });
      const session = await client.createSession(config.guest);
      const driver = new GuestDmaDriver(
        { read: (o, l) => proc.pread(ram, l, o), write: (o, b) => void proc.pwrite(ram, b, o) },
        config.guest,
        engine,
      );
      const vmm = new Vmm(config, proc, ram, vcpuFd, iommufd, deviceFd, irqFd, vcpus, client, device, driver);
      vmm.session = session;
      vmm.ramFrames = frameDigest(proc, ram);
      self.vmm = vmm;
      driver.init();
      driver.start();
      return vmm;
    } catch (e) {
      proc.exit();
      throw e;
    }
  }

  /** A new IOAS with guest RAM at IOVA 0, a HWPT on it marked for preservation, the device attached. */
  private static async attachFreshIoas(
    proc: Process,
    iommufd: number,
    ram: number,
    device: VfioDevice,
    devId: number,
    ramBytes: number,
  ): Promise<void> {
    const ioas = ioasAlloc(proc, iommufd);
    ioasMapFile(proc, iommufd, ram, 0, { ioasId: ioas, length: ramBytes, iova: 0 });
    const hwpt = hwptAlloc(proc, iommufd, devId, ioas);
    await device.attach(hwpt);
    hwptMarkPreserve(proc, iommufd, hwpt, HWPT_TOKEN);
  }

  /** Interrupts signalled since the last look (the eventfd counter, reset by the read). */
  private takeIrqs(): number {
    try {
      const b = this.proc.read(this.irqFd, 8);
      return Number(new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true));
    } catch (e) {
      if (isLiveUpdateError(e, "EAGAIN")) return 0;
      throw e;
    }
  }

  /** One step of the guest: every vCPU runs its ticks, then the DMA driver looks at the device. */
  step(): void {
    if (this.paused || this.proc.hasExited) return;
    const ticks = this.config.ticksPerStep ?? 8;
    this.vcpus = this.vcpus.map((s, i) => runVcpu(this.ramIo, this.regions[i]!, s, ticks));
    const irqs = this.takeIrqs() + this.pendingIrqs;
    this.pendingIrqs = 0;
    if (this.deviceUsable) this.driver.poll(irqs);
  }

  /** The old kernel's part of an update (luod's prepare): see the module comment. */
  async prepare(): Promise<void> {
    const t = this.times;
    t.pauseStart = now();
    if (this.config.faults?.crashInPrepare) {
      this.proc.exit();
      throw new LiveUpdateError("ESRCH", `${this.config.name} crashed while preparing`);
    }
    this.paused = true;
    t.pausedAt = now();
    const pending = this.takeIrqs();
    this.pendingIrqs = pending;
    if (!this.config.faults?.leaveIrqsOn) {
      await this.device.disableMsix();
      t.irqsOffAt = now();
    }
    this.ticksAtPause = this.vcpus[0]!.tick;
    this.completedAtPause = this.driver.stats().completed;
    const state = new Uint8Array(S.states + VCPU_STATE_SIZE * this.vcpus.length);
    const dv = new DataView(state.buffer);
    const frames = this.ramFrames;
    dv.setUint32(S.magic, STATE_MAGIC, true);
    dv.setUint32(S.vcpus, this.vcpus.length, true);
    dv.setUint32(S.pendingIrqs, pending, true);
    dv.setFloat64(S.pausedAt, t.pausedAt, true);
    dv.setFloat64(S.irqsOffAt, t.irqsOffAt ?? t.pausedAt, true);
    dv.setFloat64(S.frames, frames.frames, true);
    state.set(Buffer.from(frames.digest, "hex"), S.digest);
    this.vcpus.forEach((s, i) => state.set(encodeVcpuState(s), S.states + VCPU_STATE_SIZE * i));
    this.proc.pwrite(this.vcpuFd, state, 0);
    t.paused = now();
    if (!this.preservedFiles) {
      await this.session.preserveFd(this.ram, TOKEN.ram);
      await this.session.preserveFd(this.vcpuFd, TOKEN.vcpu);
      await this.session.preserveFd(this.iommufd, TOKEN.iommufd);
      await this.session.preserveFd(this.deviceFd, TOKEN.device);
      this.preservedFiles = true;
    }
    t.preserved = now();
  }

  /**
   * luod abandoned the update: interrupts back on, vCPUs continue on this kernel. A device that
   * froze before the failure stays frozen (vfio has no unfreeze) and answers `EIO`.
   */
  async resumeAfterAbort(): Promise<void> {
    if (this.proc.hasExited || !this.paused) return;
    await this.device.setMsix([this.irqFd]);
    this.paused = false;
    this.resumedAfterAbort++;
  }

  /** Reads the vCPU memfd written by {@link Vmm.prepare}. */
  private static readCrossed(
    proc: Process,
    fd: number,
    guest: string,
  ): CrossedState & { pausedAt: number; irqsOffAt: number } {
    const head = proc.pread(fd, S.states, 0);
    const dv = new DataView(head.buffer, head.byteOffset, head.length);
    if (dv.getUint32(S.magic, true) !== STATE_MAGIC)
      throw new LiveUpdateError("EINVAL", `${guest}: the vCPU memfd has no saved state`);
    const n = dv.getUint32(S.vcpus, true);
    const states = proc.pread(fd, VCPU_STATE_SIZE * n, S.states);
    return {
      vcpus: Array.from({ length: n }, (_, i) =>
        decodeVcpuState(states.subarray(VCPU_STATE_SIZE * i, VCPU_STATE_SIZE * (i + 1))),
      ),
      pendingIrqs: dv.getUint32(S.pendingIrqs, true),
      frames: dv.getFloat64(S.frames, true),
      digest: Buffer.from(head.subarray(S.digest, S.digest + 32)).toString("hex"),
      pausedAt: dv.getFloat64(S.pausedAt, true),
      irqsOffAt: dv.getFloat64(S.irqsOffAt, true),
    };
  }

  /** The new kernel's part: a new VMM process takes the guest back (see the module comment). */
  static async reconnect(kernel: Kernel, config: VmmConfig): Promise<Vmm> {
    const reconnectAt = now();
    const proc = kernel.spawn(config.name);
    try {
      let vmm: Vmm | undefined;
      const client = await connectLuod(proc, {
        name: config.name,
        path: config.socketPath,
        onPrepare: () => vmm!.prepare(),
        onResume: () => void vmm?.resumeAfterAbort(),
      });
      const incoming = await client.retrieveSession(config.guest);
      const ram = await incoming.retrieveFd(TOKEN.ram);
      const vcpuFd = await incoming.retrieveFd(TOKEN.vcpu);
      let iommufd: number | undefined;
      try {
        iommufd = await incoming.retrieveFd(TOKEN.iommufd);
      } catch (e) {
        // iommufd phase 1: the preserved domain keeps translating, nothing can bind the device.
        if (!isLiveUpdateError(e, "EOPNOTSUPP")) throw e;
      }
      const deviceFd = await incoming.retrieveFd(TOKEN.device);
      const retrievedAt = now();
      const crossed = Vmm.readCrossed(proc, vcpuFd, config.guest);
      if (iommufd === undefined) {
        const device = vfioDevice(proc, deviceFd);
        const irqFd = eventfd(proc, 0, EFD_NONBLOCK);
        const driver = new GuestDmaDriver(
          { read: (o, l) => proc.pread(ram, l, o), write: (o, b) => void proc.pwrite(ram, b, o) },
          config.guest,
          new DmaEngineDriver(device),
        );
        vmm = new Vmm(
          config,
          proc,
          ram,
          vcpuFd,
          -1,
          deviceFd,
          irqFd,
          [...crossed.vcpus],
          client,
          device,
          driver,
        );
        vmm.deviceUsable = false;
        vmm.crossed = crossed;
        vmm.ticksAtPause = crossed.vcpus[0]?.tick ?? 0;
        vmm.completedAtPause = driver.stats().completed;
        vmm.checkFrames();
        vmm.inFlight = "device-held";
        const at = now();
        Object.assign(vmm.times, {
          reconnect: reconnectAt,
          retrieved: retrievedAt,
          restored: at,
          resumed: at,
          pausedAt: crossed.pausedAt,
          irqsOffAt: crossed.irqsOffAt,
        });
        vmm.paused = false;
        vmm.deviceBindError = await device.bindIommufd(await iommufdOpen(proc)).then(
          () => "ok",
          (e: unknown) => (isLiveUpdateError(e) ? e.code : String(e)),
        );
        vmm.finishStatus = await incoming.finishStatus();
        return vmm;
      }
      // Restore: bind, take the preserved domain back (the device translates through it again),
      // interrupts on. Without HWPT restore (phase 1) the IOAS must be rebuilt before DMA can flow.
      const device = vfioDevice(proc, deviceFd);
      const devId = await device.bindIommufd(iommufd);
      const restoresHwpts = iommufdLiveUpdateInfo(proc, iommufd).restoresHwpts;
      const restored = restoresHwpts ? hwptRestore(proc, iommufd, HWPT_TOKEN) : undefined;
      if (!restoresHwpts) await Vmm.attachFreshIoas(proc, iommufd, ram, device, devId, config.ramBytes);
      const engine = new DmaEngineDriver(device);
      engine.enable();
      const irqFd = eventfd(proc, 0, EFD_NONBLOCK);
      await device.setMsix([irqFd]);
      const restoredAt = now();
      const driver = new GuestDmaDriver(
        { read: (o, l) => proc.pread(ram, l, o), write: (o, b) => void proc.pwrite(ram, b, o) },
        config.guest,
        engine,
      );
      vmm = new Vmm(
        config,
        proc,
        ram,
        vcpuFd,
        iommufd,
        deviceFd,
        irqFd,
        [...crossed.vcpus],
        client,
        device,
        driver,
      );
      vmm.crossed = crossed;
      vmm.ticksAtPause = crossed.vcpus[0]?.tick ?? 0;
      vmm.completedAtPause = driver.stats().completed;
      vmm.inFlight = driver.recover(crossed.pendingIrqs);
      const resumedAt = now();
      vmm.checkFrames(); // a check, not needed to resume: after the blackout
      // The guest runs. Off the blackout: move the device to a fresh IOAS and HWPT marked for the
      // next update (a restored HWPT cannot be marked again), FINISH, and a new outgoing session.
      if (restored !== undefined) {
        await Vmm.attachFreshIoas(proc, iommufd, ram, device, devId, config.ramBytes);
        iommufdDestroy(proc, iommufd, restored);
      }
      await client.finishSession(incoming);
      vmm.finished = true;
      vmm.session = await client.createSession(config.guest);
      Object.assign(vmm.times, {
        reconnect: reconnectAt,
        retrieved: retrievedAt,
        restored: restoredAt,
        resumed: resumedAt,
        pausedAt: crossed.pausedAt,
        irqsOffAt: crossed.irqsOffAt,
      });
      return vmm;
    } catch (e) {
      proc.exit();
      throw e;
    }
  }

  /** The DMA driver's counters. */
  dmaStats(): DmaDriverStats {
    return this.driver.stats();
  }

  /**
   * The guest checks itself after an update (see {@link VmmChecks}); `expected` is the outcome
   * the vfio mode promises for a job in flight.
   */
  verify(expected: readonly InFlightOutcome[]): { checks: Record<string, boolean>; problems: string[] } {
    const problems: string[] = [];
    let hashChain = this.vcpus.every((s) => s.tick > this.ticksAtPause);
    if (!hashChain) problems.push("the vCPUs did not run after the update");
    this.vcpus.forEach((s, i) => {
      const v = verifyGuest(this.ramIo, this.regions[i]!, `${this.config.guest}/vcpu${i}`, s);
      if (!v.ok) {
        hashChain = false;
        problems.push(...v.problems.map((p) => `vCPU ${i}: ${p}`));
      }
    });
    const zeroCopy = this.zeroCopy === true;
    if (!zeroCopy) problems.push("guest RAM is not in the same physical frames");
    if (!this.deviceUsable) {
      // iommufd phase 1: the device cannot be bound and the session cannot finish — as documented.
      const deviceHeld = this.deviceBindError === "EPERM";
      if (!deviceHeld) problems.push(`binding the device answered ${this.deviceBindError}, expected EPERM`);
      const finishRefused = this.finishStatus?.files.some((f) => !f.canFinish) === true;
      if (!finishRefused) problems.push("FINISH would succeed although iommufd cannot be retrieved");
      return { checks: { hashChain, zeroCopy, deviceHeld, finishRefused }, problems };
    }
    const st = this.driver.stats();
    const dma =
      st.failures === 0 && st.completed === st.irqs + st.polled && st.completed > this.completedAtPause;
    if (!dma) problems.push(`DMA: ${JSON.stringify(st)} (completed at the update: ${this.completedAtPause})`);
    const inFlight = expected.includes(this.inFlight as InFlightOutcome);
    if (!inFlight) problems.push(`job in flight: ${this.inFlight}, expected ${expected.join(" or ")}`);
    if (!this.finished) problems.push("the session was not finished");
    return { checks: { hashChain, dma, inFlight, zeroCopy, finished: this.finished }, problems };
  }

  /** Stops the VMM (closes its luod connection and exits its process). */
  stop(): void {
    this.client.close();
    if (!this.proc.hasExited) this.proc.exit();
  }
}
