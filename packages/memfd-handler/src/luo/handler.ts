/**
 * The live-update file handler `"memfd-v2"` (Linux `mm/memfd_luo.c` with preserved seals): hands
 * a memfd's physical pages to the next kernel without copying them.
 *
 * Old kernel.
 * - canPreserve: an anonymous, non-hugetlb memfd (hugetlb memfds are not claimed, so PRESERVE_FD
 *   ends in `ENOENT` in the core). getId: the inode, so two fds or file objects of one memfd
 *   cannot both be preserved (`EBUSY` from the core).
 * - preserve: unknown seal bits `EOPNOTSUPP`; more than 2^32-1 pages `EFBIG`; freeze the mapping
 *   (size and folios fixed: resize, write past the end, fallocate → `EPERM`; writes inside keep
 *   working); allocate the 48-byte record in preserved memory; pin every folio of `[0, size)`,
 *   filling holes with zeroed folios (`ENOMEM`); write one 16-byte record per folio (pfn, index,
 *   DIRTY|UPTODATE) into a preserved vmalloc area; mark every folio preserved with its order (a
 *   2 MiB folio is one record and one order-9 KHO block, not 512); record pos, size and seals.
 *   Any failure undoes all of it. data = the record's physical address.
 * - freeze (reboot): refresh the position and the seals in the record — size and folios cannot
 *   have changed. (Linux refreshes only the position, so a seal added after PRESERVE would be
 *   lost; `F_ADD_SEALS` is not blocked while preserved, so the seals are refreshed here too.) The
 *   contents need nothing: in-bounds writes went to the preserved pages themselves, so what
 *   crosses is what the pages hold at reboot. No unfreeze (nothing to undo).
 * - unpreserve: unmark the folios, free the record and the array, unpin, thaw the mapping (the
 *   file is resizable again; folios that filled holes stay allocated, as in Linux).
 * New kernel.
 * - retrieve: validate everything first (record flags 0 else `EINVAL`, seals `EOPNOTSUPP`, the
 *   array chain, every folio handed over and starting inside the file else `EIO`/`EINVAL`; a
 *   folio's order is the order KHO handed its block over with: 0, or 9 at a 512-aligned index not
 *   overlapping another folio, else `EINVAL`), then build a new memfd (empty name, same size,
 *   position and seals, the kernel's `shmemHuge` policy for new folios) whose folios *are* the
 *   handed-over blocks (`KhoIncoming.restore`, no copy: a 2 MiB folio comes back as one order-9
 *   folio at the same physical address). A failed retrieve restores nothing.
 * - finish: free the folios of a file that was never (successfully) retrieved; free the record
 *   and the array in every case. (Linux frees the record already in retrieve and leaks the folios
 *   of a failed retrieve; here they are released at FINISH.)
 *
 * @module
 */
import {
  LiveUpdateError,
  MAX_FILE_OFFSET,
  MAX_ORDER,
  MAX_ORDER_PAGES,
  PAGE_SHIFT,
  PAGE_SIZE,
  defineFileHandler,
  type FileHandler,
  type FinishArgs,
  type KhoIncoming,
  type Machine,
  type PreserveArgs,
  type PreserveResult,
  type PreservedArgs,
  type RetrieveArgs,
  type PreservedBlock,
} from "@luo/core";
import { MemfdFile } from "../memfd/file.js";
import { MEMFD_FS, type MemfdFs } from "../memfd/fs.js";
import { MemfdInode, type MemfdFolio } from "../memfd/inode.js";
import {
  MEMFD_LUO_ALL_SEALS,
  MEMFD_LUO_COMPATIBLE,
  MEMFD_LUO_FOLIO_DIRTY,
  MEMFD_LUO_FOLIO_SER_SIZE,
  MEMFD_LUO_FOLIO_UPTODATE,
  MEMFD_LUO_FOLIOS_PER_PAGE,
  MEMFD_LUO_SER,
  MEMFD_LUO_SER_SIZE,
} from "./layout.js";
import { encodeFolioRecord, encodeMemfdSer, parseMemfdHandover, type MemfdHandover } from "./record.js";
import { EMPTY_KHO_VMALLOC, preserveVmalloc, unpreserveVmalloc, type VmallocArea } from "./vmalloc.js";

