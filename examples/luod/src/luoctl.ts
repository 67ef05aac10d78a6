/**
 * luoctl, luod's command-line client, as a function a process of the model runs:
 * `luoctl status [--json]` prints what luod holds and why each incoming session is not finished;
 * `luoctl update [--barrier-timeout <ms>] [--json]` asks luod to update and prints the outcome
 * (the pre-flight refusal with what is missing, the clients that failed the barrier, or the
 * freeze failure with its session and token). Exit status: 0 success, 1 refused or failed,
 * 2 bad usage.
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { Process } from "@luo/core";
import { connectLuod } from "./client.js";
import type { LuodStatus } from "./status.js";

const USAGE = `usage: luoctl status [--json]
       luoctl update [--barrier-timeout <ms>] [--json]
       luoctl --help`;

/** Result of {@link luoctl}. */
export interface LuoctlResult {
  readonly status: number;
  readonly output: string;
}

/** Formats a status report as text. */
export function formatStatus(s: LuodStatus): string {
  const lines = [
    `luod: live update #${s.liveupdateNumber}, ${s.kexecsCount} kexec(s) through luod, ${s.phase}`,
    `own session: ${s.ownSession}${s.mappingError ? ` (mapping: ${s.mappingError})` : ""}`,
    `clients: ${s.clients.map((c) => `${c.name} (${c.role})`).join(", ") || "none"}`,
  ];
  for (const o of s.outgoing)
    lines.push(`outgoing "${o.name}" of ${o.owner}${o.connected ? "" : " (owner disconnected)"}`);
  for (const i of s.incoming) {
    lines.push(`incoming "${i.name}" of ${i.owner}: ${i.state}`);
    for (const r of i.reasons) lines.push(`  - ${r}`);
  }
  return lines.join("\n");
}

/** Runs luoctl in `proc` with `argv` (without the program name). */
export async function luoctl(
  proc: Process,
  argv: readonly string[],
  socketPath?: string,
): Promise<LuoctlResult> {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      options: {
        json: { type: "boolean" },
        "barrier-timeout": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    return { status: 2, output: `${(e as Error).message}\n${USAGE}` };
  }
  const { values, positionals } = parsed;
  if (values.help) return { status: 0, output: USAGE };
  const [command, ...rest] = positionals;
  if ((command !== "status" && command !== "update") || rest.length > 0) return { status: 2, output: USAGE };
  let timeout: number | undefined;
  if (values["barrier-timeout"] !== undefined) {
    timeout = Number(values["barrier-timeout"]);
    if (!Number.isSafeInteger(timeout) || timeout <= 0)
      return { status: 2, output: `bad --barrier-timeout\n${USAGE}` };
  }
  const client = await connectLuod(proc, { name: `luoctl-${proc.pid}`, role: "control", path: socketPath });
  try {
    if (command === "status") {
      const s = await client.status();
      return { status: 0, output: values.json ? JSON.stringify(s) : formatStatus(s) };
    }
    const steps: string[] = [];
    const r = await client.update({ barrierTimeoutMs: timeout, progress: (s) => steps.push(s) });
    if (values.json) return { status: r.ok ? 0 : 1, output: JSON.stringify({ ...r, steps }) };
    if (r.ok) return { status: 0, output: `update: ${steps.join(" → ")}: the kernel was replaced` };
    const lines = [`update ${r.update} refused at ${r.stage}: ${r.code}: ${r.error}`];
    for (const m of r.missing ?? [])
      lines.push(`  missing ${m.kind} compatible "${m.compatible}" (used by ${m.users.join(", ")})`);
    for (const f of r.failed ?? []) lines.push(`  client ${f.client}: ${f.reason}`);
    if (r.freeze)
      lines.push(
        `  freeze failed: session "${r.freeze.session}" token ${r.freeze.token} (${r.freeze.compatible})`,
      );
    return { status: 1, output: lines.join("\n") };
  } finally {
    client.close();
  }
}
