/**
 * Which compatibles a plugin set serves, asked before a live update ("can the next kernel read
 * everything this one is about to hand over?").
 *
 * {@link pluginCompatibles} boots the plugins on a small scratch machine — exactly the
 * registration the next kernel would run, so the answer cannot drift from what the plugins
 * really register — reads the handler and FLB compatibles from its registry, and shuts the
 * scratch kernel down. Nothing of the running kernel is touched. A plugin whose `register`
 * fails makes the call fail with that error (as the next kernel's boot would). The plugin
 * objects are registered on one more kernel, so per-kernel state belongs in the kernel's
 * container (as `kexec()` without `plugins`, which reuses the instances, already requires).
 *
 * @module
 */
import { Machine } from "../machine/index.js";
import type { ServedCompatibles } from "../liveupdate/index.js";
import type { Plugin } from "../plugin/index.js";
import { Kernel } from "./kernel.js";

/** RAM of the scratch machine: room for the LUO handover pages and small plugin setups. */
const SCRATCH_MEMORY = "16 MiB";

/**
 * The file-handler and FLB compatibles `plugins` register when they boot (what a kernel booted
 * with them can take over). Errors: those of {@link Kernel.boot} (`EINVAL` malformed plugins,
 * `ENOENT`/`ELOOP`/`EEXIST` dependencies, a plugin's own `register` error).
 */
export async function pluginCompatibles(plugins: readonly Plugin[]): Promise<ServedCompatibles> {
  const kernel = await Kernel.boot(new Machine({ memory: SCRATCH_MEMORY }), { plugins });
  try {
    return kernel.compatibles();
  } finally {
    await kernel.shutdown();
  }
}
