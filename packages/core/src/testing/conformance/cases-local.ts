/**
 * The conformance cases that stay in one kernel: preserve and unpreserve, double preservation,
 * refusing foreign files, a neighbour's freeze failure, closing after a failed live update.
 *
 * @module
 */
import { DEV_NULL_PATH } from "../../kernel/index.js";
import { TEST_HANDLER_COMPATIBLE, TestFile } from "../test-handler.js";
import { check } from "./check.js";
import { CONFORMANCE_NEIGHBOUR_COMPATIBLE, rejection, type Run } from "./harness.js";

/** Case: preserve, then close the session → unpreserve, file intact, accounting back. */
export async function preserveAndUnpreserve<S>(run: Run<S>): Promise<void> {
  const k = run.kernel;
  const { proc: p, dev: dev } = await run.open();
  const a = await run.create(p);
  const afterA = run.machine.stats();
  const b = await run.create(p);
  const fileA = p.file(a.fd);
  const fileB = p.file(b.fd);
  for (const flb of run.flbs) check(await k.liveupdate.flbs.getOutgoing(flb)).toBeUndefined();

  const s = await dev.createSession("conf-a");
  await run.preserve(s, a.fd, 1n);
  await run.preserve(s, b.fd, 2n);
  check(run.calls("preserve")).toEqual(["conf-a/1", "conf-a/2"]);
  check(run.luoStats().ownedFiles).toBe(2);
  for (const flb of run.flbs) check(await k.liveupdate.flbs.getOutgoing(flb)).toBeDefined();
  p.close(b.fd);
  check(fileB.isReleased, "LUO keeps its own reference to a preserved file").toBe(false);

  await s.close();
  check(run.calls("unpreserve"), "closing the session unpreserves every file, LIFO").toEqual([
    "conf-a/2",
    "conf-a/1",
  ]);
  check(run.luoStats().ownedFiles).toBe(0);
  check(fileB.isReleased, "after unpreserve LUO's reference is dropped").toBe(true);
  check(fileA.refCount, "the user's file is back to the user's single reference").toBe(1);
  await run.verify(p, a.fd, a);
  check(run.machine.stats(), "page accounting after unpreserve").toEqual(afterA);
  for (const flb of run.flbs) check(await k.liveupdate.flbs.getOutgoing(flb)).toBeUndefined();

  const s2 = await dev.createSession("conf-b");
  await run.preserve(s2, a.fd, 7n);
  await s2.close();
  await run.verify(p, a.fd, a);
  check(run.machine.stats(), "page accounting after a second preserve/unpreserve").toEqual(afterA);
  run.expectNoWarnings();
}

/** Case: two fds of one file, or one fd twice → EBUSY before the handler is called. */
export async function doublePreservation<S>(run: Run<S>): Promise<void> {
  const { proc: p, dev: dev } = await run.open();
  const a = await run.create(p);
  const dupFd = p.dup(a.fd);
  const sa = await dev.createSession("conf-a");
  const sb = await dev.createSession("conf-b");
  await run.preserve(sa, a.fd, 1n);
  const after = run.machine.stats();
  await rejection(sa.preserveFd(dupFd, 2n), "EBUSY");
  await rejection(sa.preserveFd(a.fd, 3n), "EBUSY");
  await rejection(sb.preserveFd(dupFd, 1n), "EBUSY");
  check(run.calls("preserve", true), "the handler is not asked to preserve a file LUO owns").toEqual([
    "conf-a/1",
  ]);
  check(run.luoStats().ownedFiles).toBe(1);
  check(run.machine.stats(), "failed preservations leave no trace").toEqual(after);
  await sa.close();
  await run.preserve(sb, dupFd, 1n);
  await sb.close();
  await run.verify(p, a.fd, a);
  run.expectNoWarnings();
}

