/**
 * The `luo inspect` extension of this package (`luo inspect <image> --with @luo/iommufd-handler`):
 * loads images of machines with IOMMU units, and decodes, from the raw preserved bytes, every
 * `"iommufd-v1"` file record (its HWPT entries: domain record, token, reclaimed) and the IOMMU
 * FLB `"iommu-liveupdate"` (version, units, domains, devices with their flags), plus each IOMMU
 * unit's context entries. A corrupt FLB is reported as the next kernel would see it: the
 * command fails with the kernel panic message.
 *
 * @module
 */
import type { InspectExtension } from "@luo/core";
import {
  IOMMU_LUO_FLB_COMPATIBLE,
  IOMMU_OBJ_DELETED,
  IOMMU_OBJ_INCOMING,
  decodeIommuFlb,
} from "./iommu/flb.js";
import { formatRequester, iommuUnitLoader, iommuUnits } from "./iommu/unit.js";
import { IOMMUFD_LUO_COMPATIBLE, decodeIommufdSer } from "./luo/handler.js";

const hex = (v: bigint): string => `0x${v.toString(16)}`;
const flagNames = (f: number): string =>
  [f & IOMMU_OBJ_DELETED ? "DELETED" : "", f & IOMMU_OBJ_INCOMING ? "INCOMING" : ""]
    .filter(Boolean)
    .join("|") || "-";

/** The extension object `luo inspect --with` looks for. */
export const luoInspect: InspectExtension = {
  name: "iommufd",
  hardware: [iommuUnitLoader],
  inspect(machine, report) {
    const lines: string[] = [];
    const files: unknown[] = [];
    for (const s of report.sessions) {
      for (const f of s.files) {
        if (f.compatible !== IOMMUFD_LUO_COMPATIBLE) continue;
        const hwpts = decodeIommufdSer((p, n) => machine.peek(p, n), f.data);
        lines.push(
          `session "${s.name}" token ${f.token}: iommufd record ${hex(f.data)}, ${hwpts.length} HWPT(s)`,
        );
        for (const h of hwpts) {
          lines.push(
            `  HWPT token ${h.token}  domain ${hex(h.domainData)}  reclaimed ${h.reclaimed ? 1 : 0}`,
          );
        }
        files.push({
          session: s.name,
          token: f.token.toString(),
          data: hex(f.data),
          hwpts: hwpts.map((h) => ({
            token: h.token.toString(),
            domain: hex(h.domainData),
            reclaimed: h.reclaimed,
          })),
        });
      }
    }
    let flb: unknown = null;
    const rec = report.flbs.find((x) => x.compatible === IOMMU_LUO_FLB_COMPATIBLE);
    if (rec) {
      const c = decodeIommuFlb(machine, rec.data);
      lines.push(
        `FLB "${IOMMU_LUO_FLB_COMPATIBLE}" at ${hex(rec.data)}: version ${c.version}, count ${rec.count}`,
      );
      for (const u of c.units)
        lines.push(
          `  unit ${hex(u.phys)}: token ${hex(u.token)} type ${u.type} refs ${u.refCount} flags ${flagNames(u.flags)}`,
        );
      for (const d of c.domains) {
        lines.push(
          `  domain ${hex(d.phys)}: top table ${hex(d.topTablePhys)} level ${d.topLevel} ${d.vasz}-bit refs ${d.refCount} flags ${flagNames(d.flags)}`,
        );
      }
      for (const d of c.devices) {
        lines.push(
          `  device ${formatRequester({ segment: d.pciDomain, bdf: d.devid })}: domain id ${d.attachmentId} domain ${hex(d.domainPhys)} unit ${hex(d.iommuPhys)} flags ${flagNames(d.flags)}`,
        );
      }
      flb = {
        data: hex(rec.data),
        version: c.version.toString(),
        units: c.units.map((u) => ({
          phys: hex(u.phys),
          token: hex(u.token),
          type: u.type.toString(),
          refCount: u.refCount,
          flags: u.flags,
        })),
        domains: c.domains.map((d) => ({
          phys: hex(d.phys),
          topTable: hex(d.topTablePhys),
          topLevel: d.topLevel,
          vasz: d.vasz,
          refCount: d.refCount,
          flags: d.flags,
        })),
        devices: c.devices.map((d) => ({
          rid: formatRequester({ segment: d.pciDomain, bdf: d.devid }),
          attachmentId: d.attachmentId.toString(),
          domain: hex(d.domainPhys),
          unit: hex(d.iommuPhys),
          flags: d.flags,
        })),
      };
    }
    const units = iommuUnits(machine).map((u) => ({
      name: u.name,
      token: hex(u.token),
      contexts: u.contexts().map((c) => ({
        rid: formatRequester(c.rid),
        domainId: c.context.domainId,
        root: hex(c.context.root),
      })),
      faults: u.stats().faultCount,
    }));
    for (const u of units) {
      lines.push(
        `IOMMU unit ${u.name} (${u.token}): ${u.contexts.length} context entr${u.contexts.length === 1 ? "y" : "ies"}, ${u.faults} fault(s)`,
      );
      for (const c of u.contexts) lines.push(`  ${c.rid} → domain id ${c.domainId}, root ${c.root}`);
    }
    return { lines, json: { files, flb, units } };
  },
};
