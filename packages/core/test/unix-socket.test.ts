// AF_UNIX stream sockets, SCM_RIGHTS and fork: the connection life cycle and its errors as
// Linux reports them, the references fds in flight hold (and drop when a socket closes unread),
// many fds in one message, and sessions shared between processes by fork and fd passing.
import { describe, expect, it } from "vitest";
import {
  SCM_MAX_FD,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  AF_UNIX,
  UNIX_INFLIGHT_MAX,
  type Process,
  type UnixSocket,
} from "@luo/core";
import { createTestFile, type TestFile } from "@luo/core/testing";
import { bootTest, dec, enc, kexecOpen, rejects, throws } from "./helpers/luo.js";

const PATH = "/run/test.sock";

/** A server listening on PATH and a client connected to it, with the accepted fd. */
async function connected(p: Process, q: Process = p): Promise<{ srv: number; cli: number; acc: number }> {
  const srv = p.socket();
  p.bind(srv, PATH);
  p.listen(srv);
  const cli = q.socket();
  q.connect(cli, PATH);
  const acc = await p.accept(srv);
  return { srv, cli, acc };
}

describe("AF_UNIX connections", () => {
  it("connects, streams bytes both ways, and reports end of stream after the peer closes", async () => {
    const { kernel, proc: server } = await bootTest();
    const client = kernel.spawn("client");
    const { cli, acc } = await connected(server, client);
    expect(client.send(cli, enc("hello "))).toBe(6);
    client.send(cli, enc("world"));
    expect(dec(await server.recv(acc, 100))).toBe("hello world"); // one writer: glued as a stream
    server.send(acc, enc("abcdef"));
    expect(dec(await client.recv(cli, 4))).toBe("abcd");
    expect(dec(await client.recv(cli, 4))).toBe("ef");
    client.close(cli);
    expect((await server.recv(acc, 10)).length).toBe(0); // EOF
    await rejects(() => server.send(acc, enc("x")), "EPIPE");
  });

  it("a waiting recv and accept are resolved by the peer, not by polling", async () => {
    const { kernel, proc: server } = await bootTest();
    const client = kernel.spawn("client");
    const srv = server.socket();
    server.bind(srv, PATH);
    server.listen(srv);
    let accepted: number | undefined;
    const acceptP = server.accept(srv).then((fd) => (accepted = fd));
    await Promise.resolve();
    expect(accepted).toBeUndefined();
    const cli = client.socket();
    client.connect(cli, PATH);
    await acceptP;
    let got: string | undefined;
    const recvP = server.recv(accepted!, 10).then((b) => (got = dec(b)));
    for (let i = 0; i < 5; i++) await Promise.resolve();
    expect(got).toBeUndefined();
    client.send(cli, enc("ping"));
    await recvP;
    expect(got).toBe("ping");
  });

  it("reports the Linux errors of bind, connect, listen, send and recv", async () => {
    const { kernel, proc: p } = await bootTest();
    const s = p.socket();
    throws(() => p.connect(s, "/run/nobody.sock"), "ENOENT");
    throws(() => p.bind(s, "/dev/liveupdate"), "EADDRINUSE");
    throws(() => p.bind(s, "x".repeat(108)), "EINVAL");
    throws(() => p.listen(s), "EINVAL"); // not bound
    throws(() => p.send(s, enc("x")), "ENOTCONN");
    await rejects(p.recv(s, 1), "ENOTCONN");
    p.bind(s, PATH);
    throws(() => p.bind(p.socket(), PATH), "EADDRINUSE");
    const t = p.socket();
    throws(() => p.connect(t, PATH), "ECONNREFUSED"); // bound, not listening
    p.listen(s, 1);
    p.connect(t, PATH);
    throws(() => p.connect(t, PATH), "EISCONN");
    throws(() => p.connect(p.socket(), PATH), "EAGAIN"); // backlog of 1 is full
    throws(() => p.connect(s, PATH), "EINVAL"); // a listening socket
    await rejects(p.recv(s, 1), "EINVAL");
    p.close(s);
    throws(() => p.connect(p.socket(), PATH), "ECONNREFUSED"); // the path stays until unlink
    throws(() => p.bind(p.socket(), PATH), "EADDRINUSE");
    p.unlink(PATH);
    throws(() => p.unlink(PATH), "ENOENT");
    throws(() => p.unlink("/dev/liveupdate"), "EPERM");
    const again = p.socket();
    p.bind(again, PATH); // free again
    const file = createTestFile(p, "plain");
    throws(() => p.send(file, enc("x")), "ENOTSOCK");
    throws(() => p.socket(2), "EAFNOSUPPORT");
    throws(() => p.socket(AF_UNIX, 2), "ESOCKTNOSUPPORT");
    throws(() => p.sendmsg(again, "text" as never), "EINVAL");
    const ns = p.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK);
    p.bind(ns, "/run/nb.sock");
    p.listen(ns);
    await rejects(p.accept(ns), "EAGAIN");
    const [a, b] = p.socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK);
    await rejects(p.recv(a, 1), "EAGAIN");
    p.send(b, enc("z"));
    expect(dec(await p.recv(a, 1))).toBe("z");
    await rejects(p.recv(a, 0), "EINVAL");
    const other = kernel.spawn("other");
    other.exit();
    throws(() => other.socket(), "ESRCH");
  });

  it("an AbortSignal interrupts a waiting accept or recv with EINTR and consumes nothing", async () => {
    const { proc: p } = await bootTest();
    const srv = p.socket();
    p.bind(srv, PATH);
    p.listen(srv);
    const ac = new AbortController();
    const accepting = p.accept(srv, { signal: ac.signal });
    ac.abort();
    await rejects(accepting, "EINTR");
    await rejects(p.accept(srv, { signal: ac.signal }), "EINTR"); // already aborted
    await rejects(p.accept(srv, { signal: "x" as never }), "EINVAL");
    const [a, b] = p.socketpair();
    const ac2 = new AbortController();
    const reading = p.recv(a, 10, { signal: ac2.signal });
    ac2.abort();
    await rejects(reading, "EINTR");
    p.send(b, enc("after"));
    expect(dec(await p.recv(a, 10))).toBe("after");
  });

  it("closing with unread data resets the peer once; an unaccepted connection is reset", async () => {
    const { proc: p } = await bootTest();
    const [a, b] = p.socketpair();
    p.send(a, enc("unread"));
    p.close(b);
    await rejects(p.recv(a, 1), "ECONNRESET");
    expect((await p.recv(a, 1)).length).toBe(0); // then end of stream
    const srv = p.socket();
    p.bind(srv, PATH);
    p.listen(srv);
    const cli = p.socket();
    p.connect(cli, PATH);
    p.close(srv);
    await rejects(p.recv(cli, 1), "ECONNRESET");
  });

  it("a wait ends with ESRCH when the process exits and ESHUTDOWN when the kernel is replaced", async () => {
    const { kernel, proc: p } = await bootTest();
    const q = kernel.spawn("q");
    const [a] = q.socketpair();
    const waiting = q.recv(a, 1);
    q.exit();
    await rejects(waiting, "ESRCH");
    const [c] = p.socketpair();
    const pending = p.recv(c, 1);
    await kexecOpen(kernel);
    await rejects(pending, "ESHUTDOWN");
  });
});

