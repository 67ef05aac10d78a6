// The main job end to end: guests under luod through one live update, in process and with the
// next kernel booted from the machine image in a child process, in both vfio modes; a VMM that
// dies during the barrier; a freeze failure on one device; iommufd phase 1; bad options.
import { describe, expect, it } from "vitest";
import { isLiveUpdateError } from "@luo/core";
import { runFleet } from "../src/fleet.js";
import { fleetConfig } from "../src/host.js";
import type { FleetReport } from "../src/report.js";

const SMALL = { sizesMiB: [8, 12], stepsBefore: 12, stepsAfter: 6 } as const;

function expectUpdated(r: FleetReport, guests: number, mode: "reset" | "continuous"): void {
  expect(r.guests.map((g) => [g.name, g.outcome])).toEqual(
    Array.from({ length: guests }, (_, i) => [`vm-${i}`, "updated"]),
  );
  for (const g of r.guests) {
    expect(g.problems).toEqual([]);
    expect(g.checks).toEqual({
      hashChain: true,
      dma: true,
      inFlight: true,
      zeroCopy: true,
      finished: true,
      noPageCopied: true,
    });
    expect(g.pagesCopied).toBe(0);
    expect(g.pagesHandedOver).toBe((g.ramMiB << 8) + 1); // guest RAM in 4 KiB frames + the vCPU page
    expect(g.phases.map((p) => p.name)).toEqual([
      "pause",
      "preserve",
      "freeze",
      "kexec",
      "boot",
      "retrieve",
      "restore",
      "resume",
    ]);
    // The job in flight at the update: dropped by the reset and sent again, or finished in the gap.
    expect(g.inFlight).toBe(mode === "reset" ? "dropped-resubmitted" : "completed-in-gap");
    expect(g.dmaResubmitted).toBe(mode === "reset" ? 1 : 0);
    expect(g.blackoutMs).toBeGreaterThan(0);
    expect(g.dmaBlackoutMs).toBeGreaterThan(0);
    expect(g.dmaBlackoutMs!).toBeLessThanOrEqual(g.blackoutMs!);
  }
  expect(r.totals).toMatchObject({ updated: guests, lost: 0, pagesCopied: 0 });
  expect(r.totals.checksPassed).toBe(r.totals.checksTotal);
  expect(r.luodOwnSession).toBe("finished");
  expect(r.ok).toBe(true);
}

/** The next kernel's retrieve events of guest files (luod's own session "luod" is left out). */
function guestFilesRetrieved(r: FleetReport): FleetReport["trace"]["traceEvents"] {
  return r.trace.traceEvents.filter(
    (e) => e.name === "file:retrieved" && String(e.args?.["session"]).startsWith("vm-"),
  );
}

describe.each(["reset", "continuous"] as const)("the fleet in vfio %s mode", (mode) => {
  it.each([1, 4])("%i guest(s), next kernel in process", async (guests) => {
    const r = await runFleet({ ...SMALL, guests, mode });
    expectUpdated(r, guests, mode);
    expect(r.update).toEqual({ ok: true, lost: [] });
  });

  it.each([1, 4])("%i guest(s), next kernel from the machine image in a child process", async (guests) => {
    const r = await runFleet({ ...SMALL, guests, mode, image: true });
    expectUpdated(r, guests, mode);
    // Both kernels' events are in the one trace, on one clock.
    const rows = r.trace.traceEvents.filter((e) => e.ph === "M").map((e) => e.args?.["name"]);
    expect(rows).toEqual(expect.arrayContaining(["kernel 1", "kernel 2", "luod", "vm-0"]));
    const k2 = guestFilesRetrieved(r);
    expect(k2).toHaveLength(4 * guests);
    const freeze = r.fleetPhases.find((p) => p.name === "freeze")!;
    for (const e of k2) expect(e.ts / 1000).toBeGreaterThan(freeze.end);
  });
});

describe("faults", () => {
  it("a VMM that dies while preparing loses its guest; the others are updated", async () => {
    const r = await runFleet({ ...SMALL, guests: 3, faults: { 1: { crashInPrepare: true } } });
    expect(r.update).toEqual({ ok: true, lost: ["vmm-1"] });
    expect(r.guests.map((g) => g.outcome)).toEqual(["updated", "lost", "updated"]);
    expect(r.guests[1]!.problems).toEqual(["its VMM died during the update"]);
    expect(r.guests[1]!.pagesHandedOver).toBe(0);
    for (const g of [r.guests[0]!, r.guests[2]!]) {
      expect(g.problems).toEqual([]);
      expect(Object.values(g.checks).every(Boolean)).toBe(true);
    }
    // Only the surviving guests' sessions crossed: their four files each.
    expect(guestFilesRetrieved(r)).toHaveLength(8);
    expect(r.luodOwnSession).toBe("finished");
    expect(r.ok).toBe(false);
  });

  it("a freeze failure on one device abandons the update; every guest runs on with nothing lost", async () => {
    const r = await runFleet({ ...SMALL, guests: 3, faults: { 0: { leaveIrqsOn: true } } });
    expect(r.update.ok).toBe(false);
    expect(r.update.stage).toBe("kexec");
    expect(r.update.error).toContain("interrupts are still enabled");
    expect(r.update.error).toContain('session "vm-0", token 4, vfio-pci-v1');
    expect(r.guests.map((g) => [g.outcome, g.checks, g.problems])).toEqual(
      Array.from({ length: 3 }, () => ["resumed", { resumedOnKernel1: true }, []]),
    );
    expect(r.fleetPhases.map((p) => p.name)).toEqual(["freeze"]);
    expect(r.ok).toBe(false);
  });
});

describe("iommufd phase 1", () => {
  it("guest RAM and vCPUs come back; the device stays with the preserved domain", async () => {
    const r = await runFleet({ ...SMALL, guests: 1, iommu: "phase1", mode: "continuous" });
    const g = r.guests[0]!;
    expect(g.outcome).toBe("updated");
    expect(g.inFlight).toBe("device-held");
    expect(g.checks).toEqual({
      hashChain: true,
      zeroCopy: true,
      deviceHeld: true,
      finishRefused: true,
      noPageCopied: true,
    });
    expect(g.dmaBlackoutMs).toBeUndefined();
    expect(r.luodOwnSession).toBe("waiting");
    expect(r.ok).toBe(true);
  });
});

describe("options", () => {
  it.each([
    [{ guests: 0 }, "guests must be at least 1"],
    [{ guests: 32 }, "guests must be an integer from 0 to 31"],
    [{ sizesMiB: [4] }, "below the minimum of 8 MiB"],
    [{ sizesMiB: [] }, "non-empty list"],
    [{ mode: "sometimes" }, 'vfio mode must be "reset" or "continuous"'],
    [{ iommu: "phase3" }, 'iommufd behaviour must be "restore" or "phase1"'],
    [{ gapNs: -1 }, "gapNs must be an integer"],
  ])("%j is EINVAL", (options, message) => {
    let err: unknown;
    try {
      fleetConfig(options as never);
    } catch (e) {
      err = e;
    }
    expect(isLiveUpdateError(err, "EINVAL")).toBe(true);
    expect((err as Error).message).toContain(message);
  });
});
