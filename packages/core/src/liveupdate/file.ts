/**
 * Preserved files of one session (`luo_file.c`).
 *
 * Old kernel. PRESERVE (caller holds the session mutex): token already used in this session
 * `EEXIST` → grow the file block chain (`ENOSPC`/`ENOMEM`) → take a reference on the fd's file
 * (`EBADF`) → first handler whose `canPreserve` accepts (`ENOENT`) → identity not owned anywhere
 * (`EBUSY`) → FLB preserve (first user) → handler `preserve`. Any failure unwinds exactly in
 * reverse. Close of the session unpreserves LIFO. Reboot freezes FIFO; a failure unfreezes the
 * files already frozen, FIFO, and zeroes the block counts. File records are written into the
 * pre-grown blocks at preserve time (files only come and go at the tail), so the reboot path
 * only sets counts and rewrites records whose data `freeze` changed.
 *
 * New kernel. Files are rebuilt from the handover records at the first /dev/liveupdate open
 * (a missing handler is `ENOENT`, which fails the open). RETRIEVE_FD works in any order, is
 * idempotent after success (same file object) and remembers a failure forever. FINISH asks every
 * `canFinish` FIFO (any veto → `EBUSY`, nothing changes), then finishes every file LIFO,
 * retrieved or not, drops FLB references and LUO's file references, and frees the file blocks.
 *
 * @module
 */
import { describeValue, LiveUpdateError, toLiveUpdateError } from "../errors.js";
import { KernelFile, type Process } from "../kernel/index.js";
import { BlockChain, FILE_BLOCKS, FILE_SER, type IncomingFileRecord } from "../abi/index.js";
import type { DependencyContainer } from "tsyringe";
import type { Kho, KhoIncoming } from "../kho/index.js";
import type { Machine } from "../machine/index.js";
import type { FlbAccess } from "./flb.js";
import type {
  FileHandler,
  FinishArgs,
  HandlerContext,
  PreserveArgs,
  PreserveResult,
  PreservedArgs,
  RetrieveStatus,
  SessionDependencies,
} from "./handler.js";
import { fileLockLevel, LevelMutex } from "./locks.js";
import type { RegisteredHandler } from "./registration.js";
import type { LuoServices } from "./services.js";

/** One file owned by LUO in a session. */
export class LuoFile {
  /** The kernel file (old kernel: the preserved file; new kernel: set once retrieved). */
  file: KernelFile | undefined;
  /** Serialized data from `preserve`/`freeze` (old) or from the handover (new). */
  data: bigint;
  /** Runtime-only data from `preserve`. */
  privateData: unknown;
  /** New kernel: 0, 1 or the sticky error. */
  retrieveStatus: RetrieveStatus = 0;
  /** Identity in the double-preservation registry, while registered. */
  id: unknown;
  private lock: LevelMutex | undefined;

  constructor(
    readonly entry: RegisteredHandler,
    readonly token: bigint,
    readonly index: number,
    readonly session: string,
    data: bigint,
  ) {
    this.data = data;
  }

  /** Protects retrieve status, file and data (created on first use: most files never need it). */
  get mutex(): LevelMutex {
    return (this.lock ??= new LevelMutex(this, fileLockLevel(this.index)));
  }

  /** `file <token> of session "<name>"`, used in lock messages. */
  toString(): string {
    return `file ${this.token} of session "${this.session}"`;
  }

  /** The handler's compatible string. */
  get compatible(): string {
    return this.entry.handler.compatible;
  }
}

/** One incoming file as FINISH would see it now (see `SessionHandle.finishStatus`). */
export interface FileFinishStatus {
  /** The file's token. */
  readonly token: bigint;
  /** Its handler's compatible. */
  readonly compatible: string;
  /** True once RETRIEVE_FD succeeded for it in this boot. */
  readonly retrieved: boolean;
  /** The sticky error of a failed RETRIEVE_FD, if any. */
  readonly retrieveError: LiveUpdateError | undefined;
  /** The handler's `canFinish` answer now (true when it has none); false vetoes FINISH. */
  readonly canFinish: boolean;
  /** The error `canFinish` threw, if it threw (also a veto). */
  readonly vetoError: LiveUpdateError | undefined;
}

