/**
 * A process and its fd table, with the generic file syscalls.
 *
 * Every fd holds one reference on its {@link KernelFile}; `close` drops it, `dup` takes another,
 * `exit` closes every fd. fds are allocated lowest-free first, like Linux. A bad fd is `EBADF`.
 * File-type specific behaviour (memfd seals, sizes) lives in the file objects; the syscalls here
 * only do argument checking and dispatch. After the kernel halted, every syscall fails with
 * `ESHUTDOWN`; after `exit`, with `ESRCH`.
 *
 * `fork` makes a child whose fd table is a copy of the parent's: the same open files, each with
 * one more reference (so file positions are shared, and a session or socket lives until the
 * last process holding an fd of it closes it or exits). The AF_UNIX socket calls (`socket`,
 * `bind`, `listen`, `connect`, `accept`, `socketpair`, `send`/`recv`, `sendmsg`/`recvmsg` with
 * fd passing, `unlink`) check their arguments here and run in `unix-socket.ts`.
 *
 * @module
 */
import { describeValue, LiveUpdateError } from "../errors.js";
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, SEEK_CUR, SEEK_END, SEEK_SET } from "./file.js";
import type { KernelFile, WaitOptions } from "./file.js";
import type { KernelContext } from "./context.js";
import {
  AF_UNIX,
  SCM_MAX_FD,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  SOMAXCONN,
  UnixSocket,
  type ReceivedMessage,
  type RecvOptions,
} from "./unix-socket.js";

/**
 * `fcntl` command: add seals.
 *
 * @category Kernel files and processes
 */
export const F_ADD_SEALS = 1033;
/**
 * `fcntl` command: read seals.
 *
 * @category Kernel files and processes
 */
export const F_GET_SEALS = 1034;

/**
 * Largest file offset accepted by the syscalls (fits a JS safe integer).
 *
 * @category Kernel files and processes
 */
export const MAX_FILE_OFFSET = 2 ** 52;

/** Checks a file offset or length argument of syscall `op`; `EINVAL` naming what is wrong. */
function checkOffset(value: number, what: "offset" | "length", op: string): void {
  if (typeof value !== "number")
    throw new LiveUpdateError("EINVAL", `${op}: ${what} is ${describeValue(value)}, not a number`);
  if (!Number.isInteger(value))
    throw new LiveUpdateError("EINVAL", `${op}: ${what} ${value} is not an integer`);
  if (value < 0) throw new LiveUpdateError("EINVAL", `${op}: ${what} ${value} is negative`);
  if (value > MAX_FILE_OFFSET) {
    throw new LiveUpdateError("EINVAL", `${op}: ${what} ${value} is beyond the largest file offset 2^52`);
  }
}

function checkWaitOptions(options: WaitOptions | undefined, what: string): void {
  if (options === undefined) return;
  if (typeof options !== "object" || options === null) {
    throw new LiveUpdateError("EINVAL", `${what}: options must be an object`);
  }
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) {
    throw new LiveUpdateError("EINVAL", `${what}: options.signal is not an AbortSignal`);
  }
}

/**
 * A user process: a name, a pid and an fd table. Start one with `kernel.spawn(name)`.
 *
 * Every syscall fails with `ESHUTDOWN` once the kernel halted (replaced by a live update or shut
 * down), `ESRCH` after {@link Process.exit}, and `EBADF` for an fd that is not open; the codes
 * listed on each method come on top. File-type specific errors (memfd seals: `EPERM`; a file
 * type without the operation: `EINVAL`, `ESPIPE`, `EOPNOTSUPP`) come from the file object.
 *
 * @example
 * ```ts
 * import { Machine, SEEK_SET } from "@luo/core";
 * import { createTestFile, testHandlerPlugin } from "@luo/core/testing";
 *
 * const kernel = await new Machine({ memory: "16 MiB" }).boot({ plugins: [testHandlerPlugin()] });
 * const proc = kernel.spawn("vmm");
 * const fd = createTestFile(proc, "state");
 * proc.write(fd, new TextEncoder().encode("hello"));
 * proc.lseek(fd, 0, SEEK_SET);
 * console.log(new TextDecoder().decode(proc.read(fd, 5))); // "hello"
 * proc.close(fd);
 * ```
 *
 * @category Entry points
 */
export class Process {
  private readonly fds = new Map<number, KernelFile>();
  /** No fd below this is free (keeps lowest-free allocation O(1) amortized). */
  private lowestFree = 0;
  private exited = false;

  /**
   * @param kernel - the kernel this process runs on
   * @param name - a label for messages
   * @param pid - process id
   */
  constructor(
    readonly kernel: KernelContext,
    readonly name: string,
    readonly pid: number,
  ) {}

