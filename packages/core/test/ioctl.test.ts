// The raw ioctl envelope of /dev/liveupdate and session fds, byte level.
import { describe, expect, it } from "vitest";
import {
  LIVEUPDATE_IOCTL_CREATE_SESSION as CREATE,
  LIVEUPDATE_IOCTL_RETRIEVE_SESSION as RETRIEVE,
  LIVEUPDATE_SESSION_FINISH as FINISH,
  LIVEUPDATE_SESSION_GET_NAME as GET_NAME,
  LIVEUPDATE_SESSION_PRESERVE_FD as PRESERVE,
  LIVEUPDATE_SESSION_RETRIEVE_FD as RETRIEVE_FD,
  Machine,
  type Kernel,
  type Process,
} from "@luo/core";
import { createTestFile, testHandlerPlugin } from "@luo/core/testing";
import { dec, enc, rejects } from "./helpers/luo.js";

function struct(
  size: number,
  fill: (dv: DataView, b: Uint8Array) => void = () => {},
  userLength = size,
): Uint8Array {
  const b = new Uint8Array(userLength);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, size, true);
  fill(dv, b);
  return b;
}
const named = (name: string, size = 72, userLength = size) =>
  struct(size, (_dv, b) => b.set(enc(name), 8), userLength);
const fdOf = (b: Uint8Array) => new DataView(b.buffer).getInt32(4, true);

async function setup(): Promise<{ k: Kernel; p: Process; dev: number }> {
  const k = await new Machine({ memory: "16 MiB" }).boot({ plugins: [testHandlerPlugin()] });
  const p = k.spawn("vmm");
  return { k, p, dev: await p.open("/dev/liveupdate") };
}

describe("ioctl envelope", () => {
  it("creates a session and reports its fd; GET_NAME copies the name back", async () => {
    const { p, dev } = await setup();
    const arg = named("vm-0");
    expect(await p.ioctl(dev, CREATE, arg)).toBe(0);
    const sfd = fdOf(arg);
    expect(p.file(sfd).description).toBe("[luo_session] vm-0");
    const out = struct(72);
    expect(await p.ioctl(sfd, GET_NAME, out)).toBe(0);
    expect(dec(out.subarray(8, 12))).toBe("vm-0");
    expect(out[12]).toBe(0);
  });

  it("checks the number, the size read, the command value, the size and the tail, in that order", async () => {
    const { p, dev } = await setup();
    await rejects(p.ioctl(dev, 0xba02, named("x")), "EINVAL"); // nr out of table
    await rejects(p.ioctl(dev, CREATE, new Uint8Array(2)), "EFAULT"); // size unreadable
    await rejects(p.ioctl(dev, CREATE), "EFAULT"); // NULL
    await rejects(p.ioctl(dev, 0x4048ba00, named("x")), "ENOTTY"); // _IOW bits
    await rejects(p.ioctl(dev, CREATE, named("x", 71)), "EINVAL"); // size < 72
    await rejects(p.ioctl(dev, CREATE, named("x", 80, 40)), "EFAULT"); // size > memory
    const tail = named("x", 80);
    tail[79] = 1;
    await rejects(p.ioctl(dev, CREATE, tail), "E2BIG");
    expect(await p.ioctl(dev, CREATE, named("x", 80))).toBe(0); // zero tail is fine
  });

  it("validates names: empty and 64 bytes without NUL are EINVAL, 63 bytes work", async () => {
    const { p, dev } = await setup();
    await rejects(p.ioctl(dev, CREATE, named("")), "EINVAL");
    await rejects(p.ioctl(dev, CREATE, named("a".repeat(64))), "EINVAL");
    expect(await p.ioctl(dev, CREATE, named("b".repeat(63)))).toBe(0);
    await rejects(p.ioctl(dev, CREATE, named("b".repeat(63))), "EEXIST");
  });

  it("session ioctls: number range, kind check before size check, reserved fields", async () => {
    const { k, p, dev } = await setup();
    const arg = named("s");
    await p.ioctl(dev, CREATE, arg);
    const sfd = fdOf(arg);
    await rejects(p.ioctl(sfd, 0xba3f, struct(16)), "EINVAL");
    await rejects(p.ioctl(sfd, 0xba44, struct(16)), "EINVAL");
    // RETRIEVE_FD on an outgoing session: EINVAL from the kind check even with a short size.
    await rejects(p.ioctl(sfd, RETRIEVE_FD, struct(4)), "EINVAL");
    await rejects(p.ioctl(sfd, PRESERVE, struct(15)), "EINVAL");
    const reserved = struct(72, (dv) => dv.setUint32(4, 1, true));
    await rejects(p.ioctl(sfd, GET_NAME, reserved), "EINVAL");
    const file = createTestFile(p, "f", enc("data"));
    const pres = struct(16, (dv) => {
      dv.setInt32(4, file, true);
      dv.setBigUint64(8, 0xffff_ffff_ffff_ffffn, true);
    });
    expect(await p.ioctl(sfd, PRESERVE, pres)).toBe(0);
    await rejects(p.ioctl(file, PRESERVE, pres), "ENOTTY"); // not a session fd

    const k2 = (await k.kexec())!;
    const q = k2.spawn("vmm");
    const dev2 = await q.open("/dev/liveupdate");
    const r = named("s");
    expect(await q.ioctl(dev2, RETRIEVE, r)).toBe(0);
    const s2 = fdOf(r);
    await rejects(q.ioctl(s2, PRESERVE, pres), "EINVAL");
    const rf = struct(16, (dv) => dv.setBigUint64(8, 0xffff_ffff_ffff_ffffn, true));
    expect(await q.ioctl(s2, RETRIEVE_FD, rf)).toBe(0);
    expect(dec(q.pread(fdOf(rf), 10, 0))).toBe("data");
    // FINISH's reserved field is documented "must be zero" but not checked (Q9).
    expect(
      await q.ioctl(
        s2,
        FINISH,
        struct(8, (dv) => dv.setUint32(4, 7, true)),
      ),
    ).toBe(0);
    await rejects(q.ioctl(dev2, RETRIEVE, named("s")), "EINVAL");
    await rejects(q.ioctl(dev2, RETRIEVE, named("zz")), "ENOENT");
  });
});