/** Runtime state of one preserved memfd (the handler's private data; never crosses kexec). */
export interface MemfdPreserved {
  /** The preserved inode. */
  readonly inode: MemfdInode;
  /** Physical address of the record (`memfd_luo_ser`). */
  readonly ser: bigint;
  /** The folio-record array (none for an empty memfd). */
  readonly area: VmallocArea | undefined;
  /** The folios marked preserved, in file order. */
  readonly folios: readonly MemfdFolio[];
}

const hex = (p: bigint): string => `0x${p.toString(16)}`;

function writeFolioRecords(machine: Machine, area: VmallocArea, folios: readonly MemfdFolio[]): void {
  const flags = MEMFD_LUO_FOLIO_DIRTY | MEMFD_LUO_FOLIO_UPTODATE;
  for (let p = 0; p * MEMFD_LUO_FOLIOS_PER_PAGE < folios.length; p++) {
    const page = machine.view(area.pages[p]!, PAGE_SIZE);
    const dv = new DataView(page.buffer, page.byteOffset, PAGE_SIZE);
    const from = p * MEMFD_LUO_FOLIOS_PER_PAGE;
    const to = Math.min(folios.length, from + MEMFD_LUO_FOLIOS_PER_PAGE);
    for (let i = from; i < to; i++) {
      const f = folios[i]!;
      encodeFolioRecord(dv, (i - from) * MEMFD_LUO_FOLIO_SER_SIZE, {
        pfn: f.phys >> BigInt(PAGE_SHIFT),
        flags,
        index: BigInt(f.index),
      });
    }
  }
}

/** The inode's seals as a u32; `EOPNOTSUPP` for bits this version cannot carry. */
function checkSeals(inode: MemfdInode): number {
  const seals = inode.seals >>> 0;
  if ((seals & ~MEMFD_LUO_ALL_SEALS) >>> 0 !== 0) {
    throw new LiveUpdateError(
      "EOPNOTSUPP",
      `${inode.description} has seals 0x${seals.toString(16)} that "${MEMFD_LUO_COMPATIBLE}" cannot carry`,
    );
  }
  return seals;
}

function preserve({ file, kho }: PreserveArgs<MemfdFile>): PreserveResult<MemfdPreserved> {
  const inode = file.memfd;
  const seals = checkSeals(inode);
  if (Math.ceil(inode.size / PAGE_SIZE) > 0xffff_ffff) {
    throw new LiveUpdateError("EFBIG", `${inode.description} has more than 2^32-1 pages`);
  }
  inode.setFrozen(true);
  let ser: PreservedBlock | undefined;
  let pinned = false;
  let area: VmallocArea | undefined;
  const marked: MemfdFolio[] = [];
  try {
    ser = kho.allocPreserve(MEMFD_LUO_SER_SIZE);
    const folios = inode.pinAll();
    pinned = true;
    if (folios.length > 0) {
      area = preserveVmalloc(kho, folios.length * MEMFD_LUO_FOLIO_SER_SIZE);
      writeFolioRecords(kho.machine, area, folios);
    }
    for (const f of folios) {
      kho.preserveFolio(f.phys, f.order);
      marked.push(f);
    }
    encodeMemfdSer(ser.view, {
      pos: BigInt(file.pos),
      size: BigInt(inode.size),
      seals,
      flags: 0,
      nrFolios: BigInt(folios.length),
      folios: area?.descriptor ?? EMPTY_KHO_VMALLOC,
    });
    return { data: ser.phys, privateData: { inode, ser: ser.phys, area, folios } };
  } catch (e) {
    for (let i = marked.length - 1; i >= 0; i--) kho.unpreserveFolio(marked[i]!.phys, marked[i]!.order);
    if (area) unpreserveVmalloc(kho, area);
    if (pinned) inode.unpinAll();
    if (ser) kho.unpreserveFree(ser.phys);
    inode.setFrozen(false);
    throw e;
  }
}

function state(args: PreservedArgs<MemfdFile, MemfdPreserved>): MemfdPreserved {
  if (!args.privateData || args.data !== args.privateData.ser) {
    throw new LiveUpdateError(
      "EINVAL",
      `memfd token ${args.token}: no preserved state for data ${hex(args.data)}`,
    );
  }
  return args.privateData;
}

