/**
 * The live-update file handler `"iommufd-v1"` (Linux `drivers/iommu/iommufd/liveupdate.c`): hands
 * the I/O page tables of the HWPTs userspace marked to the next kernel, in place.
 *
 * Serialized (`include/linux/kho/abi/iommufd.h`, little-endian, packed):
 *   iommufd_ser       u64 nr_hwpts | iommufd_hwpt_ser hwpt_array[nr_hwpts]
 *   iommufd_hwpt_ser  u64 domain_data (address of the domain's record in the IOMMU FLB) |
 *                     u64 token | u8 reclaimed | u8 padding[7]                      (24 B)
 *
 * Old kernel.
 * - canPreserve: an iommufd.
 * - preserve: every marked HWPT must have a domain (`EINVAL`); allocate the record (`ENOMEM`);
 *   per marked HWPT, the first time its IOAS is seen make the IOAS immutable and check every
 *   area: user memory (`IOAS_MAP`) `EINVAL`, a memfd that lacked SEAL|GROW|SHRINK when mapped
 *   `EINVAL`, a memfd not preserved earlier in the same session `ENOENT` (the core's dependency
 *   API); then preserve the domain in the IOMMU FLB (unit without support `EOPNOTSUPP`, already
 *   preserved `EBUSY`), which KHO-preserves the page-table pages themselves. Any failure undoes
 *   everything (domains unpreserved, IOASes mutable, record freed). Zero marked HWPTs is fine.
 * - no freeze: everything is immutable already. unpreserve: the reverse of preserve.
 * New kernel — two behaviours, chosen by the plugin option (see `iommufd()`):
 * - `"phase1"` (the posted upstream series): retrieve `EOPNOTSUPP` (sticky), canFinish false, so
 *   FINISH of the session stays `EBUSY`; finish does nothing. The preserved domains keep
 *   translating for their devices, which no new iommufd may bind (`EPERM`).
 * - `"restore"` (default; the phase-2 design): retrieve checks the record (handed over, every
 *   domain known to the IOMMU FLB, else `EINVAL`) and gives a new iommufd that can restore each
 *   HWPT by token; canFinish once every token was reclaimed and no device is still attached to a
 *   restored HWPT (an iommufd never retrieved: only when it had no HWPT); finish frees the record.
 *
 * @module
 */
import {
  LiveUpdateError,
  PAGE_SIZE,
  defineFileHandler,
  type FileHandler,
  type FinishArgs,
  type KernelFile,
  type KhoIncoming,
  type PreserveArgs,
  type PreserveResult,
  type PreservedArgs,
  type RetrieveArgs,
} from "@luo/core";
import { IOMMU_CORE, type IommuCore, type IommuDomain } from "../iommu/core.js";
import {
  iommuLiveUpdateFlb,
  tablePagesOf,
  type IommuFlbIncoming,
  type IommuFlbOutgoing,
} from "../iommu/flb.js";
import { PT_TOP_LEVEL, PT_VASZ } from "../iommu/pgtable.js";
import { iommuUnits } from "../iommu/unit.js";
import {
  IOMMUFD_REQUIRED_SEALS,
  IommufdFile,
  type Hwpt,
  type Ioas,
  type IommufdIncomingState,
} from "../iommufd/ictx.js";

/** Handler compatible. */
export const IOMMUFD_LUO_COMPATIBLE = "iommufd-v1";
/** Size of `iommufd_ser` without entries. */
export const IOMMUFD_SER_HEADER_SIZE = 8;
/** Size of one `iommufd_hwpt_ser`. */
export const IOMMUFD_HWPT_SER_SIZE = 24;
/** Most HWPT entries one record can hold (the record is at most one 2 MiB folio). */
export const IOMMUFD_MAX_HWPTS = Math.floor(
  (512 * PAGE_SIZE - IOMMUFD_SER_HEADER_SIZE) / IOMMUFD_HWPT_SER_SIZE,
);

/** The two new-kernel behaviours. */
export type IommufdLiveUpdateMode = "restore" | "phase1";