/**
 * Converts a public token argument to a u64 bigint. `EINVAL` for anything else: a value that is
 * neither a bigint nor a number (named with its type), a number that is not a safe integer (use a
 * bigint), a negative value, or a bigint of 2^64 or more.
 */
export function toU64(value: bigint | number, what: string): bigint {
  if (typeof value === "number") {
    if (!Number.isInteger(value)) throw new LiveUpdateError("EINVAL", `${what} ${value} is not an integer`);
    if (value < 0) throw new LiveUpdateError("EINVAL", `${what} ${value} is negative, not a u64`);
    if (!Number.isSafeInteger(value)) {
      throw new LiveUpdateError(
        "EINVAL",
        `${what} ${value} is not a safe integer (above 2^53 - 1); pass it as a bigint`,
      );
    }
    return BigInt(value);
  }
  if (typeof value !== "bigint") {
    throw new LiveUpdateError("EINVAL", `${what} is ${describeValue(value)}, not a bigint or a number`);
  }
  if (value < 0n || value >= 1n << 64n) {
    throw new LiveUpdateError("EINVAL", `${what} ${value} is not a u64 (0 to 2^64 - 1)`);
  }
  return value;
}

/** The dependency API seen by the callback of the file at index `limit` (see `SessionDependencies`). */
class SessionDeps implements SessionDependencies {
  constructor(
    private readonly set: FileSet,
    private readonly limit: number,
  ) {}

  get sessionName(): string {
    return this.set.session;
  }

  tokenOf(file: KernelFile): bigint {
    return this.set.tokenBefore(file, this.limit);
  }

  incomingFile(token: bigint | number): Promise<KernelFile> {
    return this.set.incomingBefore(token, this.limit);
  }
}

/**
 * One callback's arguments (see `FileSet.ctx`); satisfies every args interface of handler.ts.
 * Plain own fields, so a handler may spread or destructure it like the object literal it models.
 */
class CallArgs implements HandlerContext {
  readonly machine: Machine;
  readonly kho: Kho;
  readonly incoming: KhoIncoming | undefined;
  readonly flb: FlbAccess;
  readonly container: DependencyContainer;
  file: KernelFile | undefined = undefined;
  data = 0n;
  privateData: unknown = undefined;
  retrieveStatus: RetrieveStatus = 0;

  constructor(
    svc: LuoServices,
    readonly handler: FileHandler,
    readonly token: bigint,
    readonly session: SessionDependencies,
  ) {
    this.machine = svc.machine;
    this.kho = svc.kho;
    this.incoming = svc.incoming;
    this.flb = svc.flbs;
    this.container = svc.container;
  }
}

/** The files of one session, in preservation order. */
export class FileSet {
  private readonly files: LuoFile[] = [];
  /** Files whose handler has a `freeze` callback: when 0 (and nobody listens) reboot skips the walk. */
  private withFreeze = 0;
  private readonly byToken = new Map<bigint, LuoFile>();
  /** Outgoing: the block chain of file records. */
  readonly chain: BlockChain | undefined;
  /** Incoming: the handed-over file blocks, freed at finish. */
  private incomingBlocks: bigint[] = [];

  /**
   * @param svc - the kernel's orchestrator services
   * @param session - session name (messages)
   * @param outgoing - true for an outgoing session (owns a block chain)
   */
  constructor(
    private readonly svc: LuoServices,
    readonly session: string,
    outgoing: boolean,
  ) {
    this.chain = outgoing ? new BlockChain(svc.kho, FILE_BLOCKS) : undefined;
  }

  /** Writes the record of the file at `index`: {compatible, data, token}. */
  private readonly writeRecord = (dv: DataView, bytes: Uint8Array, off: number, index: number): void => {
    const lf = this.files[index]!;
    bytes.fill(0, off, off + FILE_SER.size);
    bytes.set(lf.entry.handler.compatibleBytes, off + FILE_SER.compatible);
    dv.setBigUint64(off + FILE_SER.data, lf.data, true);
    dv.setBigUint64(off + FILE_SER.token, lf.token, true);
  };

