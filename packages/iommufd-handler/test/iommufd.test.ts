// /dev/iommu as a user sees it: IOAS, MAP_FILE pins and maps exactly the memfd's pages, a bound
// device DMAs through its HWPT, unmap invalidates, attach/detach, destroy rules, IOAS_MAP of
// process memory, CHANGE_PROCESS, and the raw ioctl envelope.
import { F_ADD_SEALS, PAGE_SIZE } from "@luo/core";
import { F_SEAL_WRITE, memfdCreate, memfdFile, memfdMmap, memfdPages } from "@luo/memfd-handler";
import {
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_LIVEUPDATE_GET_INFO,
  IommuFaultError,
  hwptAlloc,
  ioasAlloc,
  ioasChangeProcess,
  ioasIovaRanges,
  ioasMapFile,
  ioasMapUser,
  ioasUnmap,
  iommuFor,
  iommufdBind,
  iommufdDestroy,
  iommufdFile,
  iommufdLiveUpdateInfo,
  iommufdOpen,
  pciRequester,
} from "@luo/iommufd-handler";
import { describe, expect, it } from "vitest";
import { DEV_RID, RAM_IOVA, boot, iommuMachine, pattern, rejects, vmSetup } from "./helpers.js";

const SIZE = 16 * PAGE_SIZE;

