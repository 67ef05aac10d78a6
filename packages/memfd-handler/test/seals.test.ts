// memfd seals with Linux's rules: F_SEAL_SEAL by default, what each seal forbids (EPERM),
// F_SEAL_WRITE against writable mappings (EBUSY), F_SEAL_FUTURE_WRITE, F_SEAL_EXEC.
import { describe, expect, it } from "vitest";
import {
  F_ADD_SEALS,
  F_GET_SEALS,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  PAGE_SIZE,
  SEEK_END,
  type Process,
} from "@luo/core";
import {
  F_ALL_SEALS,
  F_SEAL_EXEC,
  F_SEAL_FUTURE_WRITE,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  formatSeals,
  memfdCreate,
  memfdMmap,
} from "@luo/memfd-handler";
import { boot, text } from "./helpers/boot.js";
import { code } from "./helpers/errno.js";

const addSeals = (p: Process, fd: number, seals: number) => p.fcntl(fd, F_ADD_SEALS, seals);
const getSeals = (p: Process, fd: number) => p.fcntl(fd, F_GET_SEALS);
const size = (p: Process, fd: number) => p.lseek(fd, 0, SEEK_END);

/** A sealable memfd of two pages. */
function sealable(p: Process): number {
  const fd = memfdCreate(p, "sealed", { allowSealing: true });
  p.pwrite(fd, new Uint8Array(2 * PAGE_SIZE).fill(1), 0);
  return fd;
}

