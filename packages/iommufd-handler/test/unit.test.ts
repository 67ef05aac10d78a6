// The IOMMU unit as hardware: page-table walks with 4 KiB / 2 MiB / 1 GiB leaves, permissions,
// faults logged and refused, IOTLB staleness until invalidation, and the unit in the machine
// image.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LiveUpdateError, Machine, PAGE_SIZE } from "@luo/core";
import {
  IOMMU_READ,
  IOMMU_WRITE,
  IoPageTable,
  IommuFaultError,
  IommuUnit,
  formatRequester,
  iommuFor,
  iommuUnit,
  iommuUnitLoader,
  pciRequester,
} from "@luo/iommufd-handler";
import { describe, expect, it } from "vitest";

const RW = IOMMU_READ | IOMMU_WRITE;
const DEV = pciRequester(0, 1, 0, 0);

function setup(memory = "64 MiB") {
  const machine = new Machine({ memory, hardware: [iommuUnit({ name: "dmar0" })] });
  const unit = iommuFor(machine, DEV);
  const pt = IoPageTable.create(machine);
  unit.setContext(DEV, { domainId: 1, root: pt.top });
  return { machine, unit, pt, port: unit.port(DEV) };
}

function fault(fn: () => unknown): IommuFaultError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(IommuFaultError);
    expect((e as LiveUpdateError).code).toBe("EFAULT");
    return e as IommuFaultError;
  }
  throw new Error("expected a DMA fault");
}

