// The core's handler conformance kit run against "memfd-v2" with 2 MiB folios: the same
// lifecycle and leak checks as conformance.test.ts, on memfds whose contents live in order-9
// folios (huge: "always"), with a 4 KiB-folio tail in some of them (a mixed file).
import { expect } from "vitest";
import { MAX_ORDER, PAGE_SIZE } from "@luo/core";
import { describeHandlerConformance } from "@luo/core/testing/conformance";
import { MEMFD_LUO_COMPATIBLE, MEMFD_LUO_SER, memfd, memfdCreate, memfdFile } from "@luo/memfd-handler";
import { bytes, firstDifference } from "./helpers/boot.js";

const HUGE = 2 * 1024 * 1024;

/**
 * File `i`: a 2 MiB hole or fallocated range (filled at preserve with a 2 MiB folio), then a
 * 2 MiB folio of distinct bytes, and for odd `i` a few bytes past it in a `"within_size"` file,
 * which puts them in 4 KiB folios.
 */
const content = (i: number): Uint8Array => bytes(HUGE + (i % 2) * (100 * i + 1), i + 1);

describeHandlerConformance<number>(() => ({
  compatible: MEMFD_LUO_COMPATIBLE,
  name: `${MEMFD_LUO_COMPATIBLE} with 2 MiB folios`,
  plugins: [memfd()],
  memory: "128 MiB",
  create(proc, i) {
    const fd = memfdCreate(proc, `conformance-huge-${i}`, { huge: i % 2 === 0 ? "always" : "within_size" });
    if (i % 2 === 0) proc.fallocate(fd, 0, 0, HUGE);
    proc.pwrite(fd, content(i), HUGE);
    proc.lseek(fd, 10 + i, 0);
    const orders = memfdFile(proc, fd)
      .memfd.folios()
      .map((f) => f.order);
    expect(orders.slice(0, i % 2 === 0 ? 2 : 1)).toEqual(i % 2 === 0 ? [MAX_ORDER, MAX_ORDER] : [MAX_ORDER]);
    return { fd, expected: i };
  },
  verify(proc, fd, { expected }) {
    const i = expected!;
    const data = content(i);
    const file = memfdFile(proc, fd);
    expect(file.size()).toBe(HUGE + data.length);
    const hole = proc.pread(fd, HUGE, 0);
    expect(hole.every((b) => b === 0)).toBe(true);
    expect(firstDifference(proc.pread(fd, data.length, HUGE), data)).toBe(-1);
    expect(proc.lseek(fd, 0, 1)).toBe(10 + i);
    // The data's 2 MiB folio is still one order-9 folio (preserved as one, restored as one).
    const f = file.memfd.folios().find((x) => x.index === HUGE / PAGE_SIZE);
    expect(f?.order).toBe(MAX_ORDER);
  },
  corrupt: ({ machine, data }) => machine.writeU32(data + BigInt(MEMFD_LUO_SER.flags), 0xbad),
}));
