import { describe, expect, it } from "vitest";
import { ERRNO, KernelPanicError, LiveUpdateError } from "@luo/core";
import { toLiveUpdateError } from "@luo/core/internal";

describe("errors", () => {
  it("carries the code, a Node-style negative errno and the message", () => {
    const e = new LiveUpdateError("EBUSY", 'session "vm-0" is busy');
    expect(e.code).toBe("EBUSY");
    expect(e.errno).toBe(-16);
    expect(e.message).toContain('"vm-0"');
    expect(e).toBeInstanceOf(Error);
  });
  it("wraps foreign errors as EIO with cause and passes LiveUpdateError through", () => {
    const plain = new TypeError("boom");
    const w = toLiveUpdateError(plain, 'handler "x" preserve');
    expect(w.code).toBe("EIO");
    expect(w.cause).toBe(plain);
    const own = new LiveUpdateError("ENOENT", "nope");
    expect(toLiveUpdateError(own, "ctx")).toBe(own);
  });
  it("panics are LiveUpdateErrors with code EPANIC and the address", () => {
    const p = new KernelPanicError("bad block", 0x1000n);
    expect(p).toBeInstanceOf(LiveUpdateError);
    expect(p.code).toBe("EPANIC");
    expect(p.phys).toBe(0x1000n);
    expect(ERRNO.EINVAL).toBe(22);
  });
});
