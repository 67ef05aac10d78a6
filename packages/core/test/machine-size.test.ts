import { describe, expect, it } from "vitest";
import { formatSize, parseSize } from "../src/machine/index.js";
import { expectErrno } from "./fixtures/machine-helpers.js";

const MiB = 1024 * 1024;

describe("parseSize", () => {
  it.each([
    ["512 MiB", 512 * MiB],
    ["64MiB", 64 * MiB],
    ["1 GiB", 1024 * MiB],
    ["2M", 2 * MiB],
    ["1g", 1024 * MiB],
    ["4096 KiB", 4 * MiB],
    ["1.5 GiB", 1536 * MiB],
    ["0x400000", 4 * MiB],
    ["2097152", 2 * MiB],
    ["  8 mib ", 8 * MiB],
    [2 * MiB, 2 * MiB],
    [BigInt(6 * MiB), 6 * MiB],
  ] as const)("%s → %d bytes", (input, bytes) => {
    expect(parseSize(input)).toBe(bytes);
  });

  it.each([
    ["4096", "multiple of 2 MiB"],
    ["0", "positive"],
    ["-2 MiB", "expected a number"],
    ["512 MB", "unknown unit"],
    ["lots", "expected a number"],
    ["", "expected a number"],
    ["1.0000001 MiB", "whole number"],
    [0, "positive"],
    [-2 * MiB, "positive"],
    [1.5, "integer"],
    [3 * MiB, "multiple of 2 MiB"],
    [-(2n ** 21n), "positive"],
  ] as const)("rejects %s with EINVAL naming the input", (input, why) => {
    const e = expectErrno(() => parseSize(input), "EINVAL");
    expect(e.message).toContain(typeof input === "string" ? JSON.stringify(input) : String(input));
    expect(e.message).toContain(why);
  });

  it("formats sizes with the largest exact binary unit", () => {
    expect(formatSize(512 * MiB)).toBe("512 MiB");
    expect(formatSize(6144)).toBe("6 KiB");
    expect(formatSize(100)).toBe("100 B");
    expect(formatSize(0)).toBe("0 B");
    expect(formatSize(2 * 1024 * MiB)).toBe("2 GiB");
  });
});
