// Fault injection on "iommufd-v1": a failure at every page allocation and every KHO folio
// preservation of PRESERVE (the FLB's arrays, the record, each page-table page, the device record) leaves
// everything as it was, and the next attempt succeeds; after kexec, a corrupt record makes
// RETRIEVE fail sticky without restoring a page, and a restore whose page table cannot be taken
// over changes nothing.
import { LiveUpdateError, PAGE_SIZE } from "@luo/core";
import { hwptMarkPreserve, hwptRestore, iommufdBind, iommufdFile } from "@luo/iommufd-handler";
import { describe, expect, it } from "vitest";
import { TestDeviceFile } from "./device.js";
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

const SIZE = 16 * PAGE_SIZE;

/**
 * Makes the `n`-th page allocation (`ENOMEM`) or KHO folio preservation from now on fail; returns
 * a disarm function and the number of steps seen.
 */
function armFault(b: Booted, n: number): { disarm: () => void; calls: () => number } {
  const { machine, kho } = { machine: b.machine, kho: b.kernel.kho };
  const alloc = machine.allocPages.bind(machine);
  const preserveFolio = kho.preserveFolio.bind(kho);
  let calls = 0;
  const step = (): void => {
    if (calls++ === n) throw new LiveUpdateError("ENOMEM", `injected failure at step ${n}`);
  };
  machine.allocPages = (order?: number) => {
    step();
    return alloc(order);
  };
  kho.preserveFolio = (phys: bigint, order: number) => {
    step();
    preserveFolio(phys, order);
  };
  return {
    disarm: () => {
      machine.allocPages = alloc;
      kho.preserveFolio = preserveFolio;
    },
    calls: () => calls,
  };
}

function state(b: Booted, vm: Vm) {
  const ictx = iommufdFile(b.proc, vm.iommufd);
  return {
    stats: b.machine.stats(),
    immutable: ictx.ioas(vm.ioas).immutable,
    preserved: ictx.hwpt(vm.hwpt).preserved,
    ictx: ictx.preserved,
    flb: b.kernel.liveupdate.handingOver().flbs.length,
    refs: ictx.refCount,
    files: b.kernel.liveupdate.handingOver().sessions.find((x) => x.name === "vm")?.files.length,
  };
}