describe("misuse from plain JavaScript is EINVAL, never a TypeError", () => {
  const js = <T>(v: unknown): T => v as T;
  it.each<[string, (p: Process, s: number) => unknown, string]>([
    ["bind to a number", (p, s) => p.bind(s, js(5)), "bind: the path is a number 5, not a socket path"],
    ["connect to null", (p, s) => p.connect(s, js(null)), "connect: the path is null, not a socket path"],
    [
      "unlink of undefined",
      (p) => p.unlink(js(undefined)),
      "unlink: the path is undefined, not a socket path",
    ],
    [
      "socket of strings",
      (p) => p.socket(js("unix")),
      'socket: domain a string "unix" and type a number 1 must be integers',
    ],
    ["sendmsg of text", (p, s) => p.sendmsg(s, js("hi")), "sendmsg: data on fd 1 is not a Uint8Array"],
    [
      "sendmsg with fds not an array",
      (p, s) => p.sendmsg(s, enc("x"), js(1)),
      "sendmsg: the fds on fd 1 are not an array",
    ],
    ["listen with a string backlog", (p, s) => p.listen(s, js("9")), "listen: bad backlog 9"],
    ["fork with a number name", (p) => p.fork(js(7)), "fork: the name is a number 7, not a string"],
  ])("%s", async (_what, call, message) => {
    const { proc: p } = await bootTest();
    const s = p.socket();
    expect(s).toBe(1); // after /dev/liveupdate
    const e = throws(() => call(p, s), "EINVAL");
    expect(e.message).toBe(`EINVAL: ${message}`);
  });

  it("recvmsg with null options", async () => {
    const { proc: p } = await bootTest();
    const [a] = p.socketpair();
    const e = await rejects(p.recvmsg(a, 1, js(null)), "EINVAL");
    expect(e.message).toBe("EINVAL: recvmsg: options are null, not an object");
  });
});

