// The core's handler conformance kit run against "eventfd-v1", as a third party runs it: the
// subject says how to make an eventfd with a known state (file i: counter 1000 + i, flags varying
// with i), how to check one, and how to corrupt a record so that retrieve fails.
import { expect } from "vitest";
import { EFD_NONBLOCK, EFD_SEMAPHORE, eventfd, eventfdFile, type Process } from "@luo/core";
import { describeHandlerConformance, type ConformanceSubject } from "@luo/core/testing";
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
  verify(proc: Process, fd: number, { expected }) {
    const f = eventfdFile(proc, fd);
    expect(f.count).toBe(BigInt(1000 + expected!));
    expect(f.flags).toBe(flagsOf(expected!));
  },
  // An unknown flag bit makes retrieve fail with EINVAL; finish still frees the page.
  corrupt: ({ machine, data }) => machine.writeU32(data + BigInt(EVENTFD_LUO_SER.flags), 0x2),
});

describeHandlerConformance<number>(eventfdSubject);