  /** Number of files. */
  get count(): number {
    return this.files.length;
  }

  /** Files in preservation order (read-only view). */
  list(): readonly LuoFile[] {
    return this.files;
  }

  /** The file with `token`, if any. */
  get(token: bigint): LuoFile | undefined {
    return this.byToken.get(token);
  }

  private what(token: bigint): string {
    return `session "${this.session}" token ${token}`;
  }

  /**
   * Dependency API, old kernel: the token of `file` if it is preserved in this session before
   * index `limit`. `ENOENT` otherwise.
   */
  tokenBefore(file: KernelFile, limit: number): bigint {
    for (let i = 0; i < limit && i < this.files.length; i++) {
      const lf = this.files[i]!;
      if (lf.file === file) return lf.token;
    }
    throw new LiveUpdateError(
      "ENOENT",
      `the file is not preserved before this one in session "${this.session}"`,
    );
  }

  /**
   * Dependency API, new kernel: the incoming file with `token` if it comes before index `limit`,
   * retrieved if needed. `ENOENT` when absent, or its (sticky) retrieve error.
   */
  async incomingBefore(token: bigint | number, limit: number): Promise<KernelFile> {
    const t = toU64(token, "token");
    const lf = this.byToken.get(t);
    if (!lf || lf.index >= limit) {
      throw new LiveUpdateError(
        "ENOENT",
        `no earlier incoming file with token ${t} in session "${this.session}"`,
      );
    }
    return this.retrieveLocked(lf);
  }

  /**
   * The args object of one callback for `lf`, whose dependency API sees the files before it: two
   * small class instances per call instead of object spreads and closures (the per-file hot
   * paths of preserve, retrieve and finish).
   */
  private ctx(lf: LuoFile): CallArgs {
    return new CallArgs(this.svc, lf.entry.handler, lf.token, new SessionDeps(this, lf.index));
  }

  private preservedArgs(lf: LuoFile): PreservedArgs<KernelFile, unknown> {
    const args = this.ctx(lf);
    args.file = lf.file;
    args.data = lf.data;
    args.privateData = lf.privateData;
    return args as PreservedArgs<KernelFile, unknown>;
  }

  /**
   * PRESERVE_FD (session mutex held). See the module comment for the order of checks. One flat
   * setup whose `catch` undoes, in reverse, exactly the steps that were done; the file joins the
   * set only after the handler's `preserve` succeeded, and from there nothing can fail.
   */
  async preserve(proc: Process, fd: number, token: bigint): Promise<LuoFile> {
    const { svc } = this;
    const chain = this.chain!;
    if (this.byToken.has(token)) throw new LiveUpdateError("EEXIST", `${this.what(token)} is already in use`);
    chain.grow(this.files.length + 1);
    let file: KernelFile | undefined;
    let entry: RegisteredHandler | undefined;
    let id: unknown;
    let idOwned = false;
    let flbsTaken = false;
    try {
      file = proc.file(fd).get();
      entry = this.select(file, token);
      id = this.identity(entry.handler, file);
      svc.ids.insert(id, this.what(token));
      idOwned = true;
      await svc.flbs.preserveFor(entry.flbs);
      flbsTaken = true;
      const lf = new LuoFile(entry, token, this.files.length, this.session, 0n);
      const result = await this.callPreserve(lf, file);
      // From here nothing can fail: the file joins the set.
      lf.file = file;
      lf.data = result.data;
      lf.privateData = result.privateData;
      lf.id = id;
      this.files.push(lf);
      this.byToken.set(token, lf);
      if (entry.handler.freeze) this.withFreeze++;
      chain.writeEntry(lf.index, this.writeRecord); // the chain was grown for it above
      if (svc.events.listening("file:preserved"))
        svc.events.emitEvent("file:preserved", {
          session: this.session,
          token,
          compatible: entry.handler.compatible,
        });
      return lf;
    } catch (e) {
      if (flbsTaken) await svc.flbs.unpreserveFor(entry!.flbs);
      if (idOwned) svc.ids.remove(id);
      file?.put();
      chain.shrink(this.files.length);
      throw e;
    }
  }