  /** True once the process exited (every later call fails with `ESRCH`). */
  get hasExited(): boolean {
    return this.exited;
  }

  private check(): void {
    this.kernel.assertRunning();
    if (this.exited) throw new LiveUpdateError("ESRCH", `process ${this.name} (pid ${this.pid}) has exited`);
  }

  /** The file behind `fd` (no new reference). Errors: `EBADF`, `ESRCH`, `ESHUTDOWN`. */
  file(fd: number): KernelFile {
    this.check();
    const f = this.fds.get(fd);
    if (!f) throw new LiveUpdateError("EBADF", `fd ${fd} is not open in process ${this.name}`);
    return f;
  }

  /** The file behind `fd` for pread/pwrite: `ESPIPE` if it has no position. */
  private positionalFile(fd: number, op: string): KernelFile {
    const f = this.file(fd);
    if (!f.positional)
      throw new LiveUpdateError("ESPIPE", `${op}: ${f.description} (fd ${fd}) has no position`);
    return f;
  }

  /** Installs `file` at the lowest free fd, consuming one reference the caller owns. Errors: `ESRCH`, `ESHUTDOWN`. */
  installFile(file: KernelFile): number {
    this.check();
    let fd = this.lowestFree;
    while (this.fds.has(fd)) fd++;
    this.fds.set(fd, file);
    this.lowestFree = fd + 1;
    return fd;
  }

  /**
   * Opens a device node registered by the kernel or a plugin. Errors: `ENOENT` (no such node),
   * the device's own open errors (/dev/liveupdate: `EBUSY`, `EIO`), `ESRCH`, `ESHUTDOWN`.
   */
  async open(path: string): Promise<number> {
    this.check();
    const file = await this.kernel.device(path)(this);
    return this.installFile(file);
  }

  /** Closes `fd`, dropping its reference. Errors: `EBADF`, `ESRCH`, `ESHUTDOWN`. */
  close(fd: number): void {
    const f = this.file(fd);
    this.fds.delete(fd);
    if (fd < this.lowestFree) this.lowestFree = fd;
    f.put();
  }

  /** Duplicates `fd` onto the lowest free fd (same file object). Errors: `EBADF`, `ESRCH`, `ESHUTDOWN`. */
  dup(fd: number): number {
    return this.installFile(this.file(fd).get());
  }

  /**
   * Reads up to `length` bytes at the file position and advances it. Errors: `EBADF`, `EINVAL`
   * (bad length, or the file cannot be read), `ESRCH`, `ESHUTDOWN`.
   */
  read(fd: number, length: number): Uint8Array {
    const f = this.file(fd);
    checkOffset(length, "length", "read");
    const out = f.readAt(f.pos, length);
    if (f.positional) f.pos += out.length;
    return out;
  }

  /**
   * Writes `data` at the file position and advances it; returns bytes written. Errors: `EBADF`,
   * `EINVAL` (the file cannot be written), `EPERM` (sealed memfd), `EFBIG`/`ENOMEM`
   * from the file, `ESRCH`, `ESHUTDOWN`.
   */
  write(fd: number, data: Uint8Array): number {
    const f = this.file(fd);
    const n = f.writeAt(f.pos, data);
    if (f.positional) f.pos += n;
    return n;
  }

  /**
   * `read` that may wait: like {@link Process.read}, but where the file would block (an eventfd
   * at 0) the promise waits until a write or signal lets the read proceed; it never spins. The
   * fd may be closed meanwhile (the wait holds the file). Errors as `read`, plus `EINTR` when
   * `options.signal` aborts the wait and `ESHUTDOWN` when the kernel halts during it.
   */
  async readAsync(fd: number, length: number, options?: WaitOptions): Promise<Uint8Array> {
    const f = this.file(fd);
    checkOffset(length, "length", "readAsync");
    checkWaitOptions(options, "readAsync");
    const out = await f.readWait(this, f.pos, length, options);
    if (f.positional) f.pos += out.length;
    return out;
  }

  /**
   * `write` that may wait: like {@link Process.write}, but where the file would block (an
   * eventfd without room) the promise waits until a read makes room. Errors as `write`, plus
   * `EINTR` and `ESHUTDOWN` as for {@link Process.readAsync}.
   */
  async writeAsync(fd: number, data: Uint8Array, options?: WaitOptions): Promise<number> {
    const f = this.file(fd);
    checkWaitOptions(options, "writeAsync");
    const n = await f.writeWait(this, f.pos, data, options);
    if (f.positional) f.pos += n;
    return n;
  }

