// "iommufd-v1" and the IOMMU FLB through live updates: every preserve error with "nothing else
// changed", the immutable IOAS and busy devices, closing the session, kexec in both behaviours
// (DMA keeps translating to the same pages, no page copied), restore by token, FINISH rules,
// page accounting back to baseline, FLB records decoded from raw bytes, corrupt FLB → panic.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  LiveUpdateError,
  definePlugin,
  KernelPanicError,
  PAGE_SIZE,
  inspectHandover,
  type SessionHandle,
} from "@luo/core";
import { memfd, memfdFile, memfdMmap, memfdPages } from "@luo/memfd-handler";
import {
  IOMMU_LUO_FLB_COMPATIBLE,
  IOMMU_OBJ_INCOMING,
  decodeIommuFlb,
  hwptAlloc,
  hwptMarkPreserve,
  hwptRestore,
  ioasAlloc,
  ioasMapFile,
  ioasMapUser,
  ioasUnmap,
  iommuFor,
  iommuUnitLoader,
  iommuUnit,
  iommufd,
  iommufdBind,
  iommufdDestroy,
  iommufdFile,
  iommufdLiveUpdateInfo,
  iommufdOpen,
} from "@luo/iommufd-handler";
import { Machine } from "@luo/core";
import { describe, expect, it } from "vitest";
import {
  DEV_RID,
  RAM_IOVA,
  boot,
  iommuMachine,
  kexec,
  pattern,
  rejects,
  vmSetup,
  type Booted,
  type Vm,
} from "./helpers.js";
import { TestDeviceFile } from "./device.js";

const SIZE = 16 * PAGE_SIZE;
const RAM_TOKEN = 1n;
const IOMMUFD_TOKEN = 2n;
const HWPT_TOKEN = 0x77n;

/** What must not change when an operation fails. */
function snapshot(b: Booted, vm: Vm) {
  const ictx = iommufdFile(b.proc, vm.iommufd);
  const ioas = ictx.ioas(vm.ioas);
  return {
    stats: b.machine.stats(),
    areas: ioas.areas.map((a) => [a.iova, a.length]),
    immutable: ioas.immutable,
    hwptPreserved: ictx.hwpt(vm.hwpt).preserved,
    preserved: ictx.preserved,
    context: vm.unit.context(DEV_RID),
    refs: ictx.refCount,
  };
}

/** Preserves the VM's device the way vfio does (its file, after the iommufd). */
async function preserveDevice(b: Booted, s: SessionHandle, vm: Vm, token = 3n): Promise<number> {
  const fd = b.proc.installFile(new TestDeviceFile(vm.device));
  await s.preserveFd(fd, token);
  return fd;
}

/** Boots, sets up the VM, marks its HWPT and preserves memfd then iommufd in session "vm". */
async function preservedVm(mode: "restore" | "phase1" = "restore") {
  const b = await boot(iommuMachine(), mode);
  const vm = await vmSetup(b, SIZE);
  hwptMarkPreserve(b.proc, vm.iommufd, vm.hwpt, HWPT_TOKEN);
  const s = await b.dev.createSession("vm");
  await s.preserveFd(vm.ram, RAM_TOKEN);
  await s.preserveFd(vm.iommufd, IOMMUFD_TOKEN);
  return { b, vm, s };
}