function freeze(args: PreservedArgs<MemfdFile, MemfdPreserved>): void {
  const { ser, inode } = state(args);
  const seals = checkSeals(inode);
  args.machine.writeU64(ser + BigInt(MEMFD_LUO_SER.pos), BigInt(args.file.pos));
  args.machine.writeU32(ser + BigInt(MEMFD_LUO_SER.seals), seals);
}

function unpreserve(args: PreservedArgs<MemfdFile, MemfdPreserved>): void {
  const { inode, ser, area, folios } = state(args);
  const { kho } = args;
  for (let i = folios.length - 1; i >= 0; i--) kho.unpreserveFolio(folios[i]!.phys, folios[i]!.order);
  if (area) unpreserveVmalloc(kho, area);
  kho.unpreserveFree(ser);
  inode.unpinAll();
  inode.setFrozen(false);
}

/** True when a block of `2^order` pages at `phys` was handed over exactly so and is not restored. */
function unrestored(incoming: KhoIncoming, phys: bigint, order: number): boolean {
  return incoming.covers(phys, PAGE_SIZE << order) && incoming.orderOf(phys) === order;
}

function metadataPages(h: MemfdHandover): Set<bigint> {
  return new Set([h.ser, ...(h.area?.pages ?? []), ...(h.area?.chunks ?? [])]);
}

/** {@link metadataPages} as page frame numbers. */
function metadataPfns(h: MemfdHandover): Set<number> {
  return new Set([...metadataPages(h)].map((p) => Number(p >> PAGE_SHIFT_N)));
}

const PAGE_SHIFT_N = BigInt(PAGE_SHIFT);

/**
 * Checks that values are distinct as they are visited in order: free while they ascend (the
 * common case: records are written in order), a set of everything seen from the first value that
 * does not.
 */
class UniqueNumbers {
  #last = -1;
  #seen: Set<number> | undefined;

