/**
 * `@luo/memfd-handler`: the memfd (shmem) file type of the LUO model and its zero-copy
 * live-update handler `"memfd-v2"`.
 *
 * Boot a kernel with the {@link memfd} plugin, create memfds with {@link memfdCreate}, use them
 * through the core's generic syscalls, and preserve them in a live-update session: the next
 * kernel retrieves a memfd with the same bytes, size, position and seals, backed by the very same
 * physical pages.
 *
 * @packageDocumentation
 */

export * from "./seals.js";
export * from "./memfd/fs.js";
export * from "./memfd/inode.js";
export * from "./memfd/file.js";
export * from "./memfd/create.js";
export * from "./memfd/mapping.js";
export * from "./luo/layout.js";
export * from "./luo/vmalloc.js";
export * from "./luo/record.js";
export * from "./luo/handler.js";
export * from "./plugin.js";