describe("IOMMU unit translation", () => {
  it("reads and writes exactly the mapped physical pages, across non-contiguous 4 KiB leaves", () => {
    const { machine, pt, port } = setup();
    const a = machine.allocPages(0);
    machine.allocPages(0); // a gap so the two pages are not contiguous
    const b = machine.allocPages(0);
    pt.map(0x10000, Number(a), PAGE_SIZE, RW);
    pt.map(0x11000, Number(b), PAGE_SIZE, RW);
    const data = new Uint8Array(2 * PAGE_SIZE).map((_, i) => (i * 7) & 0xff);
    port.dmaWrite(0x10000n, data);
    expect(machine.read(a, PAGE_SIZE)).toEqual(data.subarray(0, PAGE_SIZE));
    expect(machine.read(b, PAGE_SIZE)).toEqual(data.subarray(PAGE_SIZE));
    expect(port.dmaRead(0x10800, PAGE_SIZE)).toEqual(data.subarray(0x800, 0x800 + PAGE_SIZE));
    expect(pt.stats()).toMatchObject({ leaves4k: 2, leaves2m: 0 });
    expect(formatRequester(DEV)).toBe("0000:01:00.0");
  });

  it("uses 2 MiB and 1 GiB leaves when IOVA and memory are aligned and contiguous", () => {
    const { machine, pt, port } = setup("64 MiB");
    const big = machine.allocPages(9);
    pt.map(0x4000_0000 + 0x20_0000, Number(big), 0x20_0000, IOMMU_READ);
    expect(pt.stats()).toMatchObject({ leaves2m: 1, leaves4k: 0 });
    machine.write(big + 0x1234n, new Uint8Array([9, 8, 7]));
    expect(port.dmaRead(0x4020_1234, 3)).toEqual(new Uint8Array([9, 8, 7]));
    expect(pt.lookup(0x4020_1234)).toEqual({ phys: big + 0x1234n, level: 1, prot: IOMMU_READ });
    // A 1 GiB leaf needs 1 GiB of aligned RAM; check the table format on a machine with 2 GiB.
    const m2 = new Machine({ memory: "2 GiB", base: 1n << 30n });
    const pt2 = IoPageTable.create(m2);
    pt2.map(0x8000_0000, 0x4000_0000, 0x4000_0000, RW);
    expect(pt2.stats()).toMatchObject({ leaves1g: 1, tablePages: 2 });
    expect(pt2.lookup(0x8000_0010)?.phys).toBe(0x4000_0010n);
  });

  it("refuses and logs DMA to unmapped, read-only and unattached IOVAs; nothing moves", () => {
    const { machine, unit, pt, port } = setup();
    const page = machine.allocPages(0);
    pt.map(0x2000, Number(page), PAGE_SIZE, IOMMU_READ);
    const before = machine.read(page, PAGE_SIZE);
    expect(fault(() => port.dmaWrite(0x2000, new Uint8Array(8).fill(1))).fault.reason).toBe("read-only");
    expect(machine.read(page, PAGE_SIZE)).toEqual(before);
    // Partly mapped: refused as a whole.
    expect(fault(() => port.dmaRead(0x2000, PAGE_SIZE + 1)).fault).toMatchObject({
      reason: "not-present",
      iova: 0x3000n,
      write: false,
      domainId: 1,
    });
    const other = unit.port(pciRequester(0, 2, 0, 0));
    expect(fault(() => other.dmaRead(0x2000, 4)).fault.reason).toBe("blocked");
    expect(unit.faults().map((f) => f.reason)).toEqual(["read-only", "not-present", "blocked"]);
    expect(unit.stats().faultCount).toBe(3);
    unit.clearFaults();
    expect(unit.faults()).toEqual([]);
    expect(unit.stats().faultCount).toBe(3);
  });

  it("keeps a stale translation until software invalidates the IOTLB", () => {
    const { machine, unit, pt, port } = setup();
    const p1 = machine.allocPages(0);
    const p2 = machine.allocPages(0);
    machine.write(p1, new Uint8Array([1]));
    machine.write(p2, new Uint8Array([2]));
    pt.map(0x5000, Number(p1), PAGE_SIZE, RW);
    expect(port.dmaRead(0x5000, 1)[0]).toBe(1);
    pt.unmap(0x5000, PAGE_SIZE);
    pt.map(0x5000, Number(p2), PAGE_SIZE, RW);
    expect(port.dmaRead(0x5000, 1)[0]).toBe(1); // the IOTLB still says p1
    unit.invalidateRange(1, 0x5000, PAGE_SIZE);
    expect(port.dmaRead(0x5000, 1)[0]).toBe(2);
    pt.unmap(0x5000, PAGE_SIZE);
    expect(port.dmaRead(0x5000, 1)[0]).toBe(2);
    unit.invalidateDomain(1);
    expect(fault(() => port.dmaRead(0x5000, 1)).fault.reason).toBe("not-present");
    expect(unit.stats().iotlbHits).toBeGreaterThan(0);
  });

  it("page-table edits are all or nothing", () => {
    const { machine, pt } = setup();
    const p = Number(machine.allocPages(0));
    pt.map(0x3000, p, PAGE_SIZE, RW);
    const code = (fn: () => unknown): string => {
      try {
        fn();
      } catch (e) {
        return (e as LiveUpdateError).code;
      }
      return "ok";
    };
    expect(code(() => pt.map(0x2000, p, 2 * PAGE_SIZE, RW))).toBe("EEXIST");
    expect(pt.lookup(0x2000)).toBeUndefined();
    expect(code(() => pt.map(0x2001, p, PAGE_SIZE, RW))).toBe("EINVAL");
    expect(code(() => pt.map(0x9000, p, PAGE_SIZE, 4))).toBe("EINVAL");
    const big = Number(machine.allocPages(9));
    pt.map(0x20_0000, big, 0x20_0000, RW);
    expect(code(() => pt.unmap(0x20_0000, PAGE_SIZE))).toBe("EINVAL");
    expect(pt.lookup(0x20_0000)).toBeDefined();
    expect(pt.unmap(0x20_0000, 0x20_0000)).toBe(0x20_0000);
    const used = machine.stats().allocatedPages;
    const tables = pt.stats().tablePages;
    pt.free();
    expect(machine.stats().allocatedPages).toBe(used - tables);
  });

  it("is saved in the machine image and keeps translating after loading", async () => {
    const { machine, unit, pt, port } = setup();
    const page = machine.allocPages(0);
    pt.map(0x7000, Number(page), PAGE_SIZE, RW);
    port.dmaWrite(0x7000, new Uint8Array([42]));
    fault(() => port.dmaRead(0x8000, 1));
    const dir = await mkdtemp(join(tmpdir(), "iommu-unit-"));
    try {
      const path = join(dir, "m.img");
      await machine.save(path);
      const back = await Machine.load(path, { hardware: [iommuUnitLoader] });
      const u2 = back.hardware.get("dmar0") as IommuUnit;
      expect(u2).toBeInstanceOf(IommuUnit);
      expect(u2.token).toBe(unit.token);
      expect(u2.context(DEV)).toEqual({ domainId: 1, root: pt.top });
      expect(u2.faults()).toEqual(unit.faults());
      expect(u2.stats()).toEqual(unit.stats());
      expect(u2.port(DEV).dmaRead(0x7000, 1)[0]).toBe(42);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("rejects misuse from plain JavaScript with EINVAL", () => {
    const { unit, port } = setup();
    for (const bad of [{ segment: -1, bdf: 0 }, { segment: 0 }, null, { segment: 0, bdf: 0x10000 }]) {
      expect(() => unit.port(bad as never)).toThrow(expect.objectContaining({ code: "EINVAL" }));
    }
    expect(() => port.dmaRead(0, -1)).toThrow(expect.objectContaining({ code: "EINVAL" }));
    expect(() => port.dmaRead("x" as never, 1)).toThrow(expect.objectContaining({ code: "EINVAL" }));
    expect(() => port.dmaWrite(0, [1] as never)).toThrow(expect.objectContaining({ code: "EINVAL" }));
    expect(() => unit.setContext(DEV, { domainId: 0, root: 0x1000n })).toThrow(
      expect.objectContaining({ code: "EINVAL" }),
    );
    expect(() => IommuUnit.restore(new Machine({ memory: "4 MiB" }), "x", new Uint8Array([1]))).toThrow(
      expect.objectContaining({ code: "EINVAL" }),
    );
  });
});