  /** The first handler whose `canPreserve` accepts `file`: `ENOENT` if none, a throw as its error. */
  private select(file: KernelFile, token: bigint): RegisteredHandler {
    let entry: RegisteredHandler | undefined;
    try {
      entry = this.svc.registry.select(file);
    } catch (e) {
      throw toLiveUpdateError(e, `canPreserve for ${file.description}`);
    }
    if (!entry)
      throw new LiveUpdateError(
        "ENOENT",
        `no handler can preserve ${file.description} (${this.what(token)})`,
      );
    return entry;
  }

  /** The identity of `file` in the double-preservation registry (`getId`, or the file itself). */
  private identity(h: FileHandler, file: KernelFile): unknown {
    try {
      return h.getId ? h.getId(file) : file;
    } catch (e) {
      throw toLiveUpdateError(e, `handler "${h.compatible}" getId`);
    }
  }

  /** The handler's `preserve` for the new file `lf` (whose index is the set's size). */
  private async callPreserve(lf: LuoFile, file: KernelFile): Promise<PreserveResult<unknown>> {
    const h = lf.entry.handler;
    try {
      const args = this.ctx(lf);
      args.file = file;
      return await h.preserve(args as PreserveArgs<KernelFile>);
    } catch (e) {
      throw toLiveUpdateError(e, `handler "${h.compatible}" preserve of ${this.what(lf.token)}`);
    }
  }

  /** Outgoing close: unpreserve every file LIFO. Cannot fail; handler errors become warnings. */
  async unpreserveAll(): Promise<void> {
    const { svc } = this;
    while (this.files.length > 0) {
      const lf = this.files[this.files.length - 1]!;
      try {
        await lf.entry.handler.unpreserve(this.preservedArgs(lf));
      } catch (e) {
        svc.events.warn(
          toLiveUpdateError(e, `handler "${lf.compatible}" unpreserve of ${this.what(lf.token)}`),
        );
      }
      await svc.flbs.unpreserveFor(lf.entry.flbs);
      svc.ids.remove(lf.id);
      this.files.pop();
      this.byToken.delete(lf.token);
      if (lf.entry.handler.freeze) this.withFreeze--;
      this.chain!.shrink(this.files.length);
      lf.file!.put();
      lf.file = undefined;
      if (svc.events.listening("file:unpreserved"))
        svc.events.emitEvent("file:unpreserved", {
          session: this.session,
          token: lf.token,
          compatible: lf.compatible,
        });
    }
    this.chain!.destroy();
  }

  /**
   * Reboot: freeze FIFO, then set the block counts. Records were written when each file was
   * preserved (files only come and go at the tail, so a slot never moves) and are rewritten
   * only when `freeze` changes a file's data: the blackout does no per-file copying. On failure
   * unfreeze what was frozen.
   */
  async freeze(): Promise<void> {
    let i = 0;
    try {
      for (;;) {
        i = this.skipWithoutFreeze(i);
        if (i >= this.files.length) break;
        const lf = this.files[i]!;
        const freeze = lf.entry.handler.freeze!;
        await lf.mutex.lock(async () => {
          let data: bigint | void;
          try {
            data = await freeze.call(lf.entry.handler, this.preservedArgs(lf));
          } catch (e) {
            const err = toLiveUpdateError(e, `handler "${lf.compatible}" freeze of ${this.what(lf.token)}`);
            if (this.svc.events.listening("file:freeze-failed"))
              this.svc.events.emitEvent("file:freeze-failed", {
                session: this.session,
                token: lf.token,
                compatible: lf.compatible,
                error: err,
              });
            throw err;
          }
          if (typeof data === "bigint" && data !== lf.data) {
            lf.data = data;
            this.chain!.writeEntry(lf.index, this.writeRecord);
          }
        });
        this.frozen(lf);
        i++;
      }
    } catch (e) {
      await this.unfreezeRange(i);
      throw e;
    }
    this.chain!.setCounts(this.files.length);
  }

