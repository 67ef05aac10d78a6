/**
 * The conformance cases across a live update: changes after preserve, retrieve, finish, preserve
 * again, sticky retrieve failures, a neighbour's veto, FLB reference counts; each ends with the
 * leak check.
 *
 * @module
 */
import { LiveUpdateError } from "../../errors.js";
import { ConformanceFailure, check } from "./check.js";
import { CONFORMANCE_NEIGHBOUR_COMPATIBLE, rejection, type Run } from "./harness.js";

/** Case: a change made after PRESERVE_FD (subject.mutate) comes back after kexec. */
export async function changeAfterPreserve<S>(run: Run<S>): Promise<void> {
  const { proc: p, dev } = await run.open();
  const a = await run.create(p);
  const s = await dev.createSession("conf-a");
  await run.preserve(s, a.fd, 1n);
  const changed = await run.mutate(p, a);
  await run.verify(p, a.fd, changed); // subject.mutate and subject.verify agree
  p.close(a.fd);

  await run.kexec();
  const { proc: q, dev: dev2 } = await run.open();
  const s2 = await dev2.retrieveSession("conf-a");
  const fd = await s2.retrieveFd(1n);
  try {
    await run.verify(q, fd, changed);
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    throw new ConformanceFailure(
      `the change subject.mutate made after PRESERVE_FD did not survive the live update (state captured at preserve instead of freeze?): ${msg}`,
      { cause: e },
    );
  }
  await s2.finish();
  await s2.close();
  await run.expectClean([q]);
}

/** Case: kexec, retrieve twice → one file object on two fds; finish; leak check. */
export async function retrieveTwice<S>(run: Run<S>): Promise<void> {
  const { proc: p, dev: dev } = await run.open();
  const a = await run.create(p);
  const s = await dev.createSession("conf-a");
  await run.preserve(s, a.fd, 1n);
  p.close(a.fd); // LUO's reference keeps the file alive

  await run.kexec();
  const { proc: q, dev: dev2 } = await run.open();
  const s2 = await dev2.retrieveSession("conf-a");
  const fd1 = await s2.retrieveFd(1n);
  const fd2 = await s2.retrieveFd(1n);
  check(fd2 !== fd1, "a second RETRIEVE_FD installs a new fd").toBe(true);
  check(q.file(fd2), "a second retrieve returns the same file object").toBe(q.file(fd1));
  check(run.calls("retrieve", true), "the handler retrieves a file once").toEqual(["conf-a/1"]);
  await run.verify(q, fd1, a);
  await run.verify(q, fd2, a);
  check(run.luoStats().ownedFiles).toBe(1);

  const out = await dev2.createSession("conf-out");
  await rejection(out.preserveFd(fd1, 1n), "EBUSY"); // retrieved, not finished: still LUO's
  await out.close();

  await s2.finish();
  check(run.calls("finish")).toEqual(["conf-a/1"]);
  const fin = run.entries("finish")[0];
  check(fin?.retrieveStatus, "finish sees the file as retrieved").toBe(1);
  await s2.finish(); // FINISH again: success, nothing finished twice
  check(run.calls("finish", true)).toEqual(["conf-a/1"]);
  await run.verify(q, fd1, a);
  const file = q.file(fd1);
  await s2.close();
  q.close(fd1);
  q.close(fd2);
  check(file.isReleased, "closing the last fd after finish releases the retrieved file").toBe(true);
  await run.expectClean([q]);
}

/** Case: finish with and without retrieve, explicit and implicit; leak check. */
export async function finishAll<S>(run: Run<S>): Promise<void> {
  const { proc: p, dev: dev } = await run.open();
  const made = [await run.create(p), await run.create(p), await run.create(p), await run.create(p)];
  const sa = await dev.createSession("conf-a");
  const sb = await dev.createSession("conf-b");
  await dev.createSession("conf-empty");
  for (let i = 0; i < 3; i++) await run.preserve(sa, made[i]!.fd, BigInt(i + 1));
  await run.preserve(sb, made[3]!.fd, 1n);
  for (const m of made) p.close(m.fd);

  await run.kexec();
  const { proc: q, dev: dev2 } = await run.open();
  const ra = await dev2.retrieveSession("conf-a");
  const fd = await ra.retrieveFd(2n);
  await run.verify(q, fd, made[1]!);
  await ra.finish();
  check(run.calls("finish"), "FINISH finishes every file, retrieved or not, LIFO").toEqual([
    "conf-a/3",
    "conf-a/2",
    "conf-a/1",
  ]);
  const statuses = run.entries("finish").map((c) => c.retrieveStatus);
  check(statuses).toEqual([0, 1, 0]);
  await ra.finish();
  check(run.calls("finish", true), "a second FINISH finishes nothing").toHaveLength(3);
  check(run.luoStats().ownedFiles).toBe(0);
  await run.verify(q, fd, made[1]!);

  const rb = await dev2.retrieveSession("conf-b");
  await rb.close(); // implicit FINISH of a file never retrieved
  check(run.calls("finish")).toEqual(["conf-a/3", "conf-a/2", "conf-a/1", "conf-b/1"]);
  await (await dev2.retrieveSession("conf-empty")).close();
  await ra.close();
  await run.expectClean([q]);
}

