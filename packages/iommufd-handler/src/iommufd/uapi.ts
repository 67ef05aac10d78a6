/**
 * The raw ioctl ABI of `/dev/iommu` (`include/uapi/linux/iommufd.h`): command numbers
 * `_IO(';', 0x80 + n)` and the argument structs, little-endian. `arg` models the user memory the
 * argument pointer refers to (`undefined` is NULL); a user pointer *inside* a struct
 * (`allowed_iovas`) is taken as a byte offset into that same memory.
 *
 * Envelope, as the kernel's `iommufd_fops_ioctl`: a command whose type is not `';'` or whose
 * number is not in the table → `ENOTTY`; the leading `u32 size` unreadable → `EFAULT`; `size`
 * below the command's minimum → `EINVAL`; bytes the kernel does not know must be zero (`E2BIG`);
 * run; copy back `min(size, struct size)` bytes.
 *
 * Commands: DESTROY, IOAS_ALLOC, IOAS_IOVA_RANGES, IOAS_MAP, IOAS_UNMAP, HWPT_ALLOC,
 * IOAS_MAP_FILE, IOAS_CHANGE_PROCESS, HWPT_LIVEUPDATE_MARK_PRESERVE (0x95, as in the posted
 * series) and two of this model whose numbers upstream has not fixed:
 * HWPT_LIVEUPDATE_RESTORE (0x96, `{u32 size; u32 flags; u64 hwpt_token; u32 out_hwpt_id;
 * u32 reserved}`) and LIVEUPDATE_GET_INFO (0x97, `{u32 size; u32 out_flags}`, bit 0 = this
 * kernel restores HWPTs). `IOAS_MAP` of a user virtual address is `EFAULT` here: the model has
 * no process address space (use {@link IommufdFile.mapUser} with a memfd mapping instead).
 * Device attach/detach goes through the device's driver (vfio), not through /dev/iommu.
 *
 * @module
 */
import { LiveUpdateError, type Process } from "@luo/core";
import { IOMMU_READ, IOMMU_WRITE } from "../iommu/pgtable.js";
import type { IommufdFile } from "./ictx.js";

/** ioctl type byte of iommufd (`IOMMUFD_TYPE`, `';'`). */
export const IOMMUFD_TYPE = 0x3b;
const io = (nr: number): number => (IOMMUFD_TYPE << 8) | nr;

/** `IOMMU_DESTROY` `{u32 size; u32 id}`. */
export const IOMMU_DESTROY = io(0x80);
/** `IOMMU_IOAS_ALLOC` `{u32 size; u32 flags; u32 out_ioas_id}`. */
export const IOMMU_IOAS_ALLOC = io(0x81);
/** `IOMMU_IOAS_IOVA_RANGES` `{u32 size; u32 ioas_id; u32 num_iovas; u32 reserved; u64 allowed_iovas; u64 out_iova_alignment}`. */
export const IOMMU_IOAS_IOVA_RANGES = io(0x84);
/** `IOMMU_IOAS_MAP` `{u32 size; u32 flags; u32 ioas_id; u32 reserved; u64 user_va; u64 length; u64 iova}`. */
export const IOMMU_IOAS_MAP = io(0x85);
/** `IOMMU_IOAS_UNMAP` `{u32 size; u32 ioas_id; u64 iova; u64 length}`. */
export const IOMMU_IOAS_UNMAP = io(0x86);
/** `IOMMU_HWPT_ALLOC` `{u32 size; u32 flags; u32 dev_id; u32 pt_id; u32 out_hwpt_id; u32 reserved; u32 data_type; u32 data_len; u64 data_uptr; …}`. */
export const IOMMU_HWPT_ALLOC = io(0x89);
/** `IOMMU_IOAS_MAP_FILE` `{u32 size; u32 flags; u32 ioas_id; s32 fd; u64 start; u64 length; u64 iova}`. */
export const IOMMU_IOAS_MAP_FILE = io(0x8f);
/** `IOMMU_IOAS_CHANGE_PROCESS` `{u32 size; u32 reserved}`. */
export const IOMMU_IOAS_CHANGE_PROCESS = io(0x92);
/** `IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE` `{u32 size; u32 hwpt_id; u64 hwpt_token}`. */
export const IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE = io(0x95);
/** `IOMMU_HWPT_LIVEUPDATE_RESTORE` (this model's number, see the module comment). */
export const IOMMU_HWPT_LIVEUPDATE_RESTORE = io(0x96);
/** `IOMMU_LIVEUPDATE_GET_INFO` (this model's capability query, see the module comment). */
export const IOMMU_LIVEUPDATE_GET_INFO = io(0x97);

