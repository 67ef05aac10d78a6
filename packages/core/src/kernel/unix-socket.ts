/**
 * AF_UNIX stream sockets (`net/unix/af_unix.c`, `net/unix/scm.c`): a socket file type, the
 * per-kernel path namespace, and fd passing with `SCM_RIGHTS`.
 *
 * Happy path. A server makes a socket, `bind`s it to a path (which then exists until `unlink`,
 * like the socket inode on disk), `listen`s, and `accept`s; a client `connect`s to the path (the
 * connection is queued at once; `accept` picks it up). `socketpair` makes two connected sockets.
 * Bytes flow as a stream. `sendmsg` may carry open fds (`SCM_RIGHTS`): the sender's files get one
 * reference each, held by the message while it is in flight; `recvmsg` installs them in the
 * receiving process as new fds for the same open files (same position, same seals). Reads never
 * glue bytes of two writers together and stop after the message that carried fds, so fds always
 * arrive with the bytes they were sent with.
 *
 * Waiting. `accept` and `recvmsg` return promises that the peer resolves (a connection, data, the
 * peer's close) — nothing polls. A socket created with `SOCK_NONBLOCK` fails with `EAGAIN`
 * instead of waiting. A wait ends with `EBADF` when the fd is closed under it, `ESRCH` when the
 * process exits, `ESHUTDOWN` when the kernel is replaced, `EINTR` when the caller's
 * `AbortSignal` fires (nothing is consumed).
 *
 * Unhappy paths, as Linux: connect to a path nobody bound `ENOENT`, to a path whose socket is
 * closed or not listening `ECONNREFUSED`, to a full backlog `EAGAIN`; bind to a taken path
 * `EADDRINUSE`; send on an unconnected socket `ENOTCONN`, to a closed peer `EPIPE`; more than
 * {@link SCM_MAX_FD} fds in one message `EINVAL`; a bad fd in the message `EBADF` (nothing is
 * sent); more fds in flight from one process than {@link UNIX_INFLIGHT_MAX} `ETOOMANYREFS`; a
 * socket call on another file `ENOTSOCK`. Closing a socket with unread messages drops the
 * references their fds held (the files are released if nothing else holds them) and the peer's
 * next read fails once with `ECONNRESET`; a connection never accepted is reset when the listener
 * closes.
 *
 * Deliberate differences: only `SOCK_STREAM` and path names (no datagrams, no abstract names, no
 * credentials); sends never block (no send buffer limit); `sendmsg` with fds and no data bytes is
 * `EINVAL` (Linux silently drops those fds on a stream socket); a socket sent through itself and
 * then closed is not garbage-collected (Linux's unix GC would reclaim the cycle).
 *
 * @module
 */
import { describeValue, LiveUpdateError } from "../errors.js";
import type { KernelContext } from "./context.js";
import { KernelFile, type WaitOptions } from "./file.js";
import type { Process } from "./process.js";

/** Address family of Unix sockets. */
export const AF_UNIX = 1;
/** Stream socket type (the only one modelled). */
export const SOCK_STREAM = 1;
/** `socket()` type flag: calls fail with `EAGAIN` instead of waiting. */
export const SOCK_NONBLOCK = 0o4000;
/** `socket()` type flag: close on exec (accepted; the model has no exec). */
export const SOCK_CLOEXEC = 0o2000000;
/** Most fds one `SCM_RIGHTS` message may carry (`SCM_MAX_FD`). */
export const SCM_MAX_FD = 253;
/** Most fds one process may have in flight at once (the default `RLIMIT_NOFILE`). */
export const UNIX_INFLIGHT_MAX = 1024;
/** Longest socket path in bytes (`sun_path` is 108 bytes with its NUL). */
export const UNIX_PATH_MAX = 107;
/** Default `listen` backlog (`SOMAXCONN`). */
export const SOMAXCONN = 4096;

/** What {@link Process.recvmsg} returns. */
export interface ReceivedMessage {
  /** The bytes read; empty at end of stream (the peer closed and everything was read). */
  readonly data: Uint8Array;
  /** New fds in the receiving process for the files that came with the bytes. */
  readonly fds: number[];
  /** True when fds beyond `maxFds` came and were closed (`MSG_CTRUNC`). */
  readonly truncated: boolean;
}