/** Case: retrieve, finish, preserve again, second live update. */
export async function preserveAgain<S>(run: Run<S>): Promise<void> {
  const { proc: p, dev: dev } = await run.open();
  const a = await run.create(p);
  const s = await dev.createSession("conf-a");
  await run.preserve(s, a.fd, 1n);
  p.close(a.fd);

  const k2 = await run.kexec();
  const { proc: q, dev: dev2 } = await run.open();
  const s2 = await dev2.retrieveSession("conf-a");
  const fd = await s2.retrieveFd(1n);
  await s2.finish();
  await s2.close();
  const out = await dev2.createSession("conf-a"); // the name is free again
  await run.preserve(out, fd, 5n);
  q.close(fd);
  check(k2.incoming!.unrestoredPages, "the first handover was fully released").toBe(0);

  const k3 = await run.kexec();
  check(k3.liveupdate.liveupdateNumber).toBe(2n);
  const { proc: r, dev: dev3 } = await run.open();
  const s3 = await dev3.retrieveSession("conf-a");
  await run.verify(r, await s3.retrieveFd(5n), a);
  await s3.finish();
  await s3.close();
  await run.expectClean([r]);
}

/** Case: a neighbour's retrieve failure is sticky and does not disturb the subject's files. */
export async function neighbourStickyRetrieve<S>(run: Run<S>): Promise<void> {
  const { proc: p, dev: dev } = await run.open();
  const a = await run.create(p);
  const c = await run.create(p);
  const n = run.neighbourFile(p, "neighbour");
  const s = await dev.createSession("conf-a");
  await run.preserve(s, a.fd, 1n);
  await run.preserveNeighbour(s, n, 2n);
  await run.preserve(s, c.fd, 3n);
  for (const fd of [a.fd, c.fd, n]) p.close(fd);

  await run.kexec();
  const { proc: q, dev: dev2 } = await run.open();
  const s2 = await dev2.retrieveSession("conf-a");
  run.neighbour.fail("retrieve", { code: "ENODEV" });
  const e1 = await rejection(s2.retrieveFd(2n), "ENODEV");
  run.neighbour.heal();
  const e2 = await rejection(s2.retrieveFd(2n), "ENODEV");
  check(e2.message, "a failed retrieve is sticky").toBe(e1.message);
  check(run.calls("retrieve", true, CONFORMANCE_NEIGHBOUR_COMPATIBLE)).toEqual(["conf-a/2"]);
  await run.verify(q, await s2.retrieveFd(3n), c);
  await run.verify(q, await s2.retrieveFd(1n), a);
  await s2.finish();
  check(run.calls("finish")).toEqual(["conf-a/3", "conf-a/1"]);
  await s2.close();
  await run.expectClean([q]);
}

/** Case: the subject's own retrieve fails on corrupted state; sticky; finish still releases. */
export async function stickyRetrieve<S>(run: Run<S>): Promise<void> {
  const { proc: p, dev: dev } = await run.open();
  const a = await run.create(p);
  const b = await run.create(p);
  const s = await dev.createSession("conf-a");
  await run.preserve(s, a.fd, 1n);
  await run.preserve(s, b.fd, 2n);
  p.close(a.fd);
  p.close(b.fd);

  const k2 = await run.kexec();
  const { proc: q, dev: dev2 } = await run.open();
  const s2 = await dev2.retrieveSession("conf-a");
  const lf = k2.liveupdate.received.sessions
    .find((s) => s.name === "conf-a")
    ?.files.find((f) => f.token === 1n);
  check(lf, "the incoming file record").toBeDefined();
  await run.subject.corrupt!({
    kernel: k2,
    machine: run.machine,
    incoming: k2.incoming!,
    data: lf!.data,
    session: "conf-a",
    token: 1n,
  });
  const e1 = await rejection(s2.retrieveFd(1n));
  const e2 = await rejection(s2.retrieveFd(1n));
  check(e2.code).toBe(e1.code);
  check(e2.message, "a failed retrieve is sticky").toBe(e1.message);
  check(run.calls("retrieve", true), "the handler is not asked again after a failure").toEqual(["conf-a/1"]);
  check(run.calls("retrieve"), "subject.corrupt made the handler's retrieve fail").toEqual([]);
  await run.verify(q, await s2.retrieveFd(2n), b);
  await s2.finish();
  const fin = run.entries("finish");
  check(fin.map((c) => c.at)).toEqual(["conf-a/2", "conf-a/1"]);
  check(fin[1]!.retrieveStatus, "finish sees the sticky error").toBeInstanceOf(LiveUpdateError);
  await s2.close();
  await run.expectClean([q]);
}