/** `IOMMU_IOAS_MAP*` flag: map at the given IOVA. */
export const IOMMU_IOAS_MAP_FIXED_IOVA = 1;
/** `IOMMU_IOAS_MAP*` flag: the device may write. */
export const IOMMU_IOAS_MAP_WRITEABLE = 2;
/** `IOMMU_IOAS_MAP*` flag: the device may read. */
export const IOMMU_IOAS_MAP_READABLE = 4;
/** `IOMMU_LIVEUPDATE_GET_INFO` flag: preserved HWPTs can be restored after a live update. */
export const IOMMU_LIVEUPDATE_INFO_RESTORE = 1;

interface Op {
  readonly min: number;
  readonly size: number;
  readonly run: (ictx: IommufdFile, proc: Process, k: DataView, arg: Uint8Array | undefined) => void;
}

const U64_SAFE = (v: bigint, what: string): number => {
  if (v > BigInt(Number.MAX_SAFE_INTEGER))
    throw new LiveUpdateError("EOVERFLOW", `${what} 0x${v.toString(16)} is too large`);
  return Number(v);
};

function mapFlags(flags: number, what: string): { prot: number; fixed: boolean } {
  const known = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE;
  if (flags & ~known)
    throw new LiveUpdateError("EOPNOTSUPP", `${what}: unknown flags 0x${flags.toString(16)}`);
  const prot =
    (flags & IOMMU_IOAS_MAP_READABLE ? IOMMU_READ : 0) | (flags & IOMMU_IOAS_MAP_WRITEABLE ? IOMMU_WRITE : 0);
  return { prot, fixed: (flags & IOMMU_IOAS_MAP_FIXED_IOVA) !== 0 };
}

const OPS = new Map<number, Op>([
  [0x80, { min: 8, size: 8, run: (c, _p, k) => c.destroy(k.getUint32(4, true)) }],
  [
    0x81,
    {
      min: 12,
      size: 12,
      run: (c, _p, k) => {
        if (k.getUint32(4, true) !== 0)
          throw new LiveUpdateError("EOPNOTSUPP", "IOAS_ALLOC: flags must be 0");
        k.setUint32(8, c.allocIoas(), true);
      },
    },
  ],
  [
    0x84,
    {
      min: 32,
      size: 32,
      run: (c, _p, k, arg) => {
        if (k.getUint32(12, true) !== 0)
          throw new LiveUpdateError("EINVAL", "IOAS_IOVA_RANGES: reserved field is not 0");
        const { ranges, alignment } = c.iovaRanges(k.getUint32(4, true));
        const room = k.getUint32(8, true);
        k.setUint32(8, ranges.length, true);
        k.setBigUint64(24, alignment, true);
        if (room < ranges.length) throw new IovaRangesTooSmall(ranges.length);
        const at = U64_SAFE(k.getBigUint64(16, true), "allowed_iovas");
        if (!arg || at + 16 * ranges.length > arg.length)
          throw new LiveUpdateError("EFAULT", "IOAS_IOVA_RANGES: allowed_iovas is not writable");
        const out = new DataView(arg.buffer, arg.byteOffset + at, 16 * ranges.length);
        ranges.forEach((r, i) => {
          out.setBigUint64(i * 16, r.start, true);
          out.setBigUint64(i * 16 + 8, r.last, true);
        });
      },
    },
  ],
  [
    0x85,
    {
      min: 40,
      size: 40,
      run: (c, _p, k) => {
        mapFlags(k.getUint32(4, true), "IOAS_MAP");
        c.ioas(k.getUint32(8, true));
        throw new LiveUpdateError(
          "EFAULT",
          "IOAS_MAP: the model has no process address space (map a memfd mapping with mapUser)",
        );
      },
    },
  ],
  [
    0x86,
    {
      min: 24,
      size: 24,
      run: (c, _p, k) => {
        const n = c.unmap(
          k.getUint32(4, true),
          U64_SAFE(k.getBigUint64(8, true), "iova"),
          U64_SAFE(k.getBigUint64(16, true), "length"),
        );
        k.setBigUint64(16, BigInt(n), true);
      },
    },
  ],
  [
    0x89,
    {
      min: 24,
      size: 48,
      run: (c, _p, k) => {
        if (k.getUint32(24, true) !== 0 || k.getUint32(28, true) !== 0 || k.getBigUint64(32, true) !== 0n) {
          throw new LiveUpdateError("EOPNOTSUPP", "HWPT_ALLOC: driver-specific data is not supported");
        }
        if (k.getUint32(20, true) !== 0)
          throw new LiveUpdateError("EOPNOTSUPP", "HWPT_ALLOC: reserved field is not 0");
        k.setUint32(16, c.allocHwpt(k.getUint32(8, true), k.getUint32(12, true), k.getUint32(4, true)), true);
      },
    },
  ],
  [
    0x8f,
    {
      min: 40,
      size: 40,
      run: (c, p, k) => {
        const { prot, fixed } = mapFlags(k.getUint32(4, true), "IOAS_MAP_FILE");
        const file = p.file(k.getInt32(12, true));
        const iova = c.mapFile(
          k.getUint32(8, true),
          file,
          U64_SAFE(k.getBigUint64(16, true), "start"),
          U64_SAFE(k.getBigUint64(24, true), "length"),
          fixed ? U64_SAFE(k.getBigUint64(32, true), "iova") : undefined,
          prot,
          p,
        );
        k.setBigUint64(32, BigInt(iova), true);
      },
    },
  ],
  [
    0x92,
    {
      min: 8,
      size: 8,
      run: (c, p, k) => {
        if (k.getUint32(4, true) !== 0)
          throw new LiveUpdateError("EOPNOTSUPP", "IOAS_CHANGE_PROCESS: reserved field is not 0");
        c.changeProcess(p);
      },
    },
  ],
  [
    0x95,
    { min: 16, size: 16, run: (c, _p, k) => c.markPreserve(k.getUint32(4, true), k.getBigUint64(8, true)) },
  ],
  [
    0x96,
    {
      min: 24,
      size: 24,
      run: (c, _p, k) => {
        if (k.getUint32(4, true) !== 0 || k.getUint32(20, true) !== 0)
          throw new LiveUpdateError("EOPNOTSUPP", "HWPT_LIVEUPDATE_RESTORE: flags must be 0");
        k.setUint32(16, c.restoreHwpt(k.getBigUint64(8, true)), true);
      },
    },
  ],
  [
    0x97,
    {
      min: 8,
      size: 8,
      run: (c, _p, k) => k.setUint32(4, c.restoresHwpts ? IOMMU_LIVEUPDATE_INFO_RESTORE : 0, true),
    },
  ],
]);

