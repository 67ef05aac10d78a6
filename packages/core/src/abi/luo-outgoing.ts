/**
 * The outgoing LUO handover: the LUO FDT page, the session chain and the FLB page.
 *
 * Set up at boot ({@link LuoOutgoingAbi.setup}, the kernel's late init): one preserved page for the
 * LUO FDT, published as KHO subtree "LUO", and one preserved page for FLB records (`pgcnt = 1`).
 * Session records are written as sessions are created ({@link SessionRecords}). At reboot the
 * orchestrator seals the session records, writes the FLB records and calls
 * {@link LuoOutgoingAbi.writeFdt}; a failed reboot unseals the sessions and calls
 * {@link LuoOutgoingAbi.clear}.
 *
 * @module
 */
import { encodeFdt, fdtNode, fdtString, fdtU64 } from "../fdt/index.js";
import { PAGE_SIZE } from "../machine/index.js";
import type { Kho, PreservedBlock } from "../kho/index.js";
import { LiveUpdateError } from "../errors.js";
import { SessionRecords } from "./session-records.js";
import {
  FLB_AREA,
  FLB_SER,
  LUO_COMPATIBLE,
  LUO_FLB_COMPATIBLE,
  LUO_KHO_NAME,
  LUO_SESSION_COMPATIBLE,
} from "./layout.js";

/**
 * One FLB record to serialize.
 *
 * @category Handover ABI
 */
export interface FlbRecord {
  /** Validated compatible bytes (1..47, no NUL). */
  readonly compatible: Uint8Array;
  /** The FLB's opaque data (usually a physical address). */
  readonly data: bigint;
  /** Number of preserved dependent files. */
  readonly count: bigint;
}

/**
 * The outgoing handover pages of one kernel.
 *
 * @category Handover ABI
 */
export class LuoOutgoingAbi {
  /** The session records (written by session creation, sealed at reboot). */
  readonly sessions: SessionRecords;

  private constructor(
    private readonly kho: Kho,
    private readonly fdtPage: PreservedBlock,
    private readonly flbPage: PreservedBlock,
  ) {
    this.sessions = new SessionRecords(kho);
  }

  /** Allocates the FDT and FLB pages and publishes "LUO". `ENOMEM`; nothing is left on failure. */
  static setup(kho: Kho): LuoOutgoingAbi {
    const fdt = kho.allocPreserve(PAGE_SIZE);
    let flb: PreservedBlock;
    try {
      flb = kho.allocPreserve(PAGE_SIZE * FLB_AREA.pages);
      new DataView(flb.view.buffer, flb.view.byteOffset).setBigUint64(0, BigInt(FLB_AREA.pages), true);
      kho.addSubtree(LUO_KHO_NAME, fdt.phys);
    } catch (e) {
      kho.unpreserveFree(fdt.phys);
      if (flb! !== undefined) kho.unpreserveFree(flb.phys);
      throw e;
    }
    return new LuoOutgoingAbi(kho, fdt, flb);
  }

  /** Writes the FLB records (reboot path). `ENOSPC` above 63 records. */
  writeFlbs(records: readonly FlbRecord[]): void {
    if (records.length > FLB_AREA.max) {
      throw new LiveUpdateError(
        "ENOSPC",
        `${records.length} FLBs to serialize; the FLB page holds ${FLB_AREA.max}`,
      );
    }
    const bytes = this.flbPage.view;
    const dv = new DataView(bytes.buffer, bytes.byteOffset, PAGE_SIZE);
    bytes.fill(0, 8);
    records.forEach((r, i) => {
      const off = FLB_AREA.headerSize + i * FLB_SER.size;
      bytes.set(r.compatible, off + FLB_SER.name);
      dv.setBigUint64(off + FLB_SER.data, r.data, true);
      dv.setBigUint64(off + FLB_SER.count, r.count, true);
    });
    dv.setBigUint64(8, BigInt(records.length), true);
  }

  /** Encodes the LUO FDT into its page (reboot path). */
  writeFdt(liveupdateNumber: bigint): void {
    const blob = encodeFdt({
      root: fdtNode(
        "",
        { compatible: fdtString(LUO_COMPATIBLE), "liveupdate-number": fdtU64(liveupdateNumber) },
        [
          fdtNode("luo-session", {
            compatible: fdtString(LUO_SESSION_COMPATIBLE),
            "luo-session-header": fdtU64(this.sessions.head),
          }),
          fdtNode("luo-flb", {
            compatible: fdtString(LUO_FLB_COMPATIBLE),
            "luo-flb-header": fdtU64(this.flbPage.phys),
          }),
        ],
      ),
      reservations: [],
      bootCpuid: 0,
    });
    if (blob.length > PAGE_SIZE) throw new LiveUpdateError("ENOSPC", `LUO FDT is ${blob.length} bytes`);
    this.fdtPage.view.fill(0);
    this.fdtPage.view.set(blob);
  }

  /** Undoes {@link LuoOutgoingAbi.writeFdt} and {@link LuoOutgoingAbi.writeFlbs} (a failed reboot). */
  clear(): void {
    this.fdtPage.view.fill(0);
    this.flbPage.view.fill(0, 8);
  }

  /** Releases everything (unused kernel teardown). */
  destroy(): void {
    this.sessions.destroy();
    this.kho.removeSubtree(LUO_KHO_NAME);
    this.kho.unpreserveFree(this.fdtPage.phys);
    this.kho.unpreserveFree(this.flbPage.phys);
  }
}