/** Options of {@link Process.recvmsg}. */
export interface RecvOptions extends WaitOptions {
  /** Most fds to accept (the control buffer's room); the rest are closed. Default {@link SCM_MAX_FD}. */
  readonly maxFds?: number;
}

/** One queued write: bytes from one sender, maybe with files. */
interface Segment {
  readonly data: Uint8Array;
  off: number;
  readonly sender: Process;
  files: KernelFile[] | undefined;
}

/** The path namespace and pending waits of one kernel. */
class UnixNamespace {
  /** Bound paths; a closed socket keeps its path until `unlink` (the inode stays on disk). */
  readonly paths = new Map<string, UnixSocket>();
  /** Every pending wait, woken when the kernel halts. */
  readonly waits = new Set<() => void>();
  /** fds in flight per sending process. */
  readonly inflight = new WeakMap<Process, number>();

  constructor(ctx: KernelContext) {
    ctx.onHalt(() => {
      for (const wake of [...this.waits]) wake();
      this.waits.clear();
    });
  }

  addInflight(proc: Process, n: number): void {
    this.inflight.set(proc, (this.inflight.get(proc) ?? 0) + n);
  }
}

/** `EINVAL` unless `path` is a non-empty string without NUL. */
function checkPath(call: string, path: unknown): void {
  if (typeof path !== "string" || path.length === 0 || path.includes("\0")) {
    throw new LiveUpdateError("EINVAL", `${call}: the path is ${describeValue(path)}, not a socket path`);
  }
}

const namespaces = new WeakMap<KernelContext, UnixNamespace>();

function namespaceOf(ctx: KernelContext): UnixNamespace {
  let ns = namespaces.get(ctx);
  if (!ns) namespaces.set(ctx, (ns = new UnixNamespace(ctx)));
  return ns;
}

let nextSocketInode = 1;

/** An AF_UNIX stream socket. */
export class UnixSocket extends KernelFile {
  /** `SOCK_NONBLOCK`: fail with `EAGAIN` instead of waiting. */
  nonblock: boolean;
  private state: "unconnected" | "listening" | "connected" = "unconnected";
  /** The path this socket is bound to, if any. */
  path: string | undefined;
  private backlog = 0;
  private readonly pending: UnixSocket[] = [];
  private peer: UnixSocket | undefined;
  private peerClosed = false;
  /** An error reported once by the next read (`ECONNRESET`). */
  private error: LiveUpdateError | undefined;
  private readonly rx: Segment[] = [];
  private readonly waiters = new Set<() => void>();
  private readonly ns: UnixNamespace;
  private readonly number = nextSocketInode++;

  /**
   * @param ctx - the kernel whose path namespace the socket uses
   * @param nonblock - `SOCK_NONBLOCK`
   */
  constructor(ctx: KernelContext, nonblock = false) {
    super();
    this.ns = namespaceOf(ctx);
    this.nonblock = nonblock;
  }

  /** `socket:[<n>]`, as `/proc/<pid>/fd` shows it. */
  get description(): string {
    return `socket:[${this.number}]${this.path === undefined ? "" : ` ${this.path}`}`;
  }

  /** True while connected to a peer that has not closed. */
  get connected(): boolean {
    return this.state === "connected" && !this.peerClosed;
  }

  /** Bytes queued for reading. */
  get queuedBytes(): number {
    return this.rx.reduce((n, s) => n + s.data.length - s.off, 0);
  }

  /** fds (file references) queued for reading, held by the socket until received. */
  get queuedFiles(): number {
    return this.rx.reduce((n, s) => n + (s.files?.length ?? 0), 0);
  }