/** IOVA_RANGES with too little room: `EMSGSIZE` after `num_iovas` was written back. */
class IovaRangesTooSmall extends LiveUpdateError {
  constructor(readonly needed: number) {
    super("EMSGSIZE", `IOAS_IOVA_RANGES: ${needed} range(s) do not fit`);
  }
}

/** Dispatches an ioctl on an iommufd (see the module comment). */
export function iommufdIoctl(
  ictx: IommufdFile,
  proc: Process,
  cmd: number,
  arg: Uint8Array | undefined,
): number {
  const nr = cmd & 0xff;
  const op = cmd >>> 8 === IOMMUFD_TYPE ? OPS.get(nr) : undefined;
  if (!op) throw new LiveUpdateError("ENOTTY", `${ictx.description} has no ioctl 0x${cmd.toString(16)}`);
  if (!arg || arg.length < 4) throw new LiveUpdateError("EFAULT", "ioctl argument: bad address");
  const size = new DataView(arg.buffer, arg.byteOffset, 4).getUint32(0, true);
  if (size < op.min)
    throw new LiveUpdateError("EINVAL", `ioctl 0x${cmd.toString(16)}: size ${size} < ${op.min}`);
  if (size > arg.length)
    throw new LiveUpdateError("EFAULT", `ioctl 0x${cmd.toString(16)}: ${size} bytes not readable`);
  for (let i = op.size; i < size; i++) {
    if (arg[i] !== 0)
      throw new LiveUpdateError("E2BIG", `ioctl 0x${cmd.toString(16)}: non-zero byte ${i} past the struct`);
  }
  const kbuf = new Uint8Array(op.size);
  kbuf.set(arg.subarray(0, Math.min(size, op.size)));
  const k = new DataView(kbuf.buffer);
  const back = (): void => arg.set(kbuf.subarray(0, Math.min(size, op.size)));
  try {
    op.run(ictx, proc, k, arg);
  } catch (e) {
    if (e instanceof IovaRangesTooSmall) back();
    throw e;
  }
  back();
  return 0;
}
