/**
 * memfd seal bits and `memfd_create` flags, with Linux's values (`include/uapi/linux/fcntl.h`,
 * `include/uapi/linux/memfd.h`). Seals are uAPI, so the handover record stores them as they are.
 *
 * What each seal forbids, once set (all with `EPERM`): `F_SEAL_SEAL` — adding seals;
 * `F_SEAL_SHRINK` / `F_SEAL_GROW` — making the file smaller / larger (ftruncate, a write or a
 * fallocate past the end); `F_SEAL_WRITE` — write, punch-hole and new writable shared mappings
 * (adding it while a writable shared mapping exists, or while pages are pinned, is `EBUSY`);
 * `F_SEAL_FUTURE_WRITE` — like `F_SEAL_WRITE` for everything that comes later, while existing
 * writable mappings keep working; `F_SEAL_EXEC` — changing the exec bits (and, on an executable
 * memfd, it implies SHRINK | GROW | WRITE | FUTURE_WRITE: W^X from the start).
 *
 * @module
 */

/** Seal: no further seals can be added. */
export const F_SEAL_SEAL = 0x0001;
/** Seal: the file cannot shrink. */
export const F_SEAL_SHRINK = 0x0002;
/** Seal: the file cannot grow. */
export const F_SEAL_GROW = 0x0004;
/** Seal: the contents cannot be modified (no write, punch-hole or new writable shared mapping). */
export const F_SEAL_WRITE = 0x0008;
/** Seal: like {@link F_SEAL_WRITE} for future writers; existing writable mappings keep working. */
export const F_SEAL_FUTURE_WRITE = 0x0010;
/** Seal: the exec permission bits cannot change. */
export const F_SEAL_EXEC = 0x0020;

/** Every seal Linux knows (`F_ALL_SEALS`); other bits in `F_ADD_SEALS` are `EINVAL`. */
export const F_ALL_SEALS =
  F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE | F_SEAL_EXEC;

/** Longest memfd name in bytes (`NAME_MAX` minus the `"memfd:"` prefix). */
export const MFD_NAME_MAX_LEN = 255 - "memfd:".length;

/** Renders seals as `SEAL|GROW|…` (`-` for none, unknown bits in hex), for messages and reports. */
export function formatSeals(seals: number): string {
  const names: Array<[number, string]> = [
    [F_SEAL_SEAL, "SEAL"],
    [F_SEAL_SHRINK, "SHRINK"],
    [F_SEAL_GROW, "GROW"],
    [F_SEAL_WRITE, "WRITE"],
    [F_SEAL_FUTURE_WRITE, "FUTURE_WRITE"],
    [F_SEAL_EXEC, "EXEC"],
  ];
  const out = names.filter(([bit]) => seals & bit).map(([, name]) => name);
  const unknown = seals & ~F_ALL_SEALS;
  if (unknown) out.push(`0x${unknown.toString(16)}`);
  return out.length > 0 ? out.join("|") : "-";
}
