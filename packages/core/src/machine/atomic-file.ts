// Crash-safe file replacement: stream into a temporary file in the same directory, fsync it,
// rename it over the destination, then fsync the directory. A crash at any point leaves either
// the old file or the complete new one at the destination (plus, at worst, a stray temp file).

import { randomBytes } from "node:crypto";
import { open, rename, unlink, type FileHandle } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/**
 * Sequential writer handed to the producer of {@link writeFileAtomic}.
 *
 * @category Machine
 */
export interface AtomicWriteSink {
  /** Appends `chunk` to the file; resolves once it is fully written (the chunk may be reused afterwards). */
  write(chunk: Uint8Array): Promise<void>;
  /** Bytes appended so far. */
  readonly bytesWritten: number;
}

/**
 * Suffix of the temporary files {@link writeFileAtomic} creates next to the destination.
 *
 * @category Machine
 */
export const ATOMIC_TEMP_SUFFIX = ".tmp";

/**
 * The temporary file name used for one write to `path`: a hidden file in the same directory,
 * unique per process and call (`.<name>.<pid>.<random>.tmp`), so leftovers of a crashed writer
 * never collide with a later write.
 *
 * @category Machine
 */
export function atomicTempPath(path: string): string {
  return join(
    dirname(path),
    `.${basename(path)}.${process.pid}.${randomBytes(6).toString("hex")}${ATOMIC_TEMP_SUFFIX}`,
  );
}

async function writeAll(fh: FileHandle, chunk: Uint8Array): Promise<void> {
  let off = 0;
  while (off < chunk.length) {
    const { bytesWritten } = await fh.write(chunk, off, chunk.length - off);
    off += bytesWritten;
  }
}

async function fsyncDir(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(dir, "r");
    await fh.sync();
  } catch {
    // Directory fsync is best effort (not supported on every platform/filesystem).
  } finally {
    await fh?.close().catch(() => undefined);
  }
}

/**
 * Atomically replaces `path` with the bytes `produce` streams into the sink.
 *
 * Writes go to a fresh temporary file in the same directory ({@link atomicTempPath}); after
 * `produce` resolves the file is fsynced, closed and renamed over `path`, and the directory is
 * fsynced. If `produce` or any I/O step fails, the temporary file is removed, `path` is left
 * untouched and the error is rethrown unchanged.
 *
 * @param path - destination file
 * @param produce - writes the new contents through the sink, in order
 * @throws whatever `produce` throws, or the Node.js I/O error (`ENOENT`, `EACCES`, `ENOSPC`, …)
 */
export async function writeFileAtomic(
  path: string,
  produce: (sink: AtomicWriteSink) => Promise<void>,
): Promise<void> {
  const temp = atomicTempPath(path);
  const fh = await open(temp, "wx", 0o644);
  let closed = false;
  try {
    let written = 0;
    const sink: AtomicWriteSink = {
      async write(chunk: Uint8Array): Promise<void> {
        await writeAll(fh, chunk);
        written += chunk.length;
      },
      get bytesWritten(): number {
        return written;
      },
    };
    await produce(sink);
    await fh.sync();
    closed = true;
    await fh.close();
    await rename(temp, path);
  } catch (e) {
    if (!closed) await fh.close().catch(() => undefined);
    await unlink(temp).catch(() => undefined);
    throw e;
  }
  await fsyncDir(dirname(path));
}