describe("iommufd: mapping and DMA", () => {
  it("DMA by IOVA reads and writes exactly the memfd's bytes, in its own physical pages", async () => {
    const b = await boot(iommuMachine());
    const vm = await vmSetup(b, SIZE);
    expect(vm.port.dmaRead(RAM_IOVA + 100, 300)).toEqual(pattern(SIZE, 1).subarray(100, 400));
    vm.port.dmaWrite(RAM_IOVA + 5 * PAGE_SIZE - 2, new Uint8Array([1, 2, 3, 4]));
    expect(b.proc.pread(vm.ram, 4, 5 * PAGE_SIZE - 2)).toEqual(new Uint8Array([1, 2, 3, 4]));
    const pages = memfdPages(memfdFile(b.proc, vm.ram));
    const ictx = iommufdFile(b.proc, vm.iommufd);
    const pt = ictx.hwpt(vm.hwpt).domain.pt;
    for (const [index, phys] of pages) expect(pt.lookup(RAM_IOVA + index * PAGE_SIZE)?.phys).toBe(phys);
    expect(iommufdLiveUpdateInfo(b.proc, vm.iommufd)).toEqual({ restoresHwpts: true });
  });

  it("unmapping invalidates the IOTLB: the device faults at once, and the memfd is unpinned", async () => {
    const b = await boot(iommuMachine());
    const vm = await vmSetup(b, SIZE);
    vm.port.dmaRead(RAM_IOVA, 8);
    // While mapped, the pages are pinned: F_SEAL_WRITE is refused.
    await rejects(() => b.proc.fcntl(vm.ram, F_ADD_SEALS, F_SEAL_WRITE), "EPERM"); // F_SEAL_SEAL is set
    await rejects(() => ioasUnmap(b.proc, vm.iommufd, vm.ioas, RAM_IOVA, PAGE_SIZE), "ENOENT"); // cuts the area
    expect(ioasUnmap(b.proc, vm.iommufd, vm.ioas, RAM_IOVA, SIZE)).toBe(SIZE);
    expect(() => vm.port.dmaRead(RAM_IOVA, 8)).toThrow(IommuFaultError);
    expect(vm.unit.faults().at(-1)?.reason).toBe("not-present");
    await rejects(() => ioasUnmap(b.proc, vm.iommufd, vm.ioas, RAM_IOVA, SIZE), "ENOENT");
  });

  it("a pinned folio outlives the memfd's truncation until unmapped (pages back to baseline after)", async () => {
    const b = await boot(iommuMachine());
    const base = b.machine.stats().allocatedPages;
    const fd = memfdCreate(b.proc, "scratch");
    b.proc.pwrite(fd, pattern(SIZE, 3), 0);
    const ifd = await iommufdOpen(b.proc);
    const ioas = ioasAlloc(b.proc, ifd);
    const d = iommufdBind(b.proc, ifd, { rid: DEV_RID, name: "dev" });
    d.attach(ioas); // automatic HWPT
    const iova = ioasMapFile(b.proc, ifd, fd, 0, { ioasId: ioas, length: SIZE });
    b.proc.ftruncate(fd, 0);
    expect(iommuFor(b.machine, DEV_RID).port(DEV_RID).dmaRead(iova, 4)).toEqual(
      pattern(SIZE, 3).subarray(0, 4),
    );
    ioasUnmap(b.proc, ifd, ioas, iova, SIZE);
    d.unbind();
    b.proc.close(fd);
    b.proc.close(ifd);
    expect(b.machine.stats().allocatedPages).toBe(base);
  });

  it("attach to an IOAS makes an automatic HWPT; detach blocks DMA; destroy rules", async () => {
    const b = await boot(iommuMachine());
    const vm = await vmSetup(b, SIZE);
    const auto = vm.device.attach(vm.ioas);
    expect(auto).not.toBe(vm.hwpt);
    expect(vm.port.dmaRead(RAM_IOVA, 4)).toEqual(pattern(SIZE, 1).subarray(0, 4));
    await rejects(() => iommufdDestroy(b.proc, vm.iommufd, vm.ioas), "EBUSY");
    await rejects(() => iommufdDestroy(b.proc, vm.iommufd, auto), "EBUSY");
    vm.device.detach();
    expect(() => vm.port.dmaRead(RAM_IOVA, 4)).toThrow(IommuFaultError);
    expect(vm.unit.faults().at(-1)?.reason).toBe("blocked");
    await rejects(() => iommufdDestroy(b.proc, vm.iommufd, auto), "ENOENT"); // went with its last device
    iommufdDestroy(b.proc, vm.iommufd, vm.hwpt);
    iommufdDestroy(b.proc, vm.iommufd, vm.ioas);
    await rejects(() => iommufdDestroy(b.proc, vm.iommufd, vm.device.id), "EINVAL");
    await rejects(() => hwptAlloc(b.proc, vm.iommufd, vm.device.id, 999), "ENOENT");
  });

  it("a second iommufd cannot bind a device another one owns (EBUSY)", async () => {
    const b = await boot(iommuMachine());
    const vm = await vmSetup(b, SIZE);
    const other = await iommufdOpen(b.proc);
    await rejects(() => iommufdBind(b.proc, other, { rid: DEV_RID, name: "again" }), "EBUSY");
    vm.device.unbind();
    iommufdBind(b.proc, other, { rid: DEV_RID, name: "again" });
    await rejects(() => iommufdBind(b.proc, other, { rid: { segment: 0 } as never, name: "x" }), "EINVAL");
    expect(iommufdBind(b.proc, other, { rid: pciRequester(0, 2, 0, 0), name: "b" }).id).toBeGreaterThan(0);
  });

  it("IOAS_MAP of process memory (a memfd mapping) works and CHANGE_PROCESS refuses it", async () => {
    const b = await boot(iommuMachine());
    const vm = await vmSetup(b, SIZE);
    const mapping = memfdMmap(b.proc, vm.ram, { length: SIZE, write: true });
    const iova = ioasMapUser(b.proc, vm.iommufd, mapping, PAGE_SIZE, { ioasId: vm.ioas, length: PAGE_SIZE });
    expect(vm.port.dmaRead(iova, 4)).toEqual(pattern(SIZE, 1).subarray(PAGE_SIZE, PAGE_SIZE + 4));
    const p2 = b.kernel.spawn("new-vmm");
    await rejects(() => ioasChangeProcess(b.proc, vm.iommufd), "EINVAL");
    ioasUnmap(b.proc, vm.iommufd, vm.ioas, iova, PAGE_SIZE);
    const ictx = iommufdFile(b.proc, vm.iommufd);
    expect(ictx.pinnedPages(b.proc)).toBe(SIZE / PAGE_SIZE);
    ictx.changeProcess(p2);
    expect(ictx.pinnedPages(b.proc)).toBe(0);
    expect(ictx.pinnedPages(p2)).toBe(SIZE / PAGE_SIZE);
    mapping.unmap();
    await rejects(
      () => ioasMapUser(b.proc, vm.iommufd, mapping, 0, { ioasId: vm.ioas, length: PAGE_SIZE }),
      "EFAULT",
    );
    expect(ioasIovaRanges(b.proc, vm.iommufd, vm.ioas).ranges).toEqual([{ start: 0n, last: 2n ** 48n - 1n }]);
  });

  it("mapping errors change nothing", async () => {
    const b = await boot(iommuMachine());
    const vm = await vmSetup(b, SIZE);
    const before = b.machine.stats();
    await rejects(
      () =>
        ioasMapFile(b.proc, vm.iommufd, vm.ram, 0, { ioasId: vm.ioas, length: PAGE_SIZE, iova: RAM_IOVA }),
      "EEXIST",
    );
    await rejects(
      () => ioasMapFile(b.proc, vm.iommufd, vm.ram, 1, { ioasId: vm.ioas, length: PAGE_SIZE }),
      "EINVAL",
    );
    await rejects(
      () => ioasMapFile(b.proc, vm.iommufd, vm.ram, SIZE, { ioasId: vm.ioas, length: PAGE_SIZE }),
      "EINVAL",
    );
    await rejects(
      () =>
        ioasMapFile(b.proc, vm.iommufd, vm.ram, 0, {
          ioasId: vm.ioas,
          length: PAGE_SIZE,
          read: false,
          write: false,
        }),
      "EINVAL",
    );
    await rejects(
      () => ioasMapFile(b.proc, vm.iommufd, vm.iommufd, 0, { ioasId: vm.ioas, length: PAGE_SIZE }),
      "EINVAL",
    );
    await rejects(
      () => ioasMapFile(b.proc, vm.iommufd, vm.ram, 0, { ioasId: 77, length: PAGE_SIZE }),
      "ENOENT",
    );
    expect(b.machine.stats()).toEqual(before);
    expect(iommufdFile(b.proc, vm.iommufd).ioas(vm.ioas).areas.length).toBe(1);
  });
});