describe("iommufd-v1 fault injection", () => {
  it("a failure at every step of preserving the iommufd and then the device leaves everything as before", async () => {
    const b = await boot(iommuMachine());
    const vm = await vmSetup(b, SIZE);
    hwptMarkPreserve(b.proc, vm.iommufd, vm.hwpt, 9);
    const s = await b.dev.createSession("vm");
    await s.preserveFd(vm.ram, 1);
    const dfd = b.proc.installFile(new TestDeviceFile(vm.device));
    // The iommufd allocates (FLB arrays, record) and preserves page-table pages; the device only
    // appends records to the FLB's existing array pages, so it has no step that can fail here.
    for (const [fd, token, minFailures] of [
      [vm.iommufd, 2, 5],
      [dfd, 3, 0],
    ] as const) {
      let failures = 0;
      for (let n = 0; ; n++) {
        const before = state(b, vm);
        const f = armFault(b, n);
        try {
          await s.preserveFd(fd, token);
        } catch (e) {
          f.disarm();
          expect((e as LiveUpdateError).code).toBe("ENOMEM");
          expect(state(b, vm)).toEqual(before);
          failures++;
          continue;
        }
        f.disarm();
        expect(f.calls()).toBe(n); // succeeded once the fault lay past the last step
        break;
      }
      expect(failures).toBeGreaterThanOrEqual(minFailures);
    }
    // Everything is preserved now and survives the live update.
    const k2 = await kexec(b);
    expect(vm.port.dmaRead(RAM_IOVA, 64)).toEqual(pattern(SIZE, 1).subarray(0, 64));
    const s2 = await k2.dev.retrieveSession("vm");
    await s2.retrieveFd(1);
    const ifd = await s2.retrieveFd(2);
    iommufdBind(k2.proc, ifd, { rid: DEV_RID, name: "dev" });
    expect(hwptRestore(k2.proc, ifd, 9)).toBeGreaterThan(0);
  });

  it("a corrupt record fails RETRIEVE sticky with nothing restored; FINISH stays vetoed; DMA goes on", async () => {
    const b = await boot(iommuMachine());
    const vm = await vmSetup(b, SIZE);
    hwptMarkPreserve(b.proc, vm.iommufd, vm.hwpt, 9);
    const s = await b.dev.createSession("vm");
    await s.preserveFd(vm.ram, 1);
    await s.preserveFd(vm.iommufd, 2);
    await s.preserveFd(b.proc.installFile(new TestDeviceFile(vm.device)), 3);
    const ser = b.kernel.liveupdate
      .handingOver()
      .sessions.find((x) => x.name === "vm")!
      .files.find((f) => f.token === 2n)!.data;
    for (const [what, at, value] of [
      ["count", 0n, 1n << 40n],
      ["domain", 8n, 0x1000n],
    ] as const) {
      const k = await bootCorrupt(b, vm, ser, at, value, what);
      expect(k).toBe(what);
    }
  });

  it("a restore whose page table cannot be taken over changes nothing", async () => {
    const b = await boot(iommuMachine());
    const vm = await vmSetup(b, SIZE);
    hwptMarkPreserve(b.proc, vm.iommufd, vm.hwpt, 9);
    const s = await b.dev.createSession("vm");
    await s.preserveFd(vm.ram, 1);
    await s.preserveFd(vm.iommufd, 2);
    const top = iommufdFile(b.proc, vm.iommufd).hwpt(vm.hwpt).domain.pt.top;
    const k2 = await kexec(b);
    // Point an unused top-level entry at a page that was not handed over.
    k2.machine.writeU64(top + 8n * 500n, (k2.machine.base + 3n) | 3n);
    const s2 = await k2.dev.retrieveSession("vm");
    await s2.retrieveFd(1);
    const ifd = await s2.retrieveFd(2);
    const unrestored = k2.kernel.incoming!.unrestoredPages;
    await rejects(() => hwptRestore(k2.proc, ifd, 9), "EINVAL");
    expect(k2.kernel.incoming!.unrestoredPages).toBe(unrestored);
    expect(iommufdFile(k2.proc, ifd).incoming!.entries[0]!.reclaimed).toBe(false);
    expect(iommufdFile(k2.proc, ifd).objects()).toEqual([]);
  });
});

/** Saves nothing: kexecs a copy of the scenario with the record damaged, checks, returns `what`. */
async function bootCorrupt(
  b: Booted,
  vm: Vm,
  ser: bigint,
  at: bigint,
  value: bigint,
  what: string,
): Promise<string> {
  // Each damage needs its own live update: rebuild the same scenario on a fresh machine.
  const b2 = await boot(iommuMachine());
  const vm2 = await vmSetup(b2, SIZE);
  hwptMarkPreserve(b2.proc, vm2.iommufd, vm2.hwpt, 9);
  const s = await b2.dev.createSession("vm");
  await s.preserveFd(vm2.ram, 1);
  await s.preserveFd(vm2.iommufd, 2);
  await s.preserveFd(b2.proc.installFile(new TestDeviceFile(vm2.device)), 3);
  const ser2 = b2.kernel.liveupdate
    .handingOver()
    .sessions.find((x) => x.name === "vm")!
    .files.find((f) => f.token === 2n)!.data;
  expect(ser2 - b2.machine.base).toBe(ser - b.machine.base); // same layout as the reference run
  void vm;
  const k2 = await kexec(b2);
  k2.machine.writeU64(ser2 + at, value);
  const s2 = await k2.dev.retrieveSession("vm");
  const unrestored = k2.kernel.incoming!.unrestoredPages;
  await rejects(() => s2.retrieveFd(2), "EINVAL");
  await rejects(() => s2.retrieveFd(2), "EINVAL");
  expect(k2.kernel.incoming!.unrestoredPages).toBe(unrestored);
  await rejects(() => s2.finish(), "EBUSY");
  expect(vm2.port.dmaRead(RAM_IOVA, 16)).toEqual(pattern(SIZE, 1).subarray(0, 16));
  return what;
}