  /**
   * Marks files whose handler has no `freeze` as frozen, from `from` on, and returns the index of
   * the next file that needs its callback. Nothing to protect there (the serialize write lock
   * excludes every other file operation), so no mutex — and a plain synchronous loop, which V8
   * optimizes where an async function's loop would stay slow: the reboot blackout of a large
   * session is this loop.
   */
  private skipWithoutFreeze(from: number): number {
    const files = this.files;
    if (this.withFreeze === 0 && !this.svc.events.listening("file:frozen")) return files.length;
    let i = from;
    for (; i < files.length; i++) {
      const lf = files[i]!;
      if (lf.entry.handler.freeze) break;
      this.frozen(lf);
    }
    return i;
  }

  private frozen(lf: LuoFile): void {
    const events = this.svc.events;
    if (events.listening("file:frozen")) {
      events.emitEvent("file:frozen", { session: this.session, token: lf.token, compatible: lf.compatible });
    }
  }

  /** Reboot rollback: unfreeze every file FIFO and clear the block counts. */
  async unfreeze(): Promise<void> {
    await this.unfreezeRange(this.files.length);
  }

  private async unfreezeRange(end: number): Promise<void> {
    for (let i = 0; i < end; i++) {
      const lf = this.files[i]!;
      await lf.mutex.lock(async () => {
        try {
          await lf.entry.handler.unfreeze?.(this.preservedArgs(lf));
        } catch (e) {
          this.svc.events.warn(
            toLiveUpdateError(e, `handler "${lf.compatible}" unfreeze of ${this.what(lf.token)}`),
          );
        }
      });
      if (this.svc.events.listening("file:unfrozen"))
        this.svc.events.emitEvent("file:unfrozen", {
          session: this.session,
          token: lf.token,
          compatible: lf.compatible,
        });
    }
    this.chain!.clearCounts();
  }

  /** Physical address of the first file block (0 without files). */
  get head(): bigint {
    return this.chain ? this.chain.head : 0n;
  }

  /**
   * New kernel: rebuilds the files from handover records. `ENOENT` when no registered handler
   * has a record's compatible; on failure nothing is kept.
   */
  deserialize(records: readonly IncomingFileRecord[], blocks: bigint[]): void {
    this.incomingBlocks = blocks; // set first so a failure below can still free them
    try {
      for (const r of records) {
        const entry = this.svc.registry.find(r.compatible);
        if (!entry) {
          throw new LiveUpdateError(
            "ENOENT",
            `no registered handler for compatible "${r.compatible}" (${this.what(r.token)})`,
          );
        }
        if (this.byToken.has(r.token)) {
          throw new LiveUpdateError("EEXIST", `${this.what(r.token)} appears twice in the handover`);
        }
        const lf = new LuoFile(entry, r.token, this.files.length, this.session, r.data);
        this.files.push(lf);
        this.byToken.set(r.token, lf);
      }
    } catch (e) {
      this.files.length = 0;
      this.byToken.clear();
      throw e;
    }
  }

  private async retrieveLocked(lf: LuoFile): Promise<KernelFile> {
    return lf.mutex.lock(async () => {
      if (lf.retrieveStatus instanceof LiveUpdateError) throw lf.retrieveStatus;
      if (lf.retrieveStatus === 1) return lf.file!;
      const h = lf.entry.handler;
      let file: KernelFile;
      try {
        const args = this.ctx(lf);
        args.data = lf.data;
        file = await h.retrieve(args);
        if (!(file instanceof KernelFile)) {
          throw new LiveUpdateError("EIO", `handler "${h.compatible}" retrieve returned no file object`);
        }
      } catch (e) {
        const err = toLiveUpdateError(e, `handler "${h.compatible}" retrieve of ${this.what(lf.token)}`);
        lf.retrieveStatus = err;
        if (this.svc.events.listening("file:retrieve-failed"))
          this.svc.events.emitEvent("file:retrieve-failed", {
            session: this.session,
            token: lf.token,
            compatible: h.compatible,
            error: err,
          });
        throw err;
      }
      lf.file = file;
      lf.retrieveStatus = 1;
      try {
        lf.id = h.getId ? h.getId(file) : file;
        this.svc.ids.insert(lf.id, this.what(lf.token));
      } catch (e) {
        lf.id = undefined;
        this.svc.events.warn(toLiveUpdateError(e, `registering identity of ${this.what(lf.token)}`));
      }
      if (this.svc.events.listening("file:retrieved"))
        this.svc.events.emitEvent("file:retrieved", {
          session: this.session,
          token: lf.token,
          compatible: h.compatible,
        });
      return file;
    });
  }