describe("memfd seals", () => {
  it("starts with F_SEAL_SEAL unless sealing is allowed", async () => {
    const { proc } = await boot();
    const plain = memfdCreate(proc, "plain");
    expect(getSeals(proc, plain)).toBe(F_SEAL_SEAL);
    expect(code(() => addSeals(proc, plain, F_SEAL_GROW))).toBe("EPERM");
    const open = memfdCreate(proc, "open", { allowSealing: true });
    expect(getSeals(proc, open)).toBe(0);
    expect(code(() => addSeals(proc, open, 0x40))).toBe("EINVAL"); // unknown bit
    expect(code(() => addSeals(proc, open, -1))).toBe("EINVAL");
    expect(code(() => proc.fcntl(open, 9999))).toBe("EINVAL");
    addSeals(proc, open, F_SEAL_SEAL);
    expect(code(() => addSeals(proc, open, F_SEAL_GROW))).toBe("EPERM");
    expect(code(() => addSeals(proc, open, 0))).toBe("EPERM"); // even adding nothing
  });

  it("F_SEAL_SHRINK forbids shrinking only", async () => {
    const { proc } = await boot();
    const fd = sealable(proc);
    addSeals(proc, fd, F_SEAL_SHRINK);
    expect(code(() => proc.ftruncate(fd, PAGE_SIZE))).toBe("EPERM");
    expect(size(proc, fd)).toBe(2 * PAGE_SIZE);
    proc.ftruncate(fd, 3 * PAGE_SIZE);
    proc.pwrite(fd, text("x"), 5 * PAGE_SIZE);
    proc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, PAGE_SIZE); // no size change
  });

  it("F_SEAL_GROW forbids growing by ftruncate, write or fallocate; writes inside work", async () => {
    const { proc } = await boot();
    const fd = sealable(proc);
    addSeals(proc, fd, F_SEAL_GROW);
    expect(code(() => proc.ftruncate(fd, 3 * PAGE_SIZE))).toBe("EPERM");
    expect(code(() => proc.pwrite(fd, text("xy"), 2 * PAGE_SIZE - 1))).toBe("EPERM");
    expect(code(() => proc.fallocate(fd, 0, PAGE_SIZE, 2 * PAGE_SIZE))).toBe("EPERM");
    expect(code(() => proc.fallocate(fd, FALLOC_FL_KEEP_SIZE, PAGE_SIZE, 2 * PAGE_SIZE))).toBe("EPERM");
    expect(size(proc, fd)).toBe(2 * PAGE_SIZE);
    proc.pwrite(fd, text("in"), 2 * PAGE_SIZE - 2);
    proc.fallocate(fd, 0, 0, PAGE_SIZE);
    proc.ftruncate(fd, PAGE_SIZE); // shrinking is fine
  });

  it("F_SEAL_WRITE forbids write, punch-hole and writable mappings", async () => {
    const { proc } = await boot();
    const fd = sealable(proc);
    addSeals(proc, fd, F_SEAL_WRITE);
    expect(code(() => proc.pwrite(fd, text("x"), 0))).toBe("EPERM");
    expect(code(() => proc.write(fd, text("x")))).toBe("EPERM");
    expect(code(() => proc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 1))).toBe("EPERM");
    expect(code(() => memfdMmap(proc, fd, { length: PAGE_SIZE, write: true }))).toBe("EPERM");
    expect(memfdMmap(proc, fd, { length: PAGE_SIZE }).read(0, 1)).toEqual(new Uint8Array([1]));
    proc.ftruncate(fd, 4 * PAGE_SIZE); // resizing is not writing
    proc.fallocate(fd, 0, 0, 8 * PAGE_SIZE);
  });

  it("F_SEAL_WRITE is EBUSY while a writable shared mapping exists", async () => {
    const { proc } = await boot();
    const fd = sealable(proc);
    const map = memfdMmap(proc, fd, { length: PAGE_SIZE, write: true });
    expect(code(() => addSeals(proc, fd, F_SEAL_WRITE))).toBe("EBUSY");
    expect(getSeals(proc, fd)).toBe(0);
    addSeals(proc, fd, F_SEAL_GROW); // other seals are fine
    map.unmap();
    addSeals(proc, fd, F_SEAL_WRITE);
    expect(getSeals(proc, fd)).toBe(F_SEAL_GROW | F_SEAL_WRITE);
  });

  it("F_SEAL_FUTURE_WRITE leaves existing writable mappings working", async () => {
    const { proc } = await boot();
    const fd = sealable(proc);
    const map = memfdMmap(proc, fd, { length: PAGE_SIZE, write: true });
    addSeals(proc, fd, F_SEAL_FUTURE_WRITE);
    expect(code(() => proc.pwrite(fd, text("x"), 0))).toBe("EPERM");
    expect(code(() => memfdMmap(proc, fd, { length: PAGE_SIZE, write: true }))).toBe("EPERM");
    map.write(0, text("still"));
    expect(proc.pread(fd, 5, 0)).toEqual(text("still"));
    map.unmap();
  });

  it("F_SEAL_EXEC on an executable memfd implies the write seals; MFD_NOEXEC_SEAL does not", async () => {
    const { proc } = await boot();
    const exe = memfdCreate(proc, "exe", { allowSealing: true });
    addSeals(proc, exe, F_SEAL_EXEC);
    expect(getSeals(proc, exe)).toBe(
      F_SEAL_EXEC | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE,
    );
    expect(formatSeals(getSeals(proc, exe))).toBe("SHRINK|GROW|WRITE|FUTURE_WRITE|EXEC");

    // The implied F_SEAL_WRITE is refused while a writable mapping exists.
    const mapped = memfdCreate(proc, "mapped", { allowSealing: true });
    proc.ftruncate(mapped, PAGE_SIZE);
    const map = memfdMmap(proc, mapped, { length: PAGE_SIZE, write: true });
    expect(code(() => addSeals(proc, mapped, F_SEAL_EXEC))).toBe("EBUSY");
    map.unmap();

    const noexec = memfdCreate(proc, "noexec", { noExecSeal: true });
    expect(getSeals(proc, noexec)).toBe(F_SEAL_EXEC);
    proc.write(noexec, text("data"));
    addSeals(proc, noexec, F_SEAL_GROW); // sealing allowed
    expect(getSeals(proc, noexec)).toBe(F_SEAL_EXEC | F_SEAL_GROW);
    expect(formatSeals(0)).toBe("-");
    expect(formatSeals(F_ALL_SEALS | 0x100)).toBe("SEAL|SHRINK|GROW|WRITE|FUTURE_WRITE|EXEC|0x100");
  });
});
