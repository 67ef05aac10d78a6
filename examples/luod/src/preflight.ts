/**
 * The pre-flight check of an update: can the next kernel take over everything this one is about
 * to hand over? Every compatible of every preserved file (all outgoing sessions) and of every FLB
 * in use must be served by the next kernel's plugin set (asked with `pluginCompatibles`, which
 * boots the plugins on a scratch machine). Otherwise the next kernel would fail to load the
 * handover and every session would be lost — so luod refuses and names what is missing and who
 * uses it.
 *
 * @module
 */
import { pluginCompatibles, type Kernel, type Plugin } from "@luo/core";

/** One compatible the next kernel would not serve. */
export interface MissingCompatible {
  /** A file handler's or an FLB's compatible. */
  readonly kind: "file" | "flb";
  readonly compatible: string;
  /** Who needs it: `session/token` of each file, or the number of files holding the FLB. */
  readonly users: readonly string[];
}

/** What {@link preflight} found. */
export interface PreflightResult {
  readonly ok: boolean;
  /** Compatibles handed over (files, then FLBs), each once. */
  readonly needed: { readonly files: readonly string[]; readonly flbs: readonly string[] };
  readonly missing: readonly MissingCompatible[];
}

/** The compatibles `kernel` is about to hand over (its `handingOver()` view), with who uses each. */
export function handoverCompatibles(kernel: Kernel): {
  files: Map<string, string[]>;
  flbs: Map<string, string[]>;
} {
  const files = new Map<string, string[]>();
  const flbs = new Map<string, string[]>();
  const view = kernel.liveupdate.handingOver();
  for (const s of view.sessions) {
    for (const f of s.files) {
      const users = files.get(f.compatible) ?? [];
      users.push(`${s.name}/${f.token}`);
      files.set(f.compatible, users);
    }
  }
  for (const f of view.flbs) flbs.set(f.compatible, [`${f.count} file(s)`]);
  return { files, flbs };
}

/** Checks `kernel`'s pending handover against `nextPlugins` (see the module comment). */
export async function preflight(kernel: Kernel, nextPlugins: readonly Plugin[]): Promise<PreflightResult> {
  const { files, flbs } = handoverCompatibles(kernel);
  const served = await pluginCompatibles(nextPlugins);
  const haveFiles = new Set(served.fileHandlers);
  const haveFlbs = new Set(served.flbs);
  const missing: MissingCompatible[] = [];
  for (const [compatible, users] of files) {
    if (!haveFiles.has(compatible)) missing.push({ kind: "file", compatible, users });
  }
  for (const [compatible, users] of flbs) {
    if (!haveFlbs.has(compatible)) missing.push({ kind: "flb", compatible, users });
  }
  return { ok: missing.length === 0, needed: { files: [...files.keys()], flbs: [...flbs.keys()] }, missing };
}