/** Case: a neighbour vetoes FINISH → nothing finished; a retry finishes everything. */
export async function neighbourVeto<S>(run: Run<S>): Promise<void> {
  const { proc: p, dev: dev } = await run.open();
  const a = await run.create(p);
  const n = run.neighbourFile(p, "neighbour");
  const s = await dev.createSession("conf-a");
  await run.preserve(s, a.fd, 1n);
  await run.preserveNeighbour(s, n, 2n);
  p.close(a.fd);
  p.close(n);

  await run.kexec();
  const { proc: q, dev: dev2 } = await run.open();
  const s2 = await dev2.retrieveSession("conf-a");
  const fd = await s2.retrieveFd(1n);
  run.neighbour.fail("canFinish");
  await rejection(s2.finish(), "EBUSY");
  check(run.calls("finish", true), "a vetoed FINISH finishes nothing").toEqual([]);
  check(run.luoStats().ownedFiles).toBe(1);
  await run.verify(q, fd, a);
  run.neighbour.heal();
  await s2.finish();
  check(run.calls("finish")).toEqual(["conf-a/1"]);
  await s2.close();
  await run.expectClean([q]);
}

/** Case: FLB reference counts in both kernels. */
export async function flbRefcounts<S>(run: Run<S>): Promise<void> {
  const k1 = run.kernel;
  const flbs = k1.liveupdate.flbs;
  const count = (op: string, compatible: string): number =>
    run.log.filter((c) => c.op === op && c.compatible === compatible).length;
  const { proc: p, dev: dev } = await run.open();
  const a = await run.create(p);
  const b = await run.create(p);

  const expectOutgoing = async (n: number): Promise<void> => {
    for (const flb of run.flbs) {
      const obj = await flbs.getOutgoing(flb);
      if (n === 0) check(obj, `FLB "${flb.compatible}" without dependent files`).toBeUndefined();
      else check(obj, `FLB "${flb.compatible}" with ${n} dependent file(s)`).toBeDefined();
      check(flbs.state(flb)?.outCount).toBe(n);
    }
  };
  await expectOutgoing(0);
  let sa = await dev.createSession("conf-a");
  let sb = await dev.createSession("conf-b");
  await run.preserve(sa, a.fd, 1n);
  await expectOutgoing(1);
  await run.preserve(sb, b.fd, 1n);
  await expectOutgoing(2);
  for (const flb of run.flbs) check(count("flb:preserved", flb.compatible)).toBe(1);
  await sb.close();
  await expectOutgoing(1);
  await sa.close();
  await expectOutgoing(0);
  for (const flb of run.flbs) {
    check(count("flb:preserved", flb.compatible)).toBe(1);
    check(count("flb:unpreserved", flb.compatible)).toBe(1);
  }

  sa = await dev.createSession("conf-a");
  sb = await dev.createSession("conf-b");
  await run.preserve(sa, a.fd, 1n);
  await run.preserve(sb, b.fd, 1n);
  p.close(a.fd);
  p.close(b.fd);

  const k2 = await run.kexec();
  const flbs2 = k2.liveupdate.flbs;
  const { proc: q, dev: dev2 } = await run.open();
  for (const flb of run.flbs) {
    check(flbs2.state(flb)?.inCount, `FLB "${flb.compatible}" incoming references`).toBe(2n);
    const obj = await flbs2.getIncoming(flb);
    check(obj).toBeDefined();
    check(await flbs2.getIncoming(flb), "getIncoming retrieves once and caches").toBe(obj);
  }
  const ra = await dev2.retrieveSession("conf-a");
  await run.verify(q, await ra.retrieveFd(1n), a);
  await ra.finish();
  for (const flb of run.flbs) {
    check(count("flb:finished", flb.compatible), "the FLB outlives the first finished file").toBe(0);
    check(flbs2.state(flb)?.inCount).toBe(1n);
    check(await flbs2.getIncoming(flb)).toBeDefined();
  }
  const rb = await dev2.retrieveSession("conf-b");
  await rb.close(); // implicit finish of a file never retrieved
  const lastFinish = run.lastIndexOf((c) => c.compatible === run.subject.compatible && c.op === "finish");
  for (const flb of run.flbs) {
    check(count("flb:finished", flb.compatible), `FLB "${flb.compatible}" is finished exactly once`).toBe(1);
    check(
      run.indexOf((c) => c.op === "flb:finished" && c.compatible === flb.compatible),
      "the FLB is finished after the last dependent file",
    ).toBeGreaterThan(lastFinish);
    await rejection(flbs2.getIncoming(flb), "ENODATA");
  }
  await ra.close();
  await run.expectClean([q]);
}