  /** Adds `values[i]` (after `values[0..i)`); false when it was seen before. */
  add(values: Float64Array, i: number): boolean {
    const v = values[i]!;
    if (this.#seen === undefined) {
      if (v > this.#last) {
        this.#last = v;
        return true;
      }
      this.#seen = new Set(values.subarray(0, i));
    }
    if (this.#seen.has(v)) return false;
    this.#seen.add(v);
    return true;
  }
}

function needIncoming(incoming: KhoIncoming | undefined, data: bigint): KhoIncoming {
  if (!incoming) throw new LiveUpdateError("EINVAL", `memfd data ${hex(data)}: this kernel has no handover`);
  return incoming;
}

function retrieve({ data, incoming: maybeIncoming, container }: RetrieveArgs): MemfdFile {
  const incoming = needIncoming(maybeIncoming, data);
  if (!container.isRegistered(MEMFD_FS, true)) {
    throw new LiveUpdateError(
      "EINVAL",
      `"${MEMFD_LUO_COMPATIBLE}" needs the memfd() plugin in the new kernel`,
    );
  }
  const fs: MemfdFs = container.resolve(MEMFD_FS);
  const h = parseMemfdHandover(incoming.machine, data, (p, o) => unrestored(incoming, p, o));
  const { record } = h;
  const what = `memfd record at ${hex(data)}`;
  if (record.flags !== 0)
    throw new LiveUpdateError("EINVAL", `${what}: unknown flags 0x${record.flags.toString(16)}`);
  if ((record.seals & ~MEMFD_LUO_ALL_SEALS) >>> 0 !== 0) {
    throw new LiveUpdateError("EOPNOTSUPP", `${what}: unsupported seals 0x${record.seals.toString(16)}`);
  }
  if (record.size > BigInt(MAX_FILE_OFFSET) || record.pos > BigInt(MAX_FILE_OFFSET)) {
    throw new LiveUpdateError(
      "EINVAL",
      `${what}: size ${record.size} or position ${record.pos} out of range`,
    );
  }
  const size = Number(record.size);
  const pages = Math.ceil(size / PAGE_SIZE);
  const meta = metadataPfns(h);
  // One pass over parallel arrays, with a set only once the records stop ascending (they
  // ascend as written): measured at 32 Ki 2 MiB folios (a 64 GiB guest), the sets of bigint
  // addresses and per-record objects this replaced made retrieve about 75 ms of a 110 ms
  // blackout on this machine; see the large-host benchmark for the figure now.
  const fa = h.folioArrays;
  const n = fa.length;
  const folios: MemfdFolio[] = new Array<MemfdFolio>(n);
  const indexes = new UniqueNumbers();
  const pfns = new UniqueNumbers();
  let huge = 0;
  for (let i = 0; i < n; i++) {
    const index = fa.index[i]!;
    const pfn = fa.pfn[i]!;
    if (index >= pages || !indexes.add(fa.index, i)) {
      throw new LiveUpdateError(
        "EINVAL",
        `${what}: folio index ${index} is repeated or beyond ${pages} page(s)`,
      );
    }
    const phys = BigInt(pfn) << PAGE_SHIFT_N;
    const order = incoming.orderOf(phys);
    if (
      !pfns.add(fa.pfn, i) ||
      meta.has(pfn) ||
      order === undefined ||
      !incoming.covers(phys, PAGE_SIZE << order)
    ) {
      throw new LiveUpdateError("EIO", `${what}: cannot restore folio ${index} at ${hex(phys)}`);
    }
    if (order !== 0 && (order !== MAX_ORDER || index % MAX_ORDER_PAGES !== 0)) {
      throw new LiveUpdateError(
        "EINVAL",
        `${what}: folio ${index} at ${hex(phys)} has order ${order} (memfd folios are order 0, or ${MAX_ORDER} at a multiple of ${MAX_ORDER_PAGES} pages)`,
      );
    }
    if (order === MAX_ORDER) huge++;
    folios[i] = { index, phys, order };
  }
  if (huge > 0 && huge < n) {
    const hugeUnits = new Set<number>();
    for (const f of folios) if (f.order === MAX_ORDER) hugeUnits.add(f.index / MAX_ORDER_PAGES);
    for (const f of folios) {
      const unit = Math.floor(f.index / MAX_ORDER_PAGES);
      if (f.order === 0 && hugeUnits.has(unit)) {
        throw new LiveUpdateError(
          "EINVAL",
          `${what}: folio ${f.index} lies inside the 2 MiB folio at index ${unit * MAX_ORDER_PAGES}`,
        );
      }
    }
  }
  // Everything checked: from here nothing can fail.
  for (const f of folios) incoming.restore(f.phys, f.order);
  const inode = new MemfdInode(fs, {
    name: "",
    hugetlb: false,
    huge: fs.shmemHuge,
    seals: 0,
    executable: true,
  });
  inode.adopt(size, record.seals, folios);
  const file = new MemfdFile(inode);
  file.pos = Number(record.pos);
  return file;
}

function finish({ data, incoming: maybeIncoming, retrieveStatus }: FinishArgs<MemfdFile>): void {
  const incoming = needIncoming(maybeIncoming, data);
  let h: MemfdHandover;
  try {
    h = parseMemfdHandover(incoming.machine, data, (p, o) => unrestored(incoming, p, o));
  } catch (e) {
    if (unrestored(incoming, data, 0)) incoming.restoreFree(data);
    throw e;
  }
  const meta = metadataPages(h);
  const metaPfns = metadataPfns(h);
  if (retrieveStatus !== 1) {
    const fa = h.folioArrays;
    for (let i = 0; i < fa.length; i++) {
      if (metaPfns.has(fa.pfn[i]!)) continue;
      const phys = BigInt(fa.pfn[i]!) << PAGE_SHIFT_N;
      const order = incoming.orderOf(phys);
      if (order !== undefined && unrestored(incoming, phys, order)) incoming.restoreFree(phys);
    }
  }
  for (const p of meta) incoming.restoreFree(p);
}

/**
 * The `"memfd-v2"` file handler (see the module comment for every callback). Registered by the
 * `memfd()` plugin, which also provides the memfd filesystem `retrieve` builds files in.
 */
export const memfdHandler: FileHandler<MemfdFile, MemfdPreserved> = defineFileHandler<
  MemfdFile,
  MemfdPreserved
>({
  compatible: MEMFD_LUO_COMPATIBLE,
  canPreserve: (file) => file instanceof MemfdFile && !file.hugetlb,
  preserve,
  unpreserve,
  freeze,
  retrieve,
  finish,
  getId: (file) => file.inode,
});