  /** RETRIEVE_FD (session mutex held): the file for `token`, with a new reference for the caller. */
  async retrieve(token: bigint): Promise<KernelFile> {
    const lf = this.byToken.get(token);
    if (!lf) throw new LiveUpdateError("ENOENT", `no file with token ${token} in session "${this.session}"`);
    return (await this.retrieveLocked(lf)).get();
  }

  private finishArgs(lf: LuoFile): FinishArgs<KernelFile> {
    const args = this.ctx(lf);
    args.file = lf.file;
    args.data = lf.data;
    args.retrieveStatus = lf.retrieveStatus;
    return args;
  }

  /**
   * What FINISH would decide now (session mutex held), without finishing: per file its retrieve
   * status and its handler's `canFinish` answer (a throw counts as a veto with that error).
   */
  async finishPreview(): Promise<FileFinishStatus[]> {
    const out: FileFinishStatus[] = [];
    for (const lf of this.files) {
      out.push(
        await lf.mutex.lock(async () => {
          const status = lf.retrieveStatus;
          const base = {
            token: lf.token,
            compatible: lf.compatible,
            retrieved: status === 1,
            retrieveError: status instanceof LiveUpdateError ? status : undefined,
          };
          const can = lf.entry.handler.canFinish;
          if (!can) return { ...base, canFinish: true, vetoError: undefined };
          try {
            const ok = await can.call(lf.entry.handler, this.finishArgs(lf));
            return { ...base, canFinish: ok === true, vetoError: undefined };
          } catch (e) {
            const err = toLiveUpdateError(
              e,
              `handler "${lf.compatible}" canFinish of ${this.what(lf.token)}`,
            );
            return { ...base, canFinish: false, vetoError: err };
          }
        }),
      );
    }
    return out;
  }

  /** FINISH (session mutex held): all-or-nothing `canFinish`, then `finish` LIFO. `EBUSY` on veto. */
  async finish(): Promise<void> {
    const { svc } = this;
    if (this.files.length === 0) return;
    for (const lf of this.files) {
      await lf.mutex.lock(async () => {
        const can = lf.entry.handler.canFinish;
        if (!can) return;
        let ok: boolean;
        try {
          ok = await can.call(lf.entry.handler, this.finishArgs(lf));
        } catch (e) {
          throw toLiveUpdateError(e, `handler "${lf.compatible}" canFinish of ${this.what(lf.token)}`);
        }
        if (!ok)
          throw new LiveUpdateError(
            "EBUSY",
            `handler "${lf.compatible}" vetoed finishing ${this.what(lf.token)}`,
          );
      });
    }
    while (this.files.length > 0) {
      const lf = this.files[this.files.length - 1]!;
      await lf.mutex.lock(async () => {
        try {
          await lf.entry.handler.finish(this.finishArgs(lf));
        } catch (e) {
          svc.events.warn(
            toLiveUpdateError(e, `handler "${lf.compatible}" finish of ${this.what(lf.token)}`),
          );
        }
        await svc.flbs.finishFor(lf.entry.flbs);
      });
      if (lf.retrieveStatus === 1) {
        if (lf.id !== undefined) svc.ids.remove(lf.id);
        lf.file!.put();
        lf.file = undefined;
      }
      this.files.pop();
      this.byToken.delete(lf.token);
      if (svc.events.listening("file:finished"))
        svc.events.emitEvent("file:finished", {
          session: this.session,
          token: lf.token,
          compatible: lf.compatible,
        });
    }
    this.freeIncomingBlocks();
  }

  /** Frees the handed-over file blocks (finish, or an incoming session that failed to deserialize). */
  freeIncomingBlocks(): void {
    const incoming = this.svc.incoming;
    if (incoming) for (const b of this.incomingBlocks) incoming.restoreFree(b);
    this.incomingBlocks = [];
  }
}