describe("SCM_RIGHTS", () => {
  it("installs new fds for the same open files; in-flight references are held by the socket", async () => {
    const { kernel, proc: sender } = await bootTest();
    const receiver = kernel.spawn("receiver");
    const { cli, acc } = await connected(sender, receiver);
    const fd = createTestFile(sender, "shared", enc("payload"));
    const file = sender.file(fd) as TestFile;
    sender.lseek(fd, 3, 0);
    expect(sender.sendmsg(acc, enc("take this"), [fd])).toBe(9);
    expect(file.refCount).toBe(2); // the sender's fd + the message in flight
    sender.close(fd);
    expect(file.refCount).toBe(1);
    expect(file.isReleased).toBe(false);
    const msg = await receiver.recvmsg(cli, 100);
    expect(dec(msg.data)).toBe("take this");
    expect(msg.fds.length).toBe(1);
    expect(receiver.file(msg.fds[0]!)).toBe(file); // the same open file…
    expect(dec(receiver.read(msg.fds[0]!, 100))).toBe("load"); // …with the same position
    receiver.close(msg.fds[0]!);
    expect(file.isReleased).toBe(true);
  });

  it("fds arrive with their own message and are never glued to the next one", async () => {
    const { proc: p } = await bootTest();
    const [a, b] = p.socketpair();
    const f1 = createTestFile(p, "f1");
    p.send(a, enc("one "));
    p.sendmsg(a, enc("two"), [f1]);
    p.send(a, enc(" three"));
    const m1 = await p.recvmsg(b, 100);
    expect(dec(m1.data)).toBe("one two");
    expect(m1.fds.length).toBe(1);
    const m2 = await p.recvmsg(b, 100);
    expect(dec(m2.data)).toBe(" three");
    expect(m2.fds).toEqual([]);
  });

  it("never glues the bytes of two writers (forked processes on one socket)", async () => {
    const { proc: p } = await bootTest();
    const [a, b] = p.socketpair();
    const child = p.fork("child");
    p.send(a, enc("parent"));
    child.send(a, enc("child"));
    expect(dec(await p.recv(b, 100))).toBe("parent");
    expect(dec(await p.recv(b, 100))).toBe("child");
  });

  it("closing a socket with fds in flight drops their references and releases the files", async () => {
    const { proc: p } = await bootTest();
    const [a, b] = p.socketpair();
    const fds = [0, 1, 2].map((i) => createTestFile(p, `f${i}`));
    const files = fds.map((fd) => p.file(fd));
    p.sendmsg(a, enc("x"), fds);
    expect((p.file(b) as UnixSocket).queuedFiles).toBe(3);
    for (const fd of fds) p.close(fd);
    expect(files.every((f) => !f.isReleased && f.refCount === 1)).toBe(true);
    p.close(b); // unread
    expect(files.every((f) => f.isReleased)).toBe(true);
  });

  it("carries SCM_MAX_FD fds in one message; one more is EINVAL, a bad fd EBADF, and nothing is sent", async () => {
    const { proc: p } = await bootTest();
    const [a, b] = p.socketpair();
    const fds = Array.from({ length: SCM_MAX_FD }, (_, i) => createTestFile(p, `f${i}`));
    const extra = createTestFile(p, "extra");
    throws(() => p.sendmsg(a, enc("x"), [...fds, extra]), "EINVAL");
    throws(() => p.sendmsg(a, enc("x"), [fds[0]!, 9999]), "EBADF");
    expect(p.file(fds[0]!).refCount).toBe(1); // the reference taken before the bad fd was dropped
    throws(() => p.sendmsg(a, new Uint8Array(0), [fds[0]!]), "EINVAL");
    expect((p.file(b) as UnixSocket).queuedBytes).toBe(0);
    p.sendmsg(a, enc("many"), fds);
    const msg = await p.recvmsg(b, 10);
    expect(msg.fds.length).toBe(SCM_MAX_FD);
    expect(msg.fds.map((fd) => p.file(fd))).toEqual(fds.map((fd) => p.file(fd)));
  });

  it("recv without room for fds closes them (MSG_CTRUNC)", async () => {
    const { proc: p } = await bootTest();
    const [a, b] = p.socketpair();
    const fds = [createTestFile(p, "f0"), createTestFile(p, "f1")];
    const files = fds.map((fd) => p.file(fd));
    p.sendmsg(a, enc("x"), fds);
    for (const fd of fds) p.close(fd);
    const m = await p.recvmsg(b, 10, { maxFds: 1 });
    expect(m.truncated).toBe(true);
    expect(m.fds.length).toBe(1);
    expect(files.map((f) => f.isReleased)).toEqual([false, true]);
  });

  it("ETOOMANYREFS when a process has too many fds in flight; receiving frees the budget", async () => {
    const { proc: p } = await bootTest();
    const [a, b] = p.socketpair();
    const fd = createTestFile(p, "f");
    const batch = Array.from({ length: 250 }, () => fd);
    let sent = 0;
    while (sent + batch.length <= UNIX_INFLIGHT_MAX) {
      p.sendmsg(a, enc("x"), batch);
      sent += batch.length;
    }
    throws(() => p.sendmsg(a, enc("x"), batch), "ETOOMANYREFS");
    const m = await p.recvmsg(b, 1);
    for (const r of m.fds) p.close(r);
    p.sendmsg(a, enc("x"), batch); // room again
  });
});

