// The quickstart live update (the README's main job) in-process and through a machine image,
// and its command line.
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseQuickstartArgs } from "../src/args.js";
import { runQuickstart } from "../src/quickstart.js";
import { formatQuickstartReport } from "../src/report.js";

describe("quickstart", () => {
  it("passes every check in one process, with zero pages copied", async () => {
    const r = await runQuickstart({ memory: "64 MiB" });
    expect(r.checks.filter((c) => !c.ok)).toEqual([]);
    expect(r.checks.length).toBe(10);
    expect(r.pagesCopied).toBe(0);
    expect(r.memfdPages).toBe(322);
    expect(r.sessions).toBe(2);
    expect(r.files).toBe(5);
    expect(r.records.map((x) => x.handover.record.size)).toEqual([1048576n, 0n, 53n, 262144n, 32n]);
    expect(r.blackoutMs).toBeGreaterThan(0);
    const text = formatQuickstartReport(r);
    expect(text).toContain("pages copied         0 of 322");
    expect(text).toContain('session "vm-0": 3 file(s)');
    // In-process the report is what kernel#2 received, FLBs included (the memfd handler has none).
    expect(r.handoverScope).toBe("received");
    expect(text).toContain("handover as kernel#2 received it (liveupdate.received");
    expect(r.handover.liveupdateNumber).toBe(1n);
    expect(Object.isFrozen(r.handover.sessions[0]!.files[0])).toBe(true); // the received view is frozen
    expect(text).toContain("FLBs: 0");
    expect(text).toContain("256 folio(s) listed in 1 page(s) + 1 chunk page(s)");
    expect(text.trimEnd().endsWith("live update OK")).toBe(true);
  });

  it("kexecs through a kept machine image that luo inspect can read", async () => {
    const dir = await mkdtemp(join(tmpdir(), "quickstart-"));
    try {
      const image = join(dir, "m.img");
      const r = await runQuickstart({ memory: "64 MiB", saveImage: image });
      expect(r.checks.every((c) => c.ok)).toBe(true);
      expect((await stat(image)).size).toBeGreaterThan(1024 * 1024);
      expect(r.handover.sessions.map((s) => s.name)).toEqual(["vm-0", "vm-1"]);
      expect(formatQuickstartReport(r)).toContain(`luo inspect ${image}`);
      expect(r.handoverScope).toBe("inspect");
      expect(formatQuickstartReport(r)).toContain("FLBs: 0");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("parses its arguments, tolerating a leading --", () => {
    expect(parseQuickstartArgs([])).toEqual({ run: true });
    expect(parseQuickstartArgs(["--save-image", "m.img"])).toEqual({ run: true, saveImage: "m.img" });
    expect(parseQuickstartArgs(["--", "--save-image", "m.img"])).toEqual({ run: true, saveImage: "m.img" });
    expect(parseQuickstartArgs(["--save-image=x/m.img"])).toEqual({ run: true, saveImage: "x/m.img" });
    expect(parseQuickstartArgs(["--save-image"])).toMatchObject({ run: false, status: 2 });
    expect(parseQuickstartArgs(["--bogus"])).toMatchObject({ run: false, status: 2 });
    expect(parseQuickstartArgs(["--help"])).toMatchObject({ run: false, status: 0 });
  });
});
