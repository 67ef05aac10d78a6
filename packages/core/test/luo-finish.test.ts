// FINISH and the release of incoming sessions:
// canFinish FIFO all-or-nothing, finish LIFO for every file (retrieved or not), a veto that
// changes nothing, idempotent FINISH, implicit FINISH on close, and the "stuck" session a veto on
// close leaves behind until the next live update drops it.
import { describe, expect, it } from "vitest";
import { FILE_BLOCKS } from "@luo/core";
import { createTestFile } from "@luo/core/testing";
import {
  bootTest,
  callsSince,
  dec,
  enc,
  kexecOpen,
  recordEvents,
  rejects,
  TEST_BLOCK_PAGES,
  type TestWorld,
} from "./helpers/luo.js";

/** Boot, one session "vm" with test files 1..n (content "file i"), kexec, open. */
async function handedOver(n = 3, options: { flbs?: number } = {}) {
  const w: TestWorld = await bootTest(options);
  const s = await w.dev.createSession("vm");
  for (let t = 1; t <= n; t++) {
    const fd = createTestFile(w.proc, `f${t}`, enc(`file ${t}`));
    await s.preserveFd(fd, t);
    w.proc.close(fd);
  }
  const next = await kexecOpen(w.kernel);
  return { ...next, plugin: w.plugin, c: w.plugin.control };
}

/** The callbacks of a FINISH of files 1..3 that nobody vetoes: canFinish FIFO, then finish LIFO. */
const FINISH_ALL_3 = ["canFinish:1", "canFinish:2", "canFinish:3", "finish:3", "finish:2", "finish:1"];

describe("FINISH", () => {
  it("a canFinish veto (FIFO, stops at the veto) changes nothing; a later FINISH asks FIFO and finishes LIFO", async () => {
    const { kernel: k2, proc: q, dev, c } = await handedOver(3);
    const inc = await dev.retrieveSession("vm");
    const fd1 = await inc.retrieveFd(1);
    const stats = k2.liveupdate.stats();
    const unrestored = k2.incoming!.unrestoredPages;

    let mark = c.log.length;
    c.fail("canFinish", { only: [2n] });
    await rejects(inc.finish(), "EBUSY");
    expect(callsSince(c, mark)).toEqual(["canFinish:1", "canFinish:2!"]);
    // Nothing finished: every file is still there and retrievable, nothing was freed.
    expect(c.calls("finish")).toEqual([]);
    expect(k2.liveupdate.stats()).toEqual(stats);
    expect(k2.incoming!.unrestoredPages).toBe(unrestored);
    expect(q.file(await inc.retrieveFd(1))).toBe(q.file(fd1));
    expect(dec(q.pread(await inc.retrieveFd(3), 10, 0))).toBe("file 3");
    // Still vetoed: still nothing.
    await rejects(inc.finish(), "EBUSY");
    expect(c.calls("finish")).toEqual([]);

    c.heal();
    mark = c.log.length;
    await inc.finish();
    expect(callsSince(c, mark)).toEqual(FINISH_ALL_3);
    // File 2 was never retrieved: finish got it anyway and its memory came back.
    expect(k2.incoming!.unrestoredPages).toBe(0);
    expect(k2.liveupdate.stats()).toEqual({ outgoingSessions: 0, incomingSessions: 1, ownedFiles: 0 });
    // The retrieved file belongs to the user now.
    expect(q.file(fd1).refCount).toBe(2); // fd1 and the second fd from retrieveFd(1) above
    expect(dec(q.pread(fd1, 10, 0))).toBe("file 1");

    // FINISH again succeeds and calls nothing.
    mark = c.log.length;
    await inc.finish();
    await inc.finish();
    expect(c.log.length).toBe(mark);
    await rejects(inc.retrieveFd(1), "ENOENT");
    await inc.close();
    expect(k2.liveupdate.stats().incomingSessions).toBe(0);
  });

  it("FINISH of an empty session succeeds at once; closing it removes it", async () => {
    const w = await bootTest();
    await w.dev.createSession("empty");
    const { kernel: k2, dev } = await kexecOpen(w.kernel);
    const inc = await dev.retrieveSession("empty");
    await rejects(inc.retrieveFd(0), "ENOENT");
    await inc.finish();
    await inc.finish();
    await inc.close();
    expect(k2.liveupdate.stats().incomingSessions).toBe(0);
    await rejects(dev.retrieveSession("empty"), "ENOENT");
  });
});

describe("closing an incoming session", () => {
  it("finishes implicitly (canFinish FIFO, finish LIFO) and removes the session", async () => {
    const { kernel: k2, dev, c } = await handedOver(3);
    const inc = await dev.retrieveSession("vm");
    await inc.retrieveFd(2);
    const mark = c.log.length;
    await inc.close();
    expect(callsSince(c, mark)).toEqual(FINISH_ALL_3);
    expect(k2.liveupdate.stats()).toEqual({ outgoingSessions: 0, incomingSessions: 0, ownedFiles: 0 });
    expect(k2.incoming!.unrestoredPages).toBe(0);
    await rejects(dev.retrieveSession("vm"), "ENOENT");
  });

  it("with a veto the session is stuck: close is EBUSY, retrieve EINVAL even after heal, and the next kexec drops it", async () => {
    const { kernel: k2, proc: q, dev, c } = await handedOver(3);
    const events = recordEvents(k2);
    const inc = await dev.retrieveSession("vm");
    const fd = await inc.retrieveFd(1);
    c.fail("canFinish", { only: [3n] });
    const e = await rejects(inc.close(), "EBUSY");
    expect(c.calls("finish")).toEqual([]);
    expect(events.filter((x) => x.name === "session:stuck").map((x) => x.session)).toEqual(["vm"]);
    expect(events.find((x) => x.name === "session:stuck")!.error).toBe(e);
    // Stuck: still in the incoming list with its files owned, but unreachable.
    expect(k2.liveupdate.stats()).toMatchObject({ incomingSessions: 1, ownedFiles: 1 });
    await rejects(dev.retrieveSession("vm"), "EINVAL");
    c.heal();
    await rejects(dev.retrieveSession("vm"), "EINVAL");
    // The retrieved file keeps working for the user; an outgoing "vm" is allowed meanwhile.
    expect(dec(q.pread(fd, 10, 0))).toBe("file 1");
    const out = await dev.createSession("vm-next");
    await out.close();
    // Files 2 and 3 were never retrieved nor finished: their blocks stay held, and so does the
    // session's file block (its records).
    const held = k2.incoming!.unrestoredPages;
    expect(held).toBe(2 * TEST_BLOCK_PAGES + FILE_BLOCKS.pages);

    // The next live update does not carry incoming sessions: the stuck one is gone.
    const { kernel: k3, machine, dev: dev3 } = await kexecOpen(k2);
    await rejects(dev3.retrieveSession("vm"), "ENOENT");
    expect(k3.liveupdate.stats()).toEqual({ outgoingSessions: 0, incomingSessions: 0, ownedFiles: 0 });
    expect(k3.incoming!.unrestoredPages).toBe(0);
    // Nothing of it survived in memory either: all that is allocated is k3's own handover pages.
    expect(machine.stats().allocatedPages).toBe(k3.kho.preservedPages);
    expect(c.calls("finish")).toEqual([]);
  });
});
