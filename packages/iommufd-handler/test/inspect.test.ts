// `luo inspect --with` the iommufd extension, as a user runs it on a machine image written by a
// kexec: the compiled CLI loads the IOMMU unit from the image and prints the iommufd record and
// the IOMMU FLB decoded from raw preserved bytes (text and JSON); without the extension the image
// (which holds IOMMU hardware) cannot be loaded; a corrupt FLB is reported as the kernel panic.
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { PAGE_SIZE } from "@luo/core";
import { hwptMarkPreserve, iommufdFile } from "@luo/iommufd-handler";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TestDeviceFile } from "./device.js";
import { DEV_RID, boot, iommuMachine, vmSetup } from "./helpers.js";

const run = promisify(execFile);
const PKG = join(dirname(fileURLToPath(import.meta.url)), "..");
const CLI = join(PKG, "..", "core", "bin", "luo.js");
const EXT = join(PKG, "dist", "index.js");
let dir: string;
let image: string;
let bad: string;
let top: bigint;

async function savedImage(path: string, damage: boolean): Promise<void> {
  const b = await boot(iommuMachine());
  const vm = await vmSetup(b, 8 * PAGE_SIZE);
  hwptMarkPreserve(b.proc, vm.iommufd, vm.hwpt, 0x77);
  top = iommufdFile(b.proc, vm.iommufd).hwpt(vm.hwpt).domain.pt.top;
  const s = await b.dev.createSession("vm");
  await s.preserveFd(vm.ram, 1);
  await s.preserveFd(vm.iommufd, 2);
  await s.preserveFd(b.proc.installFile(new TestDeviceFile(vm.device)), 3);
  if (damage) {
    const flb = b.kernel.liveupdate.handingOver().flbs.find((f) => f.compatible === "iommu-liveupdate")!;
    b.machine.writeU64(flb.data, 7n);
  }
  await b.kernel.kexec({ saveTo: path });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "iommufd-inspect-"));
  image = join(dir, "m.img");
  bad = join(dir, "bad.img");
  await savedImage(bad, true);
  await savedImage(image, false);
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe("luo inspect --with the iommufd extension", () => {
  it("prints the iommufd record, the IOMMU FLB records and the unit's context entries", async () => {
    const { stdout } = await run(process.execPath, [CLI, "inspect", image, "--with", EXT]);
    expect(stdout).toMatch(/iommufd-v1/);
    expect(stdout).toMatch(/session "vm" token 2: iommufd record 0x[0-9a-f]+, 1 HWPT\(s\)/);
    expect(stdout).toMatch(/HWPT token 119 {2}domain 0x[0-9a-f]+ {2}reclaimed 0/);
    expect(stdout).toMatch(/FLB "iommu-liveupdate" at 0x[0-9a-f]+: version 1, count 2/);
    expect(stdout).toContain(`top table 0x${top.toString(16)} level 3 48-bit refs 1`);
    expect(stdout).toMatch(/device 0000:01:00\.0: domain id \d+ domain 0x[0-9a-f]+ unit 0x[0-9a-f]+ flags -/);
    expect(stdout).toMatch(/IOMMU unit dmar0 \(0x[0-9a-f]+\): 1 context entry/);
    const { stdout: json } = await run(process.execPath, [CLI, "inspect", image, "--json", "--with", EXT]);
    const parsed = JSON.parse(json) as {
      extensions: { iommufd: { flb: { version: string; devices: Array<{ rid: string }> } } };
    };
    expect(parsed.extensions.iommufd.flb.version).toBe("1");
    expect(parsed.extensions.iommufd.flb.devices.map((d) => d.rid)).toEqual(["0000:01:00.0"]);
    expect(DEV_RID.bdf).toBe(0x100);
  });

  it("fails without the extension (unknown hardware) and reports a corrupt FLB as the panic", async () => {
    const noExt = await run(process.execPath, [CLI, "inspect", image]).catch(
      (e: { code: number; stderr: string }) => e,
    );
    expect((noExt as { code: number }).code).toBe(1);
    expect((noExt as { stderr: string }).stderr).toMatch(/no loader for hardware "dmar0" of kind "iommu"/);
    const panic = await run(process.execPath, [CLI, "inspect", bad, "--with", EXT]).catch(
      (e: { code: number; stderr: string }) => e,
    );
    expect((panic as { code: number }).code).toBe(1);
    expect((panic as { stderr: string }).stderr).toMatch(/kernel panic: IOMMU FLB .* version 7/);
    const notExt = await run(process.execPath, [
      CLI,
      "inspect",
      image,
      "--with",
      join(PKG, "..", "core", "dist", "index.js"),
    ]).catch((e: { code: number; stderr: string }) => e);
    expect((notExt as { stderr: string }).stderr).toMatch(/exports no luo inspect extension/);
  });
});
