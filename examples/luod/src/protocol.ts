/**
 * The luod wire protocol, version 1: one JSON object per line (UTF-8, `\n`-terminated) on the
 * stream socket {@link LUOD_SOCKET_PATH}; session fds travel with their reply line as
 * `SCM_RIGHTS`. `examples/luod/README.md` documents every message.
 *
 * Framing. {@link LineReader} splits a byte stream into lines and ties received fds to the line
 * they came with (luod sends each line that carries fds in one `sendmsg`). A request line longer
 * than {@link MAX_REQUEST_BYTES} is answered with an `EMSGSIZE` error and skipped up to its end;
 * a line that is not a JSON object with a known `op` gets `EPROTO` (or `EINVAL` for bad fields).
 * Neither closes the connection.
 *
 * @module
 */
import { LiveUpdateError, type ErrnoCode } from "@luo/core";

/** Protocol version spoken by this luod and its clients. */
export const LUOD_PROTOCOL_VERSION = 1;
/** Where luod listens. */
export const LUOD_SOCKET_PATH = "/run/luod/liveupdate.sock";
/** Longest request line luod accepts, in bytes (without the newline). */
export const MAX_REQUEST_BYTES = 4096;
/** luod's own session: the mapping memfd at token 0. Clients may not use this name. */
export const LUOD_SESSION = "luod";

/** What a client says it is in `hello`. */
export type ClientRole = "vmm" | "control";

/** Requests (client → luod). Every request has an `id` echoed by its reply. */
export type Request =
  | { id: number; op: "hello"; version: number; name: string; role: ClientRole }
  | { id: number; op: "create-session"; name: string }
  | { id: number; op: "retrieve-session"; name: string }
  | { id: number; op: "done"; name: string }
  | { id: number; op: "ready"; update: number }
  | { id: number; op: "fail"; update: number; reason: string }
  | { id: number; op: "status" }
  | { id: number; op: "update"; barrierTimeoutMs?: number };

/** A request's operation name. */
export type Op = Request["op"];

/** A failure reply. */
export interface ErrorReply {
  id: number | null;
  ok: false;
  /** Linux errno name, e.g. `ENOENT`. */
  code: ErrnoCode;
  error: string;
  [extra: string]: unknown;
}

/** A success reply (fields depend on the op). */
export interface OkReply {
  id: number;
  ok: true;
  [field: string]: unknown;
}

/** Events (luod → client), not replies. */
export type LuodEvent =
  | { event: "prepare"; update: number; timeoutMs: number }
  | { event: "resume"; update: number; reason: string }
  | { event: "progress"; id: number; step: string };

/** Encodes one message as a line. */
export function encodeLine(msg: object): Uint8Array {
  return new TextEncoder().encode(`${JSON.stringify(msg)}\n`);
}

/** One line out of {@link LineReader}. */
export interface Line {
  /** The text without the newline, or undefined when the line was too long (then `size` tells). */
  readonly text: string | undefined;
  /** Bytes of the line. */
  readonly size: number;
  /** fds that came with it. */
  readonly fds: number[];
}

/** Splits a byte stream into lines, with a size limit, keeping fds with their line. */
export class LineReader {
  private buf: Uint8Array[] = [];
  private bufBytes = 0;
  /** Bytes of an oversized line being skipped up to its newline (-1: not skipping). */
  private skipped = -1;
  private pendingFds: number[] = [];
  private readonly decoder = new TextDecoder("utf-8", { fatal: true });

  /** @param maxBytes - longest line kept; longer ones come out with `text: undefined` */
  constructor(private readonly maxBytes: number) {}