describe("iommufd: raw ioctls", () => {
  it("IOAS_ALLOC, MAP_FILE, IOVA_RANGES, UNMAP, GET_INFO through the envelope", async () => {
    const b = await boot(iommuMachine());
    const vm = await vmSetup(b, SIZE);
    const alloc = new Uint8Array(12);
    new DataView(alloc.buffer).setUint32(0, 12, true);
    await b.proc.ioctl(vm.iommufd, IOMMU_IOAS_ALLOC, alloc);
    const ioas = new DataView(alloc.buffer).getUint32(8, true);
    expect(iommufdFile(b.proc, vm.iommufd).ioas(ioas).id).toBe(ioas);

    const map = new Uint8Array(40);
    const mv = new DataView(map.buffer);
    mv.setUint32(0, 40, true);
    mv.setUint32(4, IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE, true);
    mv.setUint32(8, ioas, true);
    mv.setInt32(12, vm.ram, true);
    mv.setBigUint64(24, BigInt(PAGE_SIZE), true);
    mv.setBigUint64(32, 0x4000n, true);
    await b.proc.ioctl(vm.iommufd, IOMMU_IOAS_MAP_FILE, map);

    const ranges = new Uint8Array(32 + 16);
    const rv = new DataView(ranges.buffer);
    rv.setUint32(0, 32, true);
    rv.setUint32(4, ioas, true);
    await rejects(() => b.proc.ioctl(vm.iommufd, IOMMU_IOAS_IOVA_RANGES, ranges), "EMSGSIZE");
    expect(rv.getUint32(8, true)).toBe(1);
    rv.setBigUint64(16, 32n, true);
    await b.proc.ioctl(vm.iommufd, IOMMU_IOAS_IOVA_RANGES, ranges);
    expect(rv.getBigUint64(40, true)).toBe(2n ** 48n - 1n);
    expect(rv.getBigUint64(24, true)).toBe(BigInt(PAGE_SIZE));

    const unmap = new Uint8Array(24);
    const uv = new DataView(unmap.buffer);
    uv.setUint32(0, 24, true);
    uv.setUint32(4, ioas, true);
    uv.setBigUint64(8, 0x4000n, true);
    uv.setBigUint64(16, BigInt(PAGE_SIZE), true);
    await b.proc.ioctl(vm.iommufd, IOMMU_IOAS_UNMAP, unmap);
    expect(uv.getBigUint64(16, true)).toBe(BigInt(PAGE_SIZE));

    const info = new Uint8Array(8);
    new DataView(info.buffer).setUint32(0, 8, true);
    await b.proc.ioctl(vm.iommufd, IOMMU_LIVEUPDATE_GET_INFO, info);
    expect(new DataView(info.buffer).getUint32(4, true)).toBe(1);

    // Envelope errors.
    await rejects(() => b.proc.ioctl(vm.iommufd, 0x3b00, alloc), "ENOTTY");
    await rejects(() => b.proc.ioctl(vm.iommufd, IOMMU_IOAS_ALLOC, undefined), "EFAULT");
    const small = new Uint8Array(12);
    new DataView(small.buffer).setUint32(0, 8, true);
    await rejects(() => b.proc.ioctl(vm.iommufd, IOMMU_IOAS_ALLOC, small), "EINVAL");
    const big = new Uint8Array(16);
    new DataView(big.buffer).setUint32(0, 16, true);
    big[13] = 1;
    await rejects(() => b.proc.ioctl(vm.iommufd, IOMMU_IOAS_ALLOC, big), "E2BIG");
    const m2 = new Uint8Array(40);
    new DataView(m2.buffer).setUint32(0, 40, true);
    new DataView(m2.buffer).setUint32(8, ioas, true);
    await rejects(() => b.proc.ioctl(vm.iommufd, IOMMU_IOAS_MAP, m2), "EFAULT");
  });
});