/** One decoded `iommufd_hwpt_ser`. */
export interface IommufdHwptRecord {
  /** Address of the domain record in the IOMMU FLB. */
  readonly domainData: bigint;
  /** The HWPT's token. */
  readonly token: bigint;
  /** Whether the new kernel restored it. */
  readonly reclaimed: boolean;
}

/** Decodes an `iommufd_ser` at `phys`. `EINVAL` when the count is absurd. */
export function decodeIommufdSer(
  read: (phys: bigint, len: number) => Uint8Array,
  phys: bigint,
): IommufdHwptRecord[] {
  const head = Buffer.from(read(phys, IOMMUFD_SER_HEADER_SIZE));
  const n = head.readBigUInt64LE(0);
  if (n > BigInt(IOMMUFD_MAX_HWPTS))
    throw new LiveUpdateError("EINVAL", `iommufd record at 0x${phys.toString(16)}: ${n} HWPTs`);
  const body = Buffer.from(read(phys + 8n, Number(n) * IOMMUFD_HWPT_SER_SIZE));
  return Array.from({ length: Number(n) }, (_, i) => ({
    domainData: body.readBigUInt64LE(i * 24),
    token: body.readBigUInt64LE(i * 24 + 8),
    reclaimed: body[i * 24 + 16] !== 0,
  }));
}

/** Runtime state of a preserved iommufd (the handler's private data). */
export interface IommufdPreserved {
  /** The context. */
  readonly ictx: IommufdFile;
  /** Address of `iommufd_ser`. */
  readonly ser: bigint;
  /** Preserved HWPTs, in record order. */
  readonly hwpts: readonly Hwpt[];
  /** IOASes made immutable. */
  readonly ioases: readonly Ioas[];
}

const hex = (p: bigint): string => `0x${p.toString(16)}`;

function checkIoas(ioas: Ioas, tokenOf: (f: KernelFile) => bigint): void {
  for (const a of ioas.areas) {
    const at = `IOAS ${ioas.id} IOVA ${hex(BigInt(a.iova))}`;
    if (a.kind !== "file") throw new LiveUpdateError("EINVAL", `${at} maps process memory, not a file`);
    if ((a.sealsAtMap & IOMMUFD_REQUIRED_SEALS) !== IOMMUFD_REQUIRED_SEALS) {
      throw new LiveUpdateError(
        "EINVAL",
        `${at}: ${a.file.description} lacked F_SEAL_SEAL|F_SEAL_GROW|F_SEAL_SHRINK when mapped`,
      );
    }
    try {
      tokenOf(a.file);
    } catch (e) {
      throw new LiveUpdateError(
        "ENOENT",
        `${at}: ${a.file.description} is not preserved earlier in this session`,
        { cause: e },
      );
    }
  }
}

async function preserve(args: PreserveArgs<IommufdFile>): Promise<PreserveResult<IommufdPreserved>> {
  const { file: ictx, kho, session } = args;
  const marked = ictx.markedHwpts();
  for (const h of marked) {
    if (h.domain.freed) throw new LiveUpdateError("EINVAL", `HWPT ${h.id} (token ${h.token}) has no domain`);
  }
  const flb = (await args.flb.getOutgoing(iommuLiveUpdateFlb)) as IommuFlbOutgoing | undefined;
  if (!flb)
    throw new LiveUpdateError(
      "EINVAL",
      `the IOMMU FLB is not preserved (is "${IOMMUFD_LUO_COMPATIBLE}" linked to it?)`,
    );
  const ser = kho.allocPreserve(IOMMUFD_SER_HEADER_SIZE + IOMMUFD_HWPT_SER_SIZE * Math.max(1, marked.length));
  const ioases: Ioas[] = [];
  const hwpts: Hwpt[] = [];
  try {
    const dv = new DataView(ser.view.buffer, ser.view.byteOffset, ser.view.byteLength);
    dv.setBigUint64(0, BigInt(marked.length), true);
    marked.forEach((h, i) => {
      const ioas = h.ioas!;
      if (!ioases.includes(ioas)) {
        ioas.immutable++;
        ioases.push(ioas);
        checkIoas(ioas, (f) => session.tokenOf(f));
      }
      const domainData = ictx.core.preserveDomain(h.domain, flb, kho);
      h.preserved = true;
      hwpts.push(h);
      const at = IOMMUFD_SER_HEADER_SIZE + i * IOMMUFD_HWPT_SER_SIZE;
      dv.setBigUint64(at, domainData, true);
      dv.setBigUint64(at + 8, h.token!, true);
    });
  } catch (e) {
    for (const h of hwpts.reverse()) {
      h.preserved = false;
      ictx.core.unpreserveDomain(h.domain, flb, kho);
    }
    for (const i of ioases.reverse()) i.immutable--;
    kho.unpreserveFree(ser.phys);
    throw e;
  }
  ictx.preserved = { ser: ser.phys };
  return { data: ser.phys, privateData: { ictx, ser: ser.phys, hwpts, ioases } };
}