describe("iommufd-v1 preserve", () => {
  it("mark-preserve: a token reused in the same iommufd is EADDRINUSE; other iommufds may reuse it", async () => {
    const b = await boot(iommuMachine());
    const vm = await vmSetup(b, SIZE);
    const h2 = hwptAlloc(b.proc, vm.iommufd, vm.device.id, vm.ioas);
    hwptMarkPreserve(b.proc, vm.iommufd, vm.hwpt, 5);
    await rejects(() => hwptMarkPreserve(b.proc, vm.iommufd, h2, 5), "EADDRINUSE");
    expect(iommufdFile(b.proc, vm.iommufd).hwpt(h2).token).toBeUndefined();
    hwptMarkPreserve(b.proc, vm.iommufd, h2, 6);
    await rejects(() => hwptMarkPreserve(b.proc, vm.iommufd, vm.ioas, 7), "EINVAL");
    await rejects(() => hwptMarkPreserve(b.proc, vm.iommufd, 99, 7), "ENOENT");
  });

  it("the iommufd before its memfd is ENOENT, and nothing changes", async () => {
    const b = await boot(iommuMachine());
    const vm = await vmSetup(b, SIZE);
    hwptMarkPreserve(b.proc, vm.iommufd, vm.hwpt, HWPT_TOKEN);
    const s = await b.dev.createSession("vm");
    const before = snapshot(b, vm);
    await rejects(() => s.preserveFd(vm.iommufd, IOMMUFD_TOKEN), "ENOENT");
    expect(snapshot(b, vm)).toEqual(before);
    // A memfd preserved in another session does not count either.
    const other = await b.dev.createSession("other");
    await other.preserveFd(vm.ram, RAM_TOKEN);
    const before2 = snapshot(b, vm);
    await rejects(() => s.preserveFd(vm.iommufd, IOMMUFD_TOKEN), "ENOENT");
    expect(snapshot(b, vm)).toEqual(before2);
    // The IOAS is still mutable.
    ioasMapFile(b.proc, vm.iommufd, vm.ram, 0, { ioasId: vm.ioas, length: PAGE_SIZE });
  });

  it("a memfd without SEAL|GROW|SHRINK when mapped is EINVAL, even if sealed later", async () => {
    const b = await boot(iommuMachine());
    const vm = await vmSetup(b, SIZE, false);
    hwptMarkPreserve(b.proc, vm.iommufd, vm.hwpt, HWPT_TOKEN);
    const s = await b.dev.createSession("vm");
    await s.preserveFd(vm.ram, RAM_TOKEN);
    const before = snapshot(b, vm);
    await rejects(() => s.preserveFd(vm.iommufd, IOMMUFD_TOKEN), "EINVAL");
    expect(snapshot(b, vm)).toEqual(before);
  });

  it("process memory (IOAS_MAP) in a preserved IOAS is EINVAL; a unit without support EOPNOTSUPP", async () => {
    const b = await boot(iommuMachine());
    const vm = await vmSetup(b, SIZE);
    const mapping = memfdMmap(b.proc, vm.ram, { length: SIZE });
    ioasMapUser(b.proc, vm.iommufd, mapping, 0, { ioasId: vm.ioas, length: PAGE_SIZE, write: false });
    hwptMarkPreserve(b.proc, vm.iommufd, vm.hwpt, HWPT_TOKEN);
    const s = await b.dev.createSession("vm");
    await s.preserveFd(vm.ram, RAM_TOKEN);
    const before = snapshot(b, vm);
    await rejects(() => s.preserveFd(vm.iommufd, IOMMUFD_TOKEN), "EINVAL");
    expect(snapshot(b, vm)).toEqual(before);

    const m2 = new Machine({ memory: "64 MiB", hardware: [iommuUnit({ name: "old", liveUpdate: false })] });
    const b2 = await boot(m2);
    const vm2 = await vmSetup(b2, SIZE);
    hwptMarkPreserve(b2.proc, vm2.iommufd, vm2.hwpt, HWPT_TOKEN);
    const s2 = await b2.dev.createSession("vm");
    await s2.preserveFd(vm2.ram, RAM_TOKEN);
    const before2 = snapshot(b2, vm2);
    await rejects(() => s2.preserveFd(vm2.iommufd, IOMMUFD_TOKEN), "EOPNOTSUPP");
    expect(snapshot(b2, vm2)).toEqual(before2);
  });

  it("afterwards the IOAS is immutable, the HWPT cannot go, devices are EBUSY; closing the session undoes it", async () => {
    const { b, vm, s } = await preservedVm();
    const preservedPages = b.machine.stats().preservedPages;
    await rejects(
      () => ioasMapFile(b.proc, vm.iommufd, vm.ram, 0, { ioasId: vm.ioas, length: PAGE_SIZE }),
      "EBUSY",
    );
    await rejects(() => ioasUnmap(b.proc, vm.iommufd, vm.ioas, RAM_IOVA, SIZE), "EBUSY");
    await rejects(() => iommufdDestroy(b.proc, vm.iommufd, vm.hwpt), "EBUSY");
    await rejects(() => hwptMarkPreserve(b.proc, vm.iommufd, vm.hwpt, 9), "EBUSY");
    // Device side: wrong order first (a device of an unmarked HWPT), then the real one.
    const dfd = await preserveDevice(b, s, vm);
    await rejects(() => preserveDevice(b, s, vm, 4n), "EBUSY");
    await rejects(() => Promise.resolve().then(() => vm.device.detach()), "EBUSY");
    await rejects(() => Promise.resolve().then(() => vm.device.attach(vm.ioas)), "EBUSY");
    expect(dfd).toBeGreaterThan(0);
    const top = iommufdFile(b.proc, vm.iommufd).hwpt(vm.hwpt).domain.pt.top;
    expect(b.kernel.kho.isPreserved(top)).toBe(true);
    await s.close();
    expect(b.kernel.kho.isPreserved(top)).toBe(false);
    vm.device.detach();
    vm.device.attach(vm.hwpt);
    expect(b.machine.stats().preservedPages).toBeLessThan(preservedPages);
    // Fully usable and mutable again.
    expect(ioasUnmap(b.proc, vm.iommufd, vm.ioas, RAM_IOVA, SIZE)).toBe(SIZE);
    ioasMapFile(b.proc, vm.iommufd, vm.ram, 0, { ioasId: vm.ioas, length: SIZE, iova: RAM_IOVA });
    expect(vm.port.dmaRead(RAM_IOVA, 4)).toEqual(pattern(SIZE, 1).subarray(0, 4));
    iommufdDestroy(b.proc, vm.iommufd, hwptAlloc(b.proc, vm.iommufd, vm.device.id, vm.ioas));
  });

  it("device preserve: before its iommufd ENOENT, on an unmarked HWPT EINVAL, unattached ENOENT", async () => {
    const b = await boot(iommuMachine());
    const vm = await vmSetup(b, SIZE);
    const s = await b.dev.createSession("vm");
    await s.preserveFd(vm.ram, RAM_TOKEN);
    const before = b.machine.stats();
    await rejects(() => preserveDevice(b, s, vm), "EINVAL"); // HWPT not marked
    hwptMarkPreserve(b.proc, vm.iommufd, vm.hwpt, HWPT_TOKEN);
    await rejects(() => preserveDevice(b, s, vm), "ENOENT"); // iommufd not preserved
    expect(b.machine.stats()).toEqual(before);
    await s.preserveFd(vm.iommufd, IOMMUFD_TOKEN);
    const d2 = iommufdBind(b.proc, vm.iommufd, { rid: { segment: 0, bdf: 0x200 }, name: "idle" });
    await rejects(() => s.preserveFd(b.proc.installFile(new TestDeviceFile(d2)), 5n), "ENOENT"); // not attached
    await preserveDevice(b, s, vm, 6n);
  });
});

