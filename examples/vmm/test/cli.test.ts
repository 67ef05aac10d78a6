// The `./dev demo` command line: help, usage errors (exit 2), a JSON report with the trace and
// the timeline written (exit 0), and exit 1 when a check fails.
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const MAIN = join(dirname(fileURLToPath(import.meta.url)), "..", "dist", "main.js");
const exec = promisify(execFile);

async function demo(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [MAIN, ...args], { maxBuffer: 64 << 20 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

describe("./dev demo", () => {
  it("--help prints the options and exits 0", async () => {
    const r = await demo(["--help"]);
    expect(r.code).toBe(0);
    for (const o of ["--guests", "--sizes", "--mode", "--iommu", "--image", "--json", "--fault"])
      expect(r.stdout).toContain(o);
  });

  it.each([
    [["--mode", "sometimes"], 'vfio mode must be "reset" or "continuous"'],
    [["--guests", "two"], "--guests: not a number"],
    [["--fault", "boom:1"], "--fault: expected crash:I or irqs-on:I"],
    [["--colour"], "Unknown option '--colour'"],
    [["--sizes", "4"], "below the minimum of 8 MiB"],
  ])("%j is a usage error (exit 2)", async (args, message) => {
    const r = await demo(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(message);
    expect(r.stderr).toContain("usage: ./dev demo");
  });

  it("--json reports one updated guest, writes the trace and the timeline, exits 0", async () => {
    const out = mkdtempSync(join(tmpdir(), "luo-vmm-cli-"));
    const r = await demo(["--", "--guests", "1", "--sizes", "8", "--json", "--out", out]);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout) as {
      ok: boolean;
      guests: Array<{ outcome: string; pagesCopied: number }>;
      files: { trace: string; timeline: string };
    };
    expect(report.ok).toBe(true);
    expect(report.guests).toMatchObject([{ outcome: "updated", pagesCopied: 0 }]);
    expect(report.files).toEqual({ trace: join(out, "trace.json"), timeline: join(out, "timeline.html") });
    const trace = JSON.parse(readFileSync(report.files.trace, "utf8")) as { traceEvents: unknown[] };
    expect(trace.traceEvents.length).toBeGreaterThan(20);
    expect(existsSync(report.files.timeline)).toBe(true);
    // Self-contained: no script, and no URL but the SVG namespace name.
    const html = readFileSync(report.files.timeline, "utf8");
    expect(html).not.toContain("<script");
    expect(html.match(/https?:\/\/[^"\s]*/g)).toEqual(["http://www.w3.org/2000/svg"]);
  });

  it("prints the text report and exits 1 when a guest is lost", async () => {
    const out = mkdtempSync(join(tmpdir(), "luo-vmm-cli-"));
    const r = await demo(["--guests", "2", "--sizes", "8", "--fault", "crash:1", "--out", out]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain("lost during the barrier: vmm-1");
    expect(r.stdout).toContain("vm-1: its VMM died during the update");
    expect(r.stdout).toContain("result: FAILED");
  });
});