async function unpreserve(args: PreservedArgs<IommufdFile, IommufdPreserved>): Promise<void> {
  const st = args.privateData;
  if (!st || st.ser !== args.data)
    throw new LiveUpdateError("EINVAL", `iommufd token ${args.token}: no preserved state`);
  const flb = (await args.flb.getOutgoing(iommuLiveUpdateFlb)) as IommuFlbOutgoing;
  for (const h of [...st.hwpts].reverse()) {
    h.preserved = false;
    st.ictx.core.unpreserveDomain(h.domain, flb, args.kho);
  }
  for (const i of [...st.ioases].reverse()) i.immutable--;
  args.kho.unpreserveFree(st.ser);
  st.ictx.preserved = undefined;
}

function needIncoming(incoming: KhoIncoming | undefined, data: bigint): KhoIncoming {
  if (!incoming || !incoming.covers(data, IOMMUFD_SER_HEADER_SIZE)) {
    throw new LiveUpdateError("EINVAL", `iommufd record ${hex(data)} was not handed over`);
  }
  return incoming;
}

/** Restores a preserved domain's page table for a HWPT of the new kernel. */
function restoreDomain(
  core: IommuCore,
  incoming: KhoIncoming,
  flb: IommuFlbIncoming,
  domainData: bigint,
): IommuDomain {
  const rec = flb.domains.get(domainData);
  if (!rec || flb.restored.has(domainData)) {
    throw new LiveUpdateError(
      "ENOENT",
      `IOMMU domain record ${hex(domainData)} is unknown or already restored`,
    );
  }
  const pages = tablePagesOf(incoming.machine, rec.topTablePhys, rec.topLevel, (p) =>
    incoming.covers(p, PAGE_SIZE),
  );
  const dev = flb.devices.find((d) => d.domainPhys === domainData);
  const unitRec = dev ? flb.units.get(dev.iommuPhys) : undefined;
  const units = iommuUnits(incoming.machine);
  const unit = (unitRec && units.find((u) => u.token === unitRec.token)) ?? units[0];
  if (!unit) throw new LiveUpdateError("ENODEV", "this machine has no IOMMU unit");
  if (rec.topLevel !== PT_TOP_LEVEL || rec.vasz !== PT_VASZ) {
    throw new LiveUpdateError(
      "EINVAL",
      `IOMMU domain record ${hex(domainData)}: level ${rec.topLevel} / ${rec.vasz} bits unsupported`,
    );
  }
  // Everything checked: from here nothing can fail.
  for (const p of pages) incoming.restore(p, 0);
  flb.restored.add(domainData);
  const did = dev ? Number(dev.attachmentId) : undefined;
  return core.adoptDomain(unit, did, rec.topTablePhys, domainData);
}