describe("iommufd-v1 across kexec", () => {
  it("restore: the device keeps translating to the same pages; restore by token; FINISH after moving the device", async () => {
    const { b, vm, s } = await preservedVm();
    await preserveDevice(b, s, vm);
    const pagesBefore = memfdPages(memfdFile(b.proc, vm.ram));
    const top = iommufdFile(b.proc, vm.iommufd).hwpt(vm.hwpt).domain.pt.top;
    const k2 = await kexec(b);
    // The hardware never stopped: same context, same table, same bytes.
    expect(vm.unit.context(DEV_RID)?.root).toBe(top);
    expect(vm.port.dmaRead(RAM_IOVA, SIZE)).toEqual(pattern(SIZE, 1));
    vm.port.dmaWrite(RAM_IOVA + 3 * PAGE_SIZE, new Uint8Array([0xee, 0xff]));

    const s2 = await k2.dev.retrieveSession("vm");
    const ram2 = await s2.retrieveFd(RAM_TOKEN);
    expect(memfdPages(memfdFile(k2.proc, ram2))).toEqual(pagesBefore); // no page copied
    expect(k2.proc.pread(ram2, 2, 3 * PAGE_SIZE)).toEqual(new Uint8Array([0xee, 0xff]));
    const fresh = await iommufdOpen(k2.proc);
    expect(iommufdLiveUpdateInfo(k2.proc, fresh)).toEqual({ restoresHwpts: true });
    await rejects(() => hwptRestore(k2.proc, fresh, HWPT_TOKEN), "ENOTTY");
    await rejects(() => iommufdBind(k2.proc, fresh, { rid: DEV_RID, name: "dev" }), "EPERM");
    const ifd2 = await s2.retrieveFd(IOMMUFD_TOKEN);
    await rejects(() => s2.finish(), "EBUSY"); // token not reclaimed
    const dev2 = iommufdBind(k2.proc, ifd2, { rid: DEV_RID, name: "dev" });
    await rejects(() => hwptRestore(k2.proc, ifd2, 0x1234), "ENOENT");
    const restored = hwptRestore(k2.proc, ifd2, HWPT_TOKEN);
    await rejects(() => hwptRestore(k2.proc, ifd2, HWPT_TOKEN), "ENOENT");
    expect(dev2.hwpt?.id).toBe(restored);
    expect(iommufdFile(k2.proc, ifd2).hwpt(restored).domain.pt.top).toBe(top);
    expect(vm.port.dmaRead(RAM_IOVA, 2 * PAGE_SIZE)).toEqual(k2.proc.pread(ram2, 2 * PAGE_SIZE, 0));
    await rejects(() => s2.finish(), "EBUSY"); // the device is still on the restored HWPT

    // The VMM moves the device to a fresh IOAS + HWPT mapping the retrieved memfd.
    const ioas2 = ioasAlloc(k2.proc, ifd2);
    ioasMapFile(k2.proc, ifd2, ram2, 0, { ioasId: ioas2, length: SIZE, iova: RAM_IOVA });
    const hwpt2 = hwptAlloc(k2.proc, ifd2, dev2.id, ioas2);
    dev2.attach(hwpt2);
    expect(vm.port.dmaRead(RAM_IOVA + 3 * PAGE_SIZE, 2)).toEqual(new Uint8Array([0xee, 0xff]));
    await s2.finish();
    iommufdDestroy(k2.proc, ifd2, restored);

    // Page accounting back to baseline: everything handed over is either in use or freed.
    expect(k2.kernel.incoming?.unrestoredPages).toBe(0);
    dev2.unbind();
    await s2.close();
    k2.proc.close(ifd2);
    k2.proc.close(ram2);
    k2.proc.close(fresh);
    const fresh2 = await boot(iommuMachine());
    expect(k2.machine.stats()).toEqual(fresh2.machine.stats());
  });

  it("phase 1: retrieve EOPNOTSUPP (sticky), bind to a new iommufd EPERM, FINISH EBUSY, DMA keeps flowing", async () => {
    const { b, vm, s } = await preservedVm("phase1");
    await preserveDevice(b, s, vm);
    const k2 = await kexec(b, "phase1");
    const s2 = await k2.dev.retrieveSession("vm");
    const ram2 = await s2.retrieveFd(RAM_TOKEN);
    await rejects(() => s2.retrieveFd(IOMMUFD_TOKEN), "EOPNOTSUPP");
    await rejects(() => s2.retrieveFd(IOMMUFD_TOKEN), "EOPNOTSUPP");
    const fresh = await iommufdOpen(k2.proc);
    expect(iommufdLiveUpdateInfo(k2.proc, fresh)).toEqual({ restoresHwpts: false });
    await rejects(() => iommufdBind(k2.proc, fresh, { rid: DEV_RID, name: "dev" }), "EPERM");
    await rejects(() => s2.finish(), "EBUSY");
    await rejects(() => s2.finish(), "EBUSY");
    vm.port.dmaWrite(RAM_IOVA + 7, new Uint8Array([5]));
    expect(k2.proc.pread(ram2, 1, 7)).toEqual(new Uint8Array([5]));
    // Other devices are free to bind.
    iommufdBind(k2.proc, fresh, { rid: { segment: 0, bdf: 0x300 }, name: "other" });
  });

  it("a device that was not preserved is cut off at the next boot (context cleared)", async () => {
    const { b, vm } = await preservedVm();
    const k2 = await kexec(b);
    expect(vm.unit.context(DEV_RID)).toBeUndefined();
    expect(() => vm.port.dmaRead(RAM_IOVA, 1)).toThrow(expect.objectContaining({ code: "EFAULT" }));
    // Without a preserved device record, a new iommufd may bind it.
    iommufdBind(k2.proc, await iommufdOpen(k2.proc), { rid: DEV_RID, name: "dev" });
  });

  it("a next kernel whose boot fails leaves the IOMMU registers as they were (machine rollback)", async () => {
    const { b, vm } = await preservedVm();
    const ctx = vm.unit.context(DEV_RID);
    expect(ctx).toBeDefined();
    const failing = definePlugin({
      name: "fails",
      dependencies: ["iommufd"],
      register() {
        throw new LiveUpdateError("EIO", "driver probe failed");
      },
    });
    await rejects(() => b.kernel.kexec({ plugins: [memfd(), iommufd(), failing] }), "EIO");
    expect(vm.unit.context(DEV_RID)).toEqual(ctx); // the failed kernel's IOMMU init was undone
    const k2 = await b.machine.boot({ plugins: [memfd(), iommufd()] });
    expect(vm.unit.context(DEV_RID)).toBeUndefined(); // not preserved: cleared by a real boot
    expect(k2.halted).toBe(false);
  });

  it("the IOMMU FLB's records decode from raw preserved bytes in a saved machine image, which boots and translates", async () => {
    const { b, vm, s } = await preservedVm();
    await preserveDevice(b, s, vm);
    const top = iommufdFile(b.proc, vm.iommufd).hwpt(vm.hwpt).domain.pt.top;
    const did = vm.unit.context(DEV_RID)!.domainId;
    const dir = await mkdtemp(join(tmpdir(), "iommufd-image-"));
    try {
      const path = join(dir, "m.img");
      expect(await b.kernel.kexec({ saveTo: path })).toBeUndefined();
      const m2 = await Machine.load(path, { hardware: [iommuUnitLoader] });
      const flb = inspectHandover(m2).flbs.find((f) => f.compatible === IOMMU_LUO_FLB_COMPATIBLE)!;
      expect(flb.count).toBe(2n); // the iommufd and the device
      const c = decodeIommuFlb(m2, flb.data);
      expect(c.version).toBe(1n);
      expect(c.domains.map((d) => [d.topTablePhys, d.topLevel, d.vasz, d.refCount])).toEqual([
        [top, 3, 48, 1],
      ]);
      expect(c.devices.map((d) => [d.pciDomain, d.devid, d.attachmentId, d.domainPhys])).toEqual([
        [0, DEV_RID.bdf, BigInt(did), c.domains[0]!.phys],
      ]);
      expect(c.units.map((u) => [u.token, u.type, u.refCount])).toEqual([[vm.unit.token, 0n, 1]]);
      // The image carries the IOMMU unit: after loading, the device still translates.
      const unit2 = iommuFor(m2, DEV_RID);
      expect(unit2.port(DEV_RID).dmaRead(RAM_IOVA, 64)).toEqual(pattern(SIZE, 1).subarray(0, 64));
      const m3 = await Machine.load(path, { hardware: [iommuUnitLoader] }); // m2 was inspected
      const unit3 = iommuFor(m3, DEV_RID);
      const k2 = await boot(m3);
      expect(unit3.context(DEV_RID)?.root).toBe(top);
      const c2 = decodeIommuFlb(m3, flb.data);
      expect(c2.devices[0]!.flags & IOMMU_OBJ_INCOMING).toBe(IOMMU_OBJ_INCOMING); // taken over at boot
      const s2 = await k2.dev.retrieveSession("vm");
      await s2.retrieveFd(RAM_TOKEN);
      expect(await s2.retrieveFd(IOMMUFD_TOKEN)).toBeGreaterThan(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("a wrong FLB version or a broken array chain panics the next boot", async () => {
    for (const damage of ["version", "chain"] as const) {
      const { b } = await preservedVm();
      const machine = b.machine;
      const flbData = b.kernel.liveupdate
        .handingOver()
        .flbs.find((f) => f.compatible === IOMMU_LUO_FLB_COMPATIBLE)!.data;
      if (damage === "version") machine.writeU64(flbData, 2n);
      else machine.writeU64(flbData + 16n, machine.readU64(flbData + 8n) + 0x100000n); // domain array head off somewhere
      const e = await kexec(b).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(KernelPanicError);
      expect((e as Error).message).toMatch(damage === "version" ? /version 2/ : /cannot be restored/);
    }
  });
});
