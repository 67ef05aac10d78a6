/**
 * The userspace face of live update: the /dev/liveupdate device file and session files, and the
 * handle objects a process uses instead of raw ioctls.
 *
 * The lifecycle, with its happy and unhappy paths, is documented on {@link LiveUpdateDevice}.
 *
 * @module
 */
import { LiveUpdateError } from "../errors.js";
import { KernelFile, Process } from "../kernel/index.js";
import type { LiveUpdate, SessionFinishStatus } from "./core.js";
import { deviceIoctl, sessionIoctl } from "./ioctl.js";
import type { Session } from "./session.js";

/**
 * Path of the device node.
 *
 * @category Sessions
 */
export const LIVEUPDATE_DEVICE_PATH = "/dev/liveupdate";

/**
 * The open /dev/liveupdate file.
 *
 * @category Sessions
 */
export class LiveUpdateDeviceFile extends KernelFile {
  readonly description = LIVEUPDATE_DEVICE_PATH;

  /** @param luo - the kernel's orchestrator */
  constructor(readonly luo: LiveUpdate) {
    super();
  }

  protected override release(): void {
    this.luo.closeDevice();
  }

  /** CREATE_SESSION / RETRIEVE_SESSION as raw ioctls (see `deviceIoctl`). */
  override ioctl(proc: Process, cmd: number, arg: Uint8Array | undefined): Promise<number> {
    return deviceIoctl(this.luo, proc, cmd, arg, (luo, session) => new SessionFile(luo, session));
  }
}

/**
 * An open session fd (`[luo_session] <name>`).
 *
 * @category Sessions
 */
export class SessionFile extends KernelFile {
  /** Settles when the release triggered by the last close finished (undefined before). */
  releaseDone: Promise<void> | undefined;

  /**
   * @param luo - the kernel's orchestrator
   * @param session - the session this fd refers to
   */
  constructor(
    readonly luo: LiveUpdate,
    readonly session: Session,
  ) {
    super();
  }

  /** `[luo_session] <name>`, as the kernel names the anonymous inode. */
  get description(): string {
    return `[luo_session] ${this.session.name}`;
  }

  protected override release(): void {
    const p = this.luo.releaseSession(this.session);
    p.catch((e: unknown) => {
      if (!(e instanceof LiveUpdateError && e.code === "ESHUTDOWN"))
        this.luo.events.warn(e, `releasing session "${this.session.name}"`);
    });
    this.releaseDone = p;
  }

  /** The session ioctls as raw ioctls (see `sessionIoctl`). */
  override ioctl(proc: Process, cmd: number, arg: Uint8Array | undefined): Promise<number> {
    return sessionIoctl(this.luo, this.session, proc, cmd, arg);
  }
}

/**
 * A process's open /dev/liveupdate.
 *
 * `proc.openLiveUpdate()` opens /dev/liveupdate (exclusive, `EBUSY`; `EIO` if the incoming state
 * could not be loaded) and returns a {@link LiveUpdateDevice}. `createSession` and
 * `retrieveSession` install a session fd in the process and return a {@link SessionHandle}
 * (the ioctls of `LIVEUPDATE_IOCTL_*` as methods). Sessions outlive the device handle. Closing a
 * session fd — through the handle, `proc.close(fd)` or process exit — releases the session:
 * outgoing sessions unpreserve their files, incoming ones finish implicitly. A call on a closed
 * fd fails with `EBADF`, on the wrong kind of fd with `EINVAL`.
 *
 * @example
 * ```ts
 * import { Machine } from "@luo/core";
 * import { testHandlerPlugin } from "@luo/core/testing";
 *
 * const kernel = await new Machine({ memory: "16 MiB" }).boot({ plugins: [testHandlerPlugin()] });
 * const proc = kernel.spawn("vmm");
 * const dev = await proc.openLiveUpdate(); // exclusive: a second open is EBUSY
 * const session = await dev.createSession("vm-0");
 * console.log(await session.getName()); // "vm-0"
 * dev.close(); // sessions outlive the device fd
 * ```
 *
 * @category Entry points
 */
export class LiveUpdateDevice {
  /**
   * @param proc - the owning process
   * @param fd - the device fd
   */
  constructor(
    readonly proc: Process,
    readonly fd: number,
  ) {}

  private luo(): LiveUpdate {
    const f = this.proc.file(this.fd);
    if (!(f instanceof LiveUpdateDeviceFile))
      throw new LiveUpdateError("EINVAL", `fd ${this.fd} is not /dev/liveupdate`);
    return f.luo;
  }

  /**
   * CREATE_SESSION: a new outgoing session and its fd.
   * Errors: `EINVAL` (name not 1..63 bytes or has NUL), `EEXIST`, `ENOSPC`, `ENOMEM`, `ESHUTDOWN`.
   */
  async createSession(name: string): Promise<SessionHandle> {
    const luo = this.luo();
    const s = await luo.createSession(name);
    return new SessionHandle(this.proc, this.proc.installFile(new SessionFile(luo, s)));
  }

  /**
   * RETRIEVE_SESSION: an incoming session by name, once per boot.
   * Errors: `ENOENT` (unknown or already closed), `EINVAL` (already retrieved), `ESHUTDOWN`.
   */
  async retrieveSession(name: string): Promise<SessionHandle> {
    const luo = this.luo();
    const s = await luo.retrieveSession(name);
    return new SessionHandle(this.proc, this.proc.installFile(new SessionFile(luo, s)));
  }