/** Case: a neighbour's freeze fails (same or later session) → unfreeze, usable kernel, retry. */
export async function neighbourFreezeFailure<S>(run: Run<S>, sameSession: boolean): Promise<void> {
  const k1 = run.kernel;
  const { proc: p, dev: dev } = await run.open();
  const a = await run.create(p);
  const n = run.neighbourFile(p, "neighbour");
  const sa = await dev.createSession("conf-a");
  await run.preserve(sa, a.fd, 1n);
  const sn = sameSession ? sa : await dev.createSession("conf-b");
  await run.preserveNeighbour(sn, n, 2n);
  const neighbourAt = `${sn.name}/2`;

  run.neighbour.fail("freeze", { code: "EAGAIN" });
  await rejection(k1.kexec(), "EAGAIN");
  check(k1.halted, "a failed freeze leaves the old kernel running").toBe(false);
  check(run.luoStats().ownedFiles).toBe(2);
  for (const flb of run.flbs) {
    check(k1.liveupdate.flbs.state(flb)?.outCount, "a failed reboot keeps FLB references").toBe(1);
  }
  const failed = run.indexOf(
    (c) => c.compatible === CONFORMANCE_NEIGHBOUR_COMPATIBLE && c.op === "freeze" && !c.ok,
  );
  check(failed).toBeGreaterThanOrEqual(0);
  if (run.has("freeze")) {
    check(run.calls("freeze"), "the handler's file is frozen before the neighbour's").toEqual(["conf-a/1"]);
  }
  if (run.has("unfreeze")) {
    check(run.calls("unfreeze", true), "the handler's file is unfrozen once").toEqual(["conf-a/1"]);
    const unfrozen = run.indexOf((c) => c.compatible === run.subject.compatible && c.op === "unfreeze");
    check(unfrozen, "unfreeze runs after the neighbour's freeze failed").toBeGreaterThan(failed);
  }
  check(
    run.calls("unfreeze", true, CONFORMANCE_NEIGHBOUR_COMPATIBLE),
    "the file that failed to freeze is not unfrozen",
  ).notToContain(neighbourAt);
  await run.verify(p, a.fd, a);

  // The kernel stays usable: sessions answer, new files can be preserved.
  check(await sa.getName()).toBe("conf-a");
  const c = await run.create(p);
  await run.preserve(sa, c.fd, 3n);
  run.neighbour.heal();
  p.close(a.fd);
  p.close(c.fd);
  p.close(n);

  await run.kexec();
  const { proc: q, dev: dev2 } = await run.open();
  const ra = await dev2.retrieveSession("conf-a");
  await run.verify(q, await ra.retrieveFd(1n), a);
  await run.verify(q, await ra.retrieveFd(3n), c);
  const rn = sameSession ? ra : await dev2.retrieveSession("conf-b");
  run.verifyNeighbour(q, await rn.retrieveFd(2n), "neighbour");
  await ra.close();
  if (!sameSession) await rn.close();
  await run.expectClean([q]);
}

/** Case: a session closed after a failed live update unpreserves cleanly. */
export async function closeAfterFailedKexec<S>(run: Run<S>): Promise<void> {
  const k1 = run.kernel;
  const { proc: p, dev: dev } = await run.open();
  const a = await run.create(p);
  const n = run.neighbourFile(p, "neighbour");
  const before = run.machine.stats();
  const sa = await dev.createSession("conf-a");
  await run.preserve(sa, a.fd, 1n);
  await run.preserveNeighbour(sa, n, 2n);
  run.neighbour.fail("freeze");
  await rejection(k1.kexec(), "EIO");
  await sa.close();
  check(run.calls("unpreserve")).toEqual(["conf-a/1"]);
  check(run.luoStats().ownedFiles).toBe(0);
  check(run.machine.stats(), "page accounting after unfreeze + unpreserve").toEqual(before);
  await run.verify(p, a.fd, a);
  run.expectNoWarnings();
}

/** Case: `canPreserve` refuses a plain char device and a file of the test handler's type. */
export async function refusesForeignFiles<S>(run: Run<S>): Promise<void> {
  const { proc: p, dev } = await run.open();
  const handler = run.handlers.get(run.subject.compatible)!;
  const devNull = await p.open(DEV_NULL_PATH);
  const foreign = [devNull];
  if (run.subject.compatible !== TEST_HANDLER_COMPATIBLE) {
    foreign.push(p.installFile(new TestFile("foreign", new TextEncoder().encode("foreign"))));
  }
  for (const fd of foreign) {
    const file = p.file(fd);
    check(
      handler.canPreserve(file),
      `canPreserve must refuse ${file.description}, a file of another type`,
    ).toBe(false);
  }
  const a = await run.create(p);
  check(handler.canPreserve(p.file(a.fd)), "canPreserve accepts the subject's own file").toBe(true);
  const s = await dev.createSession("conf-a");
  await rejection(s.preserveFd(devNull, 1n), "ENOENT"); // no handler takes /dev/null
  check(run.calls("preserve", true), "the handler is not asked to preserve a foreign file").toEqual([]);
  await run.preserve(s, a.fd, 1n);
  await s.close();
  await run.verify(p, a.fd, a);
  run.expectNoWarnings();
}
