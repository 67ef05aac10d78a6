/**
 * luod's session mapping: which client owns which session, handed to the next luod as a sealed
 * memfd at token 0 of luod's own session (the way systemd hands its fd store over), because LUO
 * has no call that lists the incoming sessions.
 *
 * Format, version 1 (JSON, UTF-8):
 * `{"version":1,"state":{"kexecsCount":<n>},"clients":{"<client>":{"sessions":["<name>",…]}}}`.
 * `kexecsCount` counts the live updates luod went through. The memfd is named `luod-mapping`
 * and sealed with `F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE` before it is
 * preserved, so the bytes the next kernel reads are the bytes luod wrote. A mapping of another
 * version, not JSON, larger than {@link MAX_MAPPING_BYTES} or malformed is `EPROTO` and the new
 * luod starts without handing anything back (the sessions stay in the kernel until the next
 * live update, as LUO does with sessions nobody retrieves).
 *
 * @module
 */
import { LiveUpdateError, SEEK_END, type Process, type SessionHandle } from "@luo/core";
import { F_SEAL_GROW, F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_WRITE, memfdCreate } from "@luo/memfd-handler";
import { F_ADD_SEALS } from "@luo/core";

/** Version of the mapping format this luod writes and reads. */
export const MAPPING_VERSION = 1;
/** Token of the mapping memfd in luod's session. */
export const MAPPING_TOKEN = 0n;
/** Largest mapping accepted. */
export const MAX_MAPPING_BYTES = 1 << 20;

/** The mapping, decoded. */
export interface LuodMapping {
  readonly version: number;
  readonly state: { readonly kexecsCount: number };
  /** Sessions by owning client. */
  readonly clients: Readonly<Record<string, { readonly sessions: readonly string[] }>>;
}

/**
 * Writes `mapping` into a new sealed memfd and preserves it at token 0 of `session` (outgoing).
 * Errors: the memfd and PRESERVE_FD errors (nothing stays preserved on failure).
 */
export async function preserveMapping(
  proc: Process,
  session: SessionHandle,
  mapping: LuodMapping,
): Promise<void> {
  const fd = memfdCreate(proc, "luod-mapping", { allowSealing: true });
  try {
    proc.pwrite(fd, new TextEncoder().encode(JSON.stringify(mapping)), 0);
    proc.fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
    await session.preserveFd(fd, MAPPING_TOKEN);
  } finally {
    proc.close(fd);
  }
}

function bad(message: string): never {
  throw new LiveUpdateError("EPROTO", `luod mapping: ${message}`);
}

/** Validates a decoded mapping (see the module comment). `EPROTO` when malformed. */
export function checkMapping(v: unknown): LuodMapping {
  if (typeof v !== "object" || v === null) bad("not a JSON object");
  const m = v as Record<string, unknown>;
  if (m.version !== MAPPING_VERSION) bad(`version ${String(m.version)} is not ${MAPPING_VERSION}`);
  const state = m.state as Record<string, unknown> | undefined;
  if (typeof state !== "object" || state === null || !Number.isSafeInteger(state.kexecsCount)) {
    bad("state.kexecsCount is missing");
  }
  const clients = m.clients;
  if (typeof clients !== "object" || clients === null || Array.isArray(clients))
    bad("clients is not an object");
  const seen = new Set<string>();
  for (const [name, c] of Object.entries(clients)) {
    const sessions = (c as { sessions?: unknown } | null)?.sessions;
    if (!Array.isArray(sessions) || sessions.some((s) => typeof s !== "string")) {
      bad(`client ${JSON.stringify(name)} has no list of session names`);
    }
    for (const s of sessions as string[]) {
      if (seen.has(s)) bad(`session ${JSON.stringify(s)} is listed twice`);
      seen.add(s);
    }
  }
  return m as unknown as LuodMapping;
}

/** Retrieves token 0 of luod's incoming `session`, reads and validates the mapping. */
export async function retrieveMapping(proc: Process, session: SessionHandle): Promise<LuodMapping> {
  const fd = await session.retrieveFd(MAPPING_TOKEN);
  try {
    const size = proc.lseek(fd, 0, SEEK_END);
    if (size > MAX_MAPPING_BYTES) bad(`${size} bytes exceed ${MAX_MAPPING_BYTES}`);
    const text = new TextDecoder().decode(proc.pread(fd, size, 0));
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch {
      bad("not JSON");
    }
    return checkMapping(v);
  } finally {
    proc.close(fd);
  }
}