  /**
   * Reads up to `length` bytes at `offset` without moving the position. Errors: `EBADF`,
   * `EINVAL` (bad length or offset, or the file cannot be read), `ESPIPE` (a file without a
   * position), `ESRCH`, `ESHUTDOWN`.
   */
  pread(fd: number, length: number, offset: number): Uint8Array {
    const f = this.positionalFile(fd, "pread");
    checkOffset(length, "length", "pread");
    checkOffset(offset, "offset", "pread");
    return f.readAt(offset, length);
  }

  /**
   * Writes `data` at `offset` without moving the position; returns bytes written. Errors:
   * `EBADF`, `EINVAL` (bad offset, or the file cannot be written), `EPERM` (sealed memfd),
   * `EFBIG`/`ENOMEM` from the file, `ESPIPE` (a file without a position), `ESRCH`,
   * `ESHUTDOWN`.
   */
  pwrite(fd: number, data: Uint8Array, offset: number): number {
    const f = this.positionalFile(fd, "pwrite");
    checkOffset(offset, "offset", "pwrite");
    return f.writeAt(offset, data);
  }

  /**
   * Moves the file position (`SEEK_SET`/`SEEK_CUR`/`SEEK_END`); returns the new position.
   * Errors: `EBADF`, `ESPIPE` (not seekable), `EINVAL` (bad whence or a negative result),
   * `ESRCH`, `ESHUTDOWN`. A file without a position (an eventfd) returns it unchanged.
   */
  lseek(fd: number, offset: number, whence: number): number {
    const f = this.file(fd);
    if (f.llseek) return f.llseek(offset, whence);
    if (!f.positional) return f.pos; // noop_llseek
    const size = f.size(); // ESPIPE for files that cannot seek
    let base: number;
    if (whence === SEEK_SET) base = 0;
    else if (whence === SEEK_CUR) base = f.pos;
    else if (whence === SEEK_END) base = size;
    else throw new LiveUpdateError("EINVAL", `lseek: bad whence ${whence} on fd ${fd}`);
    const pos = base + offset;
    if (!Number.isSafeInteger(pos) || pos < 0) {
      throw new LiveUpdateError("EINVAL", `lseek: resulting offset ${pos} is invalid on fd ${fd}`);
    }
    f.pos = pos;
    return pos;
  }

  /**
   * Sets the file size. Errors: `EBADF`, `EINVAL` (bad length, or the file has no size),
   * `EPERM` (sealed memfd), `ENOMEM`, `ESRCH`, `ESHUTDOWN`.
   */
  ftruncate(fd: number, length: number): void {
    const f = this.file(fd);
    checkOffset(length, "length", "ftruncate");
    f.truncate(length);
  }