describe("fork and shared session fds", () => {
  it("fork copies the fd table: same files, one more reference, shared position", async () => {
    const { proc: p } = await bootTest();
    const fd = createTestFile(p, "f", enc("0123456789"));
    const file = p.file(fd);
    const child = p.fork("child");
    expect(child.pid).not.toBe(p.pid);
    expect(child.file(fd)).toBe(file);
    expect(file.refCount).toBe(2);
    expect(dec(child.read(fd, 4))).toBe("0123");
    expect(dec(p.read(fd, 2))).toBe("45"); // one open file, one position
    child.exit();
    expect(child.hasExited).toBe(true);
    expect(file.refCount).toBe(1);
    throws(() => child.fork(), "ESRCH");
  });

  it("a session lives as long as any fd of it is open, across fork and SCM_RIGHTS", async () => {
    const { kernel, proc: p, dev } = await bootTest();
    const s = await dev.createSession("shared");
    const fd = createTestFile(p, "guest", enc("state"));
    await s.preserveFd(fd, 1n);
    const child = p.fork("child");
    const peer = kernel.spawn("peer");
    const [a, b] = p.socketpair();
    p.sendmsg(a, enc("s"), [s.fd]);
    const got = await p.recvmsg(b, 1);
    // hand the received copy to `peer` through a second pair so it lives in another process
    const { cli, acc } = await connected(p, peer);
    p.sendmsg(acc, enc("s"), got.fds);
    p.close(got.fds[0]!);
    const held = await peer.recvmsg(cli, 1);
    expect(kernel.liveupdate.stats().outgoingSessions).toBe(1);
    p.exit(); // the creator is gone
    child.exit(); // and its fork
    expect(kernel.liveupdate.stats().outgoingSessions).toBe(1);
    expect(kernel.liveupdate.stats().ownedFiles).toBe(1);
    peer.close(held.fds[0]!); // the last fd: the session is released and its file unpreserved
    await new Promise((r) => setTimeout(r, 0));
    expect(kernel.liveupdate.stats()).toMatchObject({ outgoingSessions: 0, ownedFiles: 0 });
  });
});
