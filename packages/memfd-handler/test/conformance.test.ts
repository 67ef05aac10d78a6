// The core's handler conformance kit run against "memfd-v2": the same lifecycle checks every
// handler must pass (preserve/unpreserve, double preservation, refusing foreign files, neighbour
// freeze failures, writes after preserve surviving kexec, retrieve twice, sticky retrieve failure,
// finish with and without retrieve, veto, re-preserve, leak checks against a fresh boot).
import { expect } from "vitest";
import { PAGE_SIZE } from "@luo/core";
import { describeHandlerConformance } from "@luo/core/testing/conformance";
import { MEMFD_LUO_COMPATIBLE, MEMFD_LUO_SER, memfd, memfdCreate, memfdFile } from "@luo/memfd-handler";
import { bytes, firstDifference } from "./helpers/boot.js";

/**
 * File `i`: zeros in front (never empty, so the zero check always reads bytes), then a few pages
 * of distinct bytes, and a position. The zeros are a hole when `i` is odd (filled at preserve)
 * and allocated with fallocate when `i` is even: the kit checks page accounting around file 0,
 * and a hole filled at preserve stays allocated after unpreserve (as in Linux).
 */
const content = (i: number): Uint8Array => bytes(2 * PAGE_SIZE + 100 * i + 1, i + 1);
const offset = (i: number): number => ((i % 2) + 1) * PAGE_SIZE;
/** What `mutate` writes over the start of the data after PRESERVE_FD. */
const CHANGE = bytes(100, 0xa5);

describeHandlerConformance<number>(() => ({
  compatible: MEMFD_LUO_COMPATIBLE,
  plugins: [memfd()],
  create(proc, i) {
    const fd = memfdCreate(proc, `conformance-${i}`);
    if (i % 2 === 0) proc.fallocate(fd, 0, 0, offset(i));
    proc.pwrite(fd, content(i), offset(i));
    proc.lseek(fd, 10 + i, 0);
    return { fd, expected: i };
  },
  mutate(proc, fd, { expected }) {
    proc.pwrite(fd, CHANGE, offset(expected!));
  },
  verify(proc, fd, { expected, mutated }) {
    const i = expected!;
    const data = content(i);
    if (mutated) data.set(CHANGE, 0);
    expect(memfdFile(proc, fd).size()).toBe(offset(i) + data.length);
    const hole = proc.pread(fd, offset(i), 0);
    expect(hole.length).toBe(offset(i));
    expect(hole.every((b) => b === 0)).toBe(true);
    expect(firstDifference(proc.pread(fd, data.length, offset(i)), data)).toBe(-1);
    expect(proc.lseek(fd, 0, 1)).toBe(10 + i);
  },
  // Non-zero record flags make retrieve fail with EINVAL; finish ignores them and frees it all.
  corrupt: ({ machine, data }) => machine.writeU32(data + BigInt(MEMFD_LUO_SER.flags), 0xbad),
}));
