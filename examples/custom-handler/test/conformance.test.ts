// The core's handler conformance kit run against "eventfd-v1", as a third party runs it: the
// subject says how to make an eventfd with a known state (file i: counter 1000 + i, flags varying
// with i), how to change one after PRESERVE, how to check one, and how to corrupt a record so that
// retrieve fails.
import { expect } from "vitest";
import { EFD_NONBLOCK, EFD_SEMAPHORE, eventfd, eventfdFile, type Process } from "@luo/core";
import { describeHandlerConformance, type ConformanceSubject } from "@luo/core/testing/conformance";
import { EVENTFD_LUO_COMPATIBLE, EVENTFD_LUO_SER, eventfdLuo } from "@luo/eventfd-handler";

/** Flags of file `i`: every combination of semaphore and non-blocking shows up. */
const flagsOf = (i: number): number => (i % 2 ? EFD_SEMAPHORE : 0) | (i % 3 ? EFD_NONBLOCK : 0);

/** The subject, kept a plain factory so it can be handed to any version of the kit. */
export const eventfdSubject = (): ConformanceSubject<number> => ({
  compatible: EVENTFD_LUO_COMPATIBLE,
  plugins: [eventfdLuo()],
  create(proc: Process, i: number) {
    return { fd: eventfd(proc, 1000 + i, flagsOf(i)), expected: i };
  },
  // After PRESERVE_FD userspace adds 7: freeze must capture it, or the kexec loses it.
  mutate(proc: Process, fd: number) {
    const seven = new Uint8Array(8);
    seven[0] = 7;
    proc.write(fd, seven);
  },
  verify(proc: Process, fd: number, { expected, mutated }) {
    const f = eventfdFile(proc, fd);
    expect(f.count).toBe(BigInt(1000 + expected! + (mutated ? 7 : 0)));
    expect(f.flags).toBe(flagsOf(expected!));
  },
  // An unknown flag bit makes retrieve fail with EINVAL; finish still frees the page.
  corrupt: ({ machine, data }) => machine.writeU32(data + BigInt(EVENTFD_LUO_SER.flags), 0x2),
});

describeHandlerConformance<number>(eventfdSubject);