  /** Adds a chunk received with `fds`; returns the lines it completed. */
  push(chunk: Uint8Array, fds: readonly number[] = []): Line[] {
    const out: Line[] = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      const end = nl < 0 ? chunk.length : nl;
      this.append(chunk.subarray(start, end));
      if (nl < 0) break;
      out.push(this.take());
      start = nl + 1;
    }
    if (fds.length > 0) {
      // luod's lines that carry fds are sent whole in one sendmsg: the fds belong to the line
      // that ends this chunk, or to the one still open if the chunk stopped inside it.
      const endsLine = chunk.length > 0 && chunk[chunk.length - 1] === 0x0a && out.length > 0;
      if (endsLine)
        out[out.length - 1] = { ...out[out.length - 1]!, fds: [...out[out.length - 1]!.fds, ...fds] };
      else this.pendingFds.push(...fds);
    }
    return out;
  }

  private append(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    if (this.skipped >= 0) {
      this.skipped += bytes.length;
      return;
    }
    if (this.bufBytes + bytes.length > this.maxBytes) {
      this.skipped = this.bufBytes + bytes.length;
      this.buf = [];
      this.bufBytes = 0;
      return;
    }
    this.buf.push(bytes.slice());
    this.bufBytes += bytes.length;
  }

  private take(): Line {
    const fds = this.pendingFds;
    this.pendingFds = [];
    if (this.skipped >= 0) {
      const size = this.skipped;
      this.skipped = -1;
      return { text: undefined, size, fds };
    }
    const all = new Uint8Array(this.bufBytes);
    let at = 0;
    for (const b of this.buf) {
      all.set(b, at);
      at += b.length;
    }
    this.buf = [];
    this.bufBytes = 0;
    let text: string;
    try {
      text = this.decoder.decode(all);
    } catch {
      text = "\u0000invalid utf-8"; // fails JSON parsing below, as malformed input should
    }
    return { text, size: all.length, fds };
  }

  /** fds received for a line that never completed (the caller closes them). */
  drainFds(): number[] {
    const fds = this.pendingFds;
    this.pendingFds = [];
    return fds;
  }
}

const NAME_OPS = new Set(["create-session", "retrieve-session", "done"]);

function fail(code: ErrnoCode, message: string): never {
  throw new LiveUpdateError(code, message);
}

/**
 * Parses and validates one request line. `EPROTO` when it is not a JSON object with a numeric
 * `id` and a known `op`; `EINVAL` for a bad field.
 */
export function parseRequest(text: string): Request {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    fail("EPROTO", "the request is not valid JSON");
  }
  if (typeof v !== "object" || v === null || Array.isArray(v))
    fail("EPROTO", "the request is not a JSON object");
  const r = v as Record<string, unknown>;
  if (!Number.isSafeInteger(r.id)) fail("EPROTO", "the request has no integer id");
  const op = r.op;
  if (typeof op !== "string") fail("EPROTO", "the request has no op");
  if (NAME_OPS.has(op) && (typeof r.name !== "string" || r.name.length === 0)) {
    fail("EINVAL", `${op} needs a session name`);
  }
  switch (op) {
    case "hello":
      if (!Number.isSafeInteger(r.version)) fail("EINVAL", "hello needs an integer version");
      if (typeof r.name !== "string" || r.name.length === 0 || r.name.length > 64) {
        fail("EINVAL", "hello needs a client name of 1..64 characters");
      }
      if (r.role !== "vmm" && r.role !== "control") fail("EINVAL", 'hello role must be "vmm" or "control"');
      break;
    case "ready":
    case "fail":
      if (!Number.isSafeInteger(r.update)) fail("EINVAL", `${op} needs the update number`);
      if (op === "fail" && typeof r.reason !== "string") fail("EINVAL", "fail needs a reason");
      break;
    case "update":
      if (
        r.barrierTimeoutMs !== undefined &&
        !(Number.isSafeInteger(r.barrierTimeoutMs) && (r.barrierTimeoutMs as number) > 0)
      ) {
        fail("EINVAL", "update barrierTimeoutMs must be a positive integer");
      }
      break;
    case "create-session":
    case "retrieve-session":
    case "done":
    case "status":
      break;
    default:
      fail("EPROTO", `unknown op ${JSON.stringify(op).slice(0, 64)}`);
  }
  return r as unknown as Request;
}

/** The error reply for `e` (any thrown value). */
export function errorReply(id: number | null, e: unknown, extra: Record<string, unknown> = {}): ErrorReply {
  const err = e instanceof LiveUpdateError ? e : new LiveUpdateError("EIO", String(e));
  return { id, ok: false, code: err.code, error: err.message, ...extra };
}