  /**
   * Allocates (or with `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`, punches) a range. Errors:
   * `EBADF`, `EINVAL` (bad offset or length, zero length), `EOPNOTSUPP` (unknown mode, a punch
   * without KEEP_SIZE, or a file without fallocate), `EPERM` (sealed memfd), `ENOMEM`, `ESRCH`,
   * `ESHUTDOWN`.
   */
  fallocate(fd: number, mode: number, offset: number, length: number): void {
    const f = this.file(fd);
    checkOffset(offset, "offset", "fallocate");
    checkOffset(length, "length", "fallocate");
    if (length === 0) throw new LiveUpdateError("EINVAL", `fallocate: zero length on fd ${fd}`);
    if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE)) {
      throw new LiveUpdateError("EOPNOTSUPP", `fallocate: unsupported mode 0x${mode.toString(16)}`);
    }
    if (mode & FALLOC_FL_PUNCH_HOLE && !(mode & FALLOC_FL_KEEP_SIZE)) {
      throw new LiveUpdateError("EOPNOTSUPP", `fallocate: PUNCH_HOLE requires KEEP_SIZE`);
    }
    f.fallocate(mode, offset, length);
  }

  /**
   * `fcntl`: `F_ADD_SEALS` (returns 0) and `F_GET_SEALS` (returns the seals). Errors: `EBADF`,
   * `EINVAL` (other commands, unknown seal bits, a file without seals), `EPERM` (`F_SEAL_SEAL`
   * set), `EBUSY` (write seal with live writable mappings), `ESRCH`, `ESHUTDOWN`.
   */
  fcntl(fd: number, cmd: number, arg = 0): number {
    const f = this.file(fd);
    if (cmd === F_GET_SEALS) return f.getSeals();
    if (cmd === F_ADD_SEALS) {
      f.addSeals(arg);
      return 0;
    }
    throw new LiveUpdateError("EINVAL", `fcntl: unsupported command ${cmd} on fd ${fd}`);
  }

  /**
   * `ioctl(fd, cmd, arg)`: `arg` is the argument's user memory (`undefined` = NULL). Errors:
   * `EBADF`, `ENOTTY` (a command the file does not know), `EFAULT` (NULL or short argument),
   * the command's own errors (see the `LIVEUPDATE_*` constants), `ESRCH`, `ESHUTDOWN`.
   */
  async ioctl(fd: number, cmd: number, arg?: Uint8Array): Promise<number> {
    return this.file(fd).ioctl(this, cmd, arg);
  }

  /**
   * `fork`: a child process on the same kernel with a copy of this fd table (same open files,
   * one more reference each) and a new pid. Errors: `ESRCH` (exited), `ESHUTDOWN`.
   */
  fork(name: string = this.name): Process {
    this.check();
    if (typeof name !== "string") {
      throw new LiveUpdateError("EINVAL", `fork: the name is ${describeValue(name)}, not a string`);
    }
    const child = new Process(this.kernel, name, this.kernel.allocPid());
    for (const [fd, f] of this.fds) child.fds.set(fd, f.get());
    child.lowestFree = this.lowestFree;
    return child;
  }

  // ---- AF_UNIX sockets ------------------------------------------------------------------

  private sock(fd: number): UnixSocket {
    const f = this.file(fd);
    if (!(f instanceof UnixSocket))
      throw new LiveUpdateError("ENOTSOCK", `fd ${fd} (${f.description}) is not a socket`);
    return f;
  }

  private newSocket(domain: number, type: number): UnixSocket {
    this.check();
    if (!Number.isSafeInteger(domain) || !Number.isSafeInteger(type)) {
      throw new LiveUpdateError(
        "EINVAL",
        `socket: domain ${describeValue(domain)} and type ${describeValue(type)} must be integers`,
      );
    }
    if (domain !== AF_UNIX)
      throw new LiveUpdateError("EAFNOSUPPORT", `socket: address family ${domain} is not supported`);
    if (!Number.isSafeInteger(type) || (type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) !== SOCK_STREAM) {
      throw new LiveUpdateError(
        "ESOCKTNOSUPPORT",
        `socket: type ${type} is not supported (SOCK_STREAM only)`,
      );
    }
    return new UnixSocket(this.kernel, (type & SOCK_NONBLOCK) !== 0);
  }

  /**
   * `socket(AF_UNIX, SOCK_STREAM [| SOCK_NONBLOCK])`: a new unconnected socket's fd.
   * Errors: `EAFNOSUPPORT` (other family), `ESOCKTNOSUPPORT` (other type).
   */
  socket(domain: number = AF_UNIX, type: number = SOCK_STREAM): number {
    return this.installFile(this.newSocket(domain, type));
  }

  /** `socketpair`: two connected sockets' fds. Errors as {@link Process.socket}. */
  socketpair(domain: number = AF_UNIX, type: number = SOCK_STREAM): [number, number] {
    const a = this.newSocket(domain, type);
    const b = this.newSocket(domain, type);
    UnixSocket.pair(a, b);
    return [this.installFile(a), this.installFile(b)];
  }

  /**
   * `bind` the socket to `path` (at most 107 bytes). Errors: `EBADF`, `ENOTSOCK`, `EINVAL`
   * (bad path, already bound or connected), `EADDRINUSE` (the path exists, even if its socket
   * closed: `unlink` it first).
   */
  bind(fd: number, path: string): void {
    this.sock(fd).bind(this.kernel, path);
  }

  /** `listen` on a bound socket. Errors: `EBADF`, `ENOTSOCK`, `EINVAL` (not bound, or connected). */
  listen(fd: number, backlog: number = SOMAXCONN): void {
    this.sock(fd).listen(backlog);
  }

  /**
   * `connect` to the socket listening at `path`; the connection is queued for `accept` at once.
   * Errors: `EBADF`, `ENOTSOCK`, `EISCONN`, `EINVAL` (listening socket), `ENOENT` (no such
   * path), `ECONNREFUSED` (its socket closed or does not listen), `EAGAIN` (backlog full).
   */
  connect(fd: number, path: string): void {
    this.sock(fd).connect(this.kernel, path);
  }

  /**
   * `accept`: waits for a connection and returns its new fd. Errors: `EBADF`, `ENOTSOCK`,
   * `EINVAL` (not listening, bad options), `EAGAIN` (`SOCK_NONBLOCK`, none pending), `EINTR`
   * (`options.signal` fired), `ESRCH`, `ESHUTDOWN`.
   */
  async accept(fd: number, options?: WaitOptions): Promise<number> {
    const s = this.sock(fd);
    checkWaitOptions(options, "accept");
    const end = await s.accept(this, fd, options?.signal);
    return this.installFile(end);
  }

  /** `send` without fds: see {@link Process.sendmsg}. */
  send(fd: number, data: Uint8Array): number {
    return this.sendmsg(fd, data, []);
  }

  /**
   * `sendmsg` with `SCM_RIGHTS`: queues `data` at the peer with the open files of `fds` (each
   * gets a reference held while in flight). Returns the bytes sent. Errors: `EBADF` (the socket
   * or any fd in `fds`; nothing is sent), `ENOTSOCK`, `ENOTCONN`, `EPIPE` (peer closed),
   * `EINVAL` (not bytes, more than {@link SCM_MAX_FD} fds, or fds without data bytes),
   * `ETOOMANYREFS` (too many fds in flight from this process).
   */
  sendmsg(fd: number, data: Uint8Array, fds: readonly number[] = []): number {
    const s = this.sock(fd);
    if (!(data instanceof Uint8Array))
      throw new LiveUpdateError("EINVAL", `sendmsg: data on fd ${fd} is not a Uint8Array`);
    if (!Array.isArray(fds))
      throw new LiveUpdateError("EINVAL", `sendmsg: the fds on fd ${fd} are not an array`);
    if (fds.length > SCM_MAX_FD) {
      throw new LiveUpdateError("EINVAL", `sendmsg: ${fds.length} fds exceed SCM_MAX_FD (${SCM_MAX_FD})`);
    }
    if (fds.length > 0 && data.length === 0) {
      throw new LiveUpdateError(
        "EINVAL",
        `sendmsg: fds need at least one data byte on stream socket fd ${fd}`,
      );
    }
    if (fds.length > 0) s.checkInflight(this, fds.length);
    const files: KernelFile[] = [];
    try {
      for (const f of fds) files.push(this.file(f).get());
      return s.send(this, data, files);
    } catch (e) {
      for (const f of files) f.put();
      throw e;
    }
  }

  /** `recv`: {@link Process.recvmsg} that closes any fds that came with the bytes. */
  async recv(fd: number, length: number, options?: WaitOptions): Promise<Uint8Array> {
    return (await this.recvmsg(fd, length, { signal: options?.signal, maxFds: 0 })).data;
  }

  /**
   * `recvmsg`: waits until bytes arrive (or the peer closes), then reads up to `length` bytes of
   * one writer, stopping after a message that carried fds; the fds are installed here as new
   * fds (beyond `maxFds` they are closed and `truncated` is set). Empty data = end of stream.
   * Errors: `EBADF`, `ENOTSOCK`, `EINVAL` (bad length, listening socket), `ENOTCONN`,
   * `ECONNRESET` (once, the peer closed with data unread), `EAGAIN` (`SOCK_NONBLOCK`, nothing
   * to read), `EINTR` (`options.signal` fired; nothing is consumed), `ESRCH`, `ESHUTDOWN`.
   */
  async recvmsg(fd: number, length: number, options: RecvOptions = {}): Promise<ReceivedMessage> {
    const s = this.sock(fd);
    if (!Number.isSafeInteger(length) || length < 1) {
      throw new LiveUpdateError("EINVAL", `recvmsg: length ${length} on fd ${fd} is not a positive integer`);
    }
    if (typeof options !== "object" || options === null) {
      throw new LiveUpdateError("EINVAL", `recvmsg: options are ${describeValue(options)}, not an object`);
    }
    checkWaitOptions(options, "recvmsg");
    const maxFds = options.maxFds ?? SCM_MAX_FD;
    if (!Number.isSafeInteger(maxFds) || maxFds < 0)
      throw new LiveUpdateError("EINVAL", `recvmsg: bad maxFds ${maxFds}`);
    const { data, files } = await s.receive(this, fd, length, options.signal);
    const kept = files.slice(0, maxFds);
    for (const f of files.slice(maxFds)) f.put();
    return { data, fds: kept.map((f) => this.installFile(f)), truncated: files.length > kept.length };
  }

  /** `unlink` a socket path (the socket itself stays open). Errors: `ENOENT`, `EPERM` (device node). */
  unlink(path: string): void {
    this.check();
    UnixSocket.unlink(this.kernel, path);
  }

  /** Closes every fd; the process can make no further calls (they fail with `ESRCH`). Idempotent. */
  exit(): void {
    if (this.exited) return;
    const files = [...this.fds.values()];
    this.fds.clear();
    this.exited = true;
    for (const f of files) f.put();
  }
}