  private wait(signal: AbortSignal | undefined): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        this.waiters.delete(wake);
        this.ns.waits.delete(wake);
        signal?.removeEventListener("abort", wake);
        resolve();
      };
      this.waiters.add(wake);
      this.ns.waits.add(wake);
      signal?.addEventListener("abort", wake, { once: true });
    });
  }

  /** `EINTR` once `signal` fired. */
  private static interrupted(signal: AbortSignal | undefined, call: string): void {
    if (signal?.aborted) throw new LiveUpdateError("EINTR", `${call}: interrupted by the caller's signal`);
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  /**
   * Connects two fresh sockets to each other (socketpair and accepted connections).
   *
   * @internal
   */
  static pair(a: UnixSocket, b: UnixSocket): void {
    a.peer = b;
    b.peer = a;
    a.state = b.state = "connected";
  }

  /**
   * `bind`: claims `path`. `EINVAL` (bad path, already bound), `EADDRINUSE`.
   *
   * @internal
   */
  bind(ctx: KernelContext, path: string): void {
    checkPath("bind", path);
    if (new TextEncoder().encode(path).length > UNIX_PATH_MAX) {
      throw new LiveUpdateError("EINVAL", `bind: path ${path} is longer than ${UNIX_PATH_MAX} bytes`);
    }
    if (this.path !== undefined || this.state !== "unconnected") {
      throw new LiveUpdateError("EINVAL", `bind: ${this.description} is already bound or connected`);
    }
    if (this.ns.paths.has(path) || ctx.hasDevice(path)) {
      throw new LiveUpdateError("EADDRINUSE", `bind: ${path} already exists`);
    }
    this.ns.paths.set(path, this);
    this.path = path;
  }

  /**
   * `listen`. `EINVAL` when not bound or connected.
   *
   * @internal
   */
  listen(backlog: number): void {
    if (!Number.isSafeInteger(backlog)) throw new LiveUpdateError("EINVAL", `listen: bad backlog ${backlog}`);
    if (this.path === undefined || this.state === "connected") {
      throw new LiveUpdateError("EINVAL", `listen: ${this.description} is not bound, or is connected`);
    }
    this.state = "listening";
    this.backlog = Math.max(1, Math.min(backlog, SOMAXCONN));
  }

  /**
   * `connect` to the socket bound at `path` (see the module comment for errors).
   *
   * @internal
   */
  connect(ctx: KernelContext, path: string): void {
    checkPath("connect", path);
    if (this.state === "connected")
      throw new LiveUpdateError("EISCONN", `connect: ${this.description} is connected`);
    if (this.state === "listening")
      throw new LiveUpdateError("EINVAL", `connect: ${this.description} is listening`);
    const server = this.ns.paths.get(path);
    if (!server) throw new LiveUpdateError("ENOENT", `connect: no socket at ${path}`);
    if (server.isReleased || server.state !== "listening") {
      throw new LiveUpdateError("ECONNREFUSED", `connect: nobody listens on ${path}`);
    }
    if (server.pending.length >= server.backlog) {
      throw new LiveUpdateError("EAGAIN", `connect: the backlog of ${path} is full`);
    }
    const end = new UnixSocket(ctx);
    UnixSocket.pair(this, end);
    server.pending.push(end); // the queue holds the new socket's only reference
    server.wake();
  }

  /**
   * `accept`: the next queued connection (a new socket with one reference for the caller).
   *
   * @internal
   */
  async accept(proc: Process, fd: number, signal?: AbortSignal): Promise<UnixSocket> {
    for (;;) {
      this.recheck(proc, fd);
      UnixSocket.interrupted(signal, "accept");
      if (this.state !== "listening")
        throw new LiveUpdateError("EINVAL", `accept: ${this.description} is not listening`);
      const next = this.pending.shift();
      if (next) return next;
      if (this.nonblock) throw new LiveUpdateError("EAGAIN", `accept: no pending connection on ${this.path}`);
      await this.wait(signal);
    }
  }

  /** Fails unless `fd` of `proc` still refers to this socket (after a wait). */
  private recheck(proc: Process, fd: number): void {
    if (proc.file(fd) !== this) throw new LiveUpdateError("EBADF", `fd ${fd} was closed while waiting`);
  }

  /**
   * `sendmsg`: queues `data` (and `files`, whose references the caller hands over) at the peer.
   *
   * @internal
   */
  send(sender: Process, data: Uint8Array, files: KernelFile[]): number {
    const peer = this.peer;
    if (this.state !== "connected" || !peer) {
      throw new LiveUpdateError("ENOTCONN", `send: ${this.description} is not connected`);
    }
    if (this.peerClosed || peer.isReleased) {
      throw new LiveUpdateError("EPIPE", `send: the peer of ${this.description} has closed`);
    }
    if (data.length === 0) return 0;
    peer.rx.push({ data: data.slice(), off: 0, sender, files: files.length > 0 ? files : undefined });
    if (files.length > 0) this.ns.addInflight(sender, files.length);
    peer.wake();
    return data.length;
  }

  /**
   * Checks the in-flight limit of `sender` for `n` more fds. `ETOOMANYREFS`.
   *
   * @internal
   */
  checkInflight(sender: Process, n: number): void {
    const now = this.ns.inflight.get(sender) ?? 0;
    if (now + n > UNIX_INFLIGHT_MAX) {
      throw new LiveUpdateError(
        "ETOOMANYREFS",
        `sendmsg: process ${sender.name} would have ${now + n} fds in flight (limit ${UNIX_INFLIGHT_MAX})`,
      );
    }
  }

  /**
   * `recvmsg`: waits for bytes or end of stream, then reads up to `maxLen` bytes from one writer,
   * stopping after a message with files. Returns the bytes and the files (references now owned
   * by the caller).
   *
   * @internal
   */
  async receive(
    proc: Process,
    fd: number,
    maxLen: number,
    signal?: AbortSignal,
  ): Promise<{ data: Uint8Array; files: KernelFile[] }> {
    for (;;) {
      this.recheck(proc, fd);
      UnixSocket.interrupted(signal, "recv");
      if (this.state === "listening")
        throw new LiveUpdateError("EINVAL", `recv: ${this.description} is listening`);
      if (this.error) {
        const e = this.error;
        this.error = undefined;
        throw e;
      }
      if (this.rx.length > 0) return this.take(maxLen);
      if (this.state !== "connected")
        throw new LiveUpdateError("ENOTCONN", `recv: ${this.description} is not connected`);
      if (this.peerClosed) return { data: new Uint8Array(0), files: [] };
      if (this.nonblock) throw new LiveUpdateError("EAGAIN", `recv: nothing to read on ${this.description}`);
      await this.wait(signal);
    }
  }

  private take(maxLen: number): { data: Uint8Array; files: KernelFile[] } {
    const chunks: Uint8Array[] = [];
    let files: KernelFile[] = [];
    let n = 0;
    const writer = this.rx[0]!.sender;
    while (n < maxLen && this.rx.length > 0) {
      const seg = this.rx[0]!;
      if (seg.sender !== writer) break; // never glue two writers' bytes together
      const chunk = Math.min(maxLen - n, seg.data.length - seg.off);
      chunks.push(seg.data.subarray(seg.off, seg.off + chunk));
      seg.off += chunk;
      n += chunk;
      if (seg.files) {
        files = seg.files;
        seg.files = undefined;
        this.ns.addInflight(seg.sender, -files.length);
      }
      if (seg.off === seg.data.length) this.rx.shift();
      if (files.length > 0) break; // fds arrive with their own message, never glued to the next
    }
    const data = new Uint8Array(n);
    let at = 0;
    for (const c of chunks) {
      data.set(c, at);
      at += c.length;
    }
    return { data, files };
  }

  /** Last reference gone: reset or EOF the peer, drop queued files and pending connections. */
  protected override release(): void {
    // A bound socket's path stays in the namespace (connect gets ECONNREFUSED) until unlink.
    const unread = this.rx.length > 0;
    for (const seg of this.rx.splice(0)) {
      if (!seg.files) continue;
      this.ns.addInflight(seg.sender, -seg.files.length);
      for (const f of seg.files) f.put();
    }
    for (const end of this.pending.splice(0)) {
      end.resetPeer = true;
      end.put();
    }
    const peer = this.peer;
    if (peer && !peer.isReleased) {
      peer.peerClosed = true;
      if (unread || this.resetPeer) {
        peer.error = new LiveUpdateError(
          "ECONNRESET",
          `the peer of ${peer.description} closed with data unread`,
        );
      }
      peer.wake();
    }
    this.wake();
  }

  /** Set on a connection that was never accepted: its client sees `ECONNRESET`. */
  private resetPeer = false;

  /**
   * Removes a socket path from the namespace (`unlink(2)`): `ENOENT` when absent, `EPERM` for a
   * device node.
   *
   * @internal
   */
  static unlink(ctx: KernelContext, path: string): void {
    checkPath("unlink", path);
    const ns = namespaceOf(ctx);
    if (!ns.paths.has(path)) {
      if (ctx.hasDevice(path)) throw new LiveUpdateError("EPERM", `unlink: ${path} is a device node`);
      throw new LiveUpdateError("ENOENT", `unlink: no such file ${path}`);
    }
    const s = ns.paths.get(path)!;
    ns.paths.delete(path);
    if (!s.isReleased) s.path = undefined;
  }
}