function makeRetrieve(mode: IommufdLiveUpdateMode) {
  return async (args: RetrieveArgs): Promise<IommufdFile> => {
    if (mode === "phase1") {
      throw new LiveUpdateError(
        "EOPNOTSUPP",
        `"${IOMMUFD_LUO_COMPATIBLE}": this kernel keeps preserved HWPTs but cannot restore them (phase 1)`,
      );
    }
    const incoming = needIncoming(args.incoming, args.data);
    if (!args.container.isRegistered(IOMMU_CORE, true))
      throw new LiveUpdateError("EINVAL", `"${IOMMUFD_LUO_COMPATIBLE}" needs the iommufd() plugin`);
    const core = args.container.resolve(IOMMU_CORE);
    const flb = (await args.flb.getIncoming(iommuLiveUpdateFlb)) as IommuFlbIncoming;
    const m = incoming.machine;
    const entries = decodeIommufdSer((p, n) => m.read(p, n), args.data);
    const size = IOMMUFD_SER_HEADER_SIZE + entries.length * IOMMUFD_HWPT_SER_SIZE;
    if (!incoming.covers(args.data, size))
      throw new LiveUpdateError("EINVAL", `iommufd record ${hex(args.data)} is truncated`);
    for (const e of entries) {
      if (!flb.domains.has(e.domainData)) {
        throw new LiveUpdateError(
          "EINVAL",
          `iommufd record ${hex(args.data)}: domain ${hex(e.domainData)} is not in the IOMMU FLB`,
        );
      }
    }
    // Everything checked: from here nothing can fail.
    incoming.restore(args.data);
    const ictx = new IommufdFile(core, true);
    const state: IommufdIncomingState = {
      ser: args.data,
      entries: entries.map((e, i) => ({
        domainData: e.domainData,
        token: e.token,
        reclaimed: e.reclaimed,
        at: args.data + BigInt(IOMMUFD_SER_HEADER_SIZE + i * IOMMUFD_HWPT_SER_SIZE),
      })),
      restore: (domainData) => {
        const d = restoreDomain(core, incoming, flb, domainData);
        const e = state.entries.find((x) => x.domainData === domainData)!;
        m.write(e.at + 16n, new Uint8Array([1]));
        return d;
      },
    };
    ictx.incoming = state;
    return ictx;
  };
}

/** `nr_hwpts` of a record that was never retrieved (undefined when it cannot be read). */
function unretrievedCount(incoming: KhoIncoming | undefined, data: bigint): bigint | undefined {
  return incoming?.covers(data, IOMMUFD_SER_HEADER_SIZE) ? incoming.machine.readU64(data) : undefined;
}

function makeCanFinish(mode: IommufdLiveUpdateMode) {
  return ({ file, incoming, data }: FinishArgs<IommufdFile>): boolean => {
    if (mode === "phase1") return false;
    // Never retrieved: finishable only when there was nothing to reclaim.
    if (!file?.incoming) return !file && unretrievedCount(incoming, data) === 0n;
    if (file.incoming.entries.some((e) => !e.reclaimed)) return false;
    return !file
      .objects()
      .some((o) => "restoredToken" in o && o.restoredToken !== undefined && o.devices.size > 0);
  };
}

function finish({ file, data, incoming }: FinishArgs<IommufdFile>): void {
  if (!incoming) return;
  if (file?.incoming) incoming.machine.freePages(data, 0);
  else if (incoming.covers(data, IOMMUFD_SER_HEADER_SIZE)) incoming.restoreFree(data);
}

/** What `canPreserve` accepts. */
const isIommufd = (f: unknown): boolean => f instanceof IommufdFile;

/**
 * The `"iommufd-v1"` handler for one behaviour (see the module comment). The `iommufd()` plugin
 * registers it and links the IOMMU FLB to it.
 */
export function createIommufdHandler(
  mode: IommufdLiveUpdateMode,
): FileHandler<IommufdFile, IommufdPreserved> {
  return defineFileHandler<IommufdFile, IommufdPreserved>({
    compatible: IOMMUFD_LUO_COMPATIBLE,
    canPreserve: isIommufd,
    preserve,
    unpreserve,
    retrieve: makeRetrieve(mode),
    canFinish: makeCanFinish(mode),
    finish,
  });
}
