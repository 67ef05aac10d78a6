/**
 * The host both kernels run on: a machine with one IOMMU unit and one DMA engine per guest
 * (each behind its own PCI root port, so vfio cdev `i` is guest `i`'s engine), the plugin set
 * (memfd, iommufd with its live-update behaviour, vfio with its mode) and the fleet's options,
 * checked once. Shared by the in-process run and the child process booted from the image.
 *
 * @module
 */
import { LiveUpdateError, Machine, definePlugin, type Plugin } from "@luo/core";
import { memfd } from "@luo/memfd-handler";
import { iommuUnit, iommufd, iommuUnitLoader, type IommufdLiveUpdateMode } from "@luo/iommufd-handler";
import {
  dmaEngine,
  pciSegment,
  pciSegmentLoader,
  rootPort,
  vfio,
  type VfioLiveUpdateMode,
} from "@luo/vfio-handler";
import { MIN_GUEST_RAM, now, type VmmConfig, type VmmFaults } from "./vmm.js";

const MiB = 1 << 20;

/** Options of a fleet run (every field has a default, see {@link fleetConfig}). */
export interface FleetOptions {
  /** Number of guests (default 4; at most 31). */
  readonly guests?: number;
  /** Guest RAM sizes in MiB, used in turn (default 8, 16, 32, 64). */
  readonly sizesMiB?: readonly number[];
  /** vfio live-update mode (default `reset`). */
  readonly mode?: VfioLiveUpdateMode;
  /** iommufd behaviour of the next kernel (default `restore`). */
  readonly iommu?: IommufdLiveUpdateMode;
  /** Boot the next kernel and the new VMMs in a child process from the machine image. */
  readonly image?: boolean;
  /** Guest steps before the update (default 12). */
  readonly stepsBefore?: number;
  /** Guest steps after the update (default 12). */
  readonly stepsAfter?: number;
  /** Machine time per step, ns (default 1 ms). */
  readonly stepNs?: number;
  /** Machine time between the old kernel's halt and the new one's boot, ns (default 20 ms). */
  readonly gapNs?: number;
  /** vCPUs per guest (default 2). */
  readonly vcpus?: number;
  /** Faults by guest index. */
  readonly faults?: Readonly<Record<number, VmmFaults>>;
}

/** {@link FleetOptions} with every default applied and checked. */
export interface FleetConfig {
  readonly guests: number;
  readonly sizesMiB: readonly number[];
  readonly mode: VfioLiveUpdateMode;
  readonly iommu: IommufdLiveUpdateMode;
  readonly image: boolean;
  readonly stepsBefore: number;
  readonly stepsAfter: number;
  readonly stepNs: number;
  readonly gapNs: number;
  readonly vcpus: number;
  readonly faults: Readonly<Record<number, VmmFaults>>;
}

function posInt(v: unknown, what: string, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0 || v > max)
    throw new LiveUpdateError("EINVAL", `${what} must be an integer from 0 to ${max}, not ${String(v)}`);
  return v;
}

/** Applies defaults and checks every option (`EINVAL` naming the option). */
export function fleetConfig(o: FleetOptions = {}): FleetConfig {
  if (typeof o !== "object" || o === null)
    throw new LiveUpdateError("EINVAL", "fleet options must be an object");
  const guests = posInt(o.guests ?? 4, "guests", 31);
  if (guests < 1) throw new LiveUpdateError("EINVAL", "guests must be at least 1");
  const sizesMiB = o.sizesMiB ?? [8, 16, 32, 64];
  if (!Array.isArray(sizesMiB) || sizesMiB.length === 0)
    throw new LiveUpdateError("EINVAL", "sizes must be a non-empty list of MiB");
  for (const s of sizesMiB) {
    posInt(s, "guest size (MiB)", 1 << 20);
    if (s * MiB < MIN_GUEST_RAM)
      throw new LiveUpdateError(
        "EINVAL",
        `guest size ${s} MiB is below the minimum of ${MIN_GUEST_RAM / MiB} MiB`,
      );
  }
  const mode = o.mode ?? "reset";
  if (mode !== "reset" && mode !== "continuous")
    throw new LiveUpdateError("EINVAL", `vfio mode must be "reset" or "continuous", not ${String(mode)}`);
  const iommu = o.iommu ?? "restore";
  if (iommu !== "restore" && iommu !== "phase1")
    throw new LiveUpdateError(
      "EINVAL",
      `iommufd behaviour must be "restore" or "phase1", not ${String(iommu)}`,
    );
  return {
    guests,
    sizesMiB: [...sizesMiB],
    mode,
    iommu,
    image: o.image === true,
    stepsBefore: posInt(o.stepsBefore ?? 12, "stepsBefore", 100_000),
    stepsAfter: Math.max(1, posInt(o.stepsAfter ?? 12, "stepsAfter", 100_000)),
    stepNs: posInt(o.stepNs ?? 1_000_000, "stepNs"),
    gapNs: posInt(o.gapNs ?? 20_000_000, "gapNs"),
    vcpus: Math.max(1, posInt(o.vcpus ?? 2, "vcpus", 8)),
    faults: o.faults ?? {},
  };
}

/** Guest RAM of guest `i`, bytes. */
export function guestBytes(c: FleetConfig, i: number): number {
  return c.sizesMiB[i % c.sizesMiB.length]! * MiB;
}

/** The VMM of guest `i`. */
export function vmmConfig(c: FleetConfig, i: number): VmmConfig {
  return {
    name: `vmm-${i}`,
    guest: `vm-${i}`,
    ramBytes: guestBytes(c, i),
    device: i,
    vcpus: c.vcpus,
    faults: c.faults[i],
  };
}

/** Machine RAM: every guest, plus room for both kernels' own pages. */
export function machineBytes(c: FleetConfig): number {
  let sum = 0;
  for (let i = 0; i < c.guests; i++) sum += guestBytes(c, i);
  const bytes = sum + 64 * MiB + Math.ceil(sum / 16 / MiB) * MiB;
  return Math.ceil(bytes / (2 * MiB)) * 2 * MiB;
}

/** A powered-on host: IOMMU `dmar0`, root ports `00:01.0…` each with a DMA engine. */
export function hostMachine(c: FleetConfig): Machine {
  const devices = Array.from({ length: c.guests }, (_, i) =>
    rootPort({ device: i + 1, children: [dmaEngine({ device: 0 })] }),
  );
  return new Machine({
    memory: machineBytes(c),
    hardware: [iommuUnit({ name: "dmar0" }), pciSegment({ devices })],
  });
}

/** Loads the host from a machine image (its IOMMU and PCI hardware included). */
export function loadHost(path: string): Promise<Machine> {
  return Machine.load(path, { hardware: [iommuUnitLoader, pciSegmentLoader] });
}

/** When the last kernel booted with {@link hostPlugins}'s clock began registering plugins. */
export interface BootClock {
  /** Wall-clock ms of the last boot's first plugin registration. */
  last: number;
}

/** The kernel's plugins: the boot clock first, then memfd, iommufd, vfio. */
export function hostPlugins(c: FleetConfig, clock?: BootClock): Plugin[] {
  const plugins: Plugin[] = [];
  if (clock) {
    plugins.push(
      definePlugin({
        name: "boot-clock",
        register: () => {
          clock.last = now();
        },
      }),
    );
  }
  plugins.push(memfd(), iommufd({ liveUpdate: c.iommu }), vfio({ mode: c.mode }));
  return plugins;
}