  /** Closes the device fd; sessions stay alive. */
  close(): void {
    this.proc.close(this.fd);
  }
}

/**
 * A process's session fd, with the session ioctls as methods.
 *
 * @example
 * ```ts
 * import { Machine, isLiveUpdateError } from "@luo/core";
 * import { createTestFile, testHandlerPlugin } from "@luo/core/testing";
 *
 * const plugins = [testHandlerPlugin()];
 * const k1 = await new Machine({ memory: "32 MiB" }).boot({ plugins });
 * const p1 = k1.spawn("vmm");
 * const out = await (await p1.openLiveUpdate()).createSession("vm-0");
 * const fd = createTestFile(p1, "ram", new TextEncoder().encode("guest ram"));
 * await out.preserveFd(fd, 42n); // PRESERVE_FD under token 42
 * p1.close(fd); // live update keeps its own reference
 *
 * const k2 = await k1.kexec();
 * const p2 = k2.spawn("vmm");
 * const inc = await (await p2.openLiveUpdate()).retrieveSession("vm-0");
 * const fd2 = await inc.retrieveFd(42n); // RETRIEVE_FD
 * console.log(new TextDecoder().decode(p2.pread(fd2, 9, 0))); // "guest ram"
 * try {
 *   await inc.preserveFd(fd2, 1n);
 * } catch (e) {
 *   console.log(isLiveUpdateError(e) && e.code); // "EINVAL": incoming sessions cannot preserve
 * }
 * await inc.finish(); // FINISH: every handler agreed, files finished LIFO
 * await inc.close();
 * ```
 *
 * @category Entry points
 */
export class SessionHandle {
  /**
   * @param proc - the owning process
   * @param fd - the session fd
   */
  constructor(
    readonly proc: Process,
    readonly fd: number,
  ) {}

  private target(): SessionFile {
    const f = this.proc.file(this.fd);
    if (!(f instanceof SessionFile))
      throw new LiveUpdateError("EINVAL", `fd ${this.fd} is not a live update session`);
    return f;
  }

  /** The session's name (no lock; use {@link SessionHandle.getName} for the ioctl). */
  get name(): string {
    return this.target().session.name;
  }

  /**
   * PRESERVE_FD: hands `fd` of this process to LUO under `token` (outgoing sessions).
   * Errors, in check order: `EINVAL` (incoming session or bad token), `EEXIST` (token in use),
   * `ENOSPC`/`ENOMEM`, `EBADF` (fd not open), `ENOENT` (no handler), `EBUSY` (already owned by
   * live update), then whatever an FLB or the handler's `preserve` fails with.
   */
  async preserveFd(fd: number, token: bigint | number): Promise<void> {
    const t = this.target();
    await t.luo.preserveFd(t.session, this.proc, fd, token);
  }

  /**
   * RETRIEVE_FD: installs the incoming file with `token` as a new fd (incoming sessions).
   * Errors: `EINVAL` (outgoing session), `ENOENT` (no such token), the handler's sticky error.
   */
  async retrieveFd(token: bigint | number): Promise<number> {
    const t = this.target();
    const file = await t.luo.retrieveFile(t.session, token);
    return this.proc.installFile(file);
  }

  /** FINISH (incoming sessions). `EINVAL` (outgoing), `EBUSY` (a handler vetoed; nothing changed). */
  async finish(): Promise<void> {
    const t = this.target();
    await t.luo.finish(t.session);
  }

  /**
   * What FINISH would decide now, without finishing (incoming sessions; the model's answer to
   * "why can't this session finish"): per file whether it was retrieved (or its sticky retrieve
   * error) and whether its handler's `canFinish` would veto. Files never retrieved do not block
   * FINISH by themselves; FINISH hands them back to their handler's `finish`.
   * Errors: `EINVAL` (outgoing session), `EBADF` (closed), `ESHUTDOWN`.
   */
  async finishStatus(): Promise<SessionFinishStatus> {
    const t = this.target();
    return t.luo.finishStatus(t.session);
  }

  /** GET_NAME: the full session name. */
  async getName(): Promise<string> {
    const t = this.target();
    return t.luo.getName(t.session);
  }

  /**
   * Closes the session fd and waits for the release: outgoing sessions unpreserve their files
   * (LIFO); incoming sessions finish implicitly and reject with `EBUSY` if a handler vetoed (the
   * session then stays stuck until the next live update).
   */
  async close(): Promise<void> {
    const t = this.target();
    this.proc.close(this.fd);
    if (t.isReleased) await t.releaseDone;
  }
}

declare module "../kernel/process.js" {
  interface Process {
    /**
     * Opens /dev/liveupdate. Errors: `EBUSY` (already open), `EIO` (the incoming state could
     * not be loaded; cached for the whole boot), `ENOENT` (no live update support), `ESHUTDOWN`.
     */
    openLiveUpdate(): Promise<LiveUpdateDevice>;
  }
}

Process.prototype.openLiveUpdate = async function openLiveUpdate(this: Process): Promise<LiveUpdateDevice> {
  return new LiveUpdateDevice(this, await this.open(LIVEUPDATE_DEVICE_PATH));
};

/**
 * Registers /dev/liveupdate on a kernel context for `luo`.
 *
 * @category Sessions
 */
export function registerLiveUpdateDevice(
  luo: LiveUpdate,
  register: (path: string, open: () => Promise<KernelFile>) => void,
): void {
  register(LIVEUPDATE_DEVICE_PATH, async () => {
    await luo.openDevice();
    return new LiveUpdateDeviceFile(luo);
  });
}
