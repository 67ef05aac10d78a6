/**
 * The live-update file handler `"eventfd-v1"`: an eventfd's counter and flags cross a kexec.
 *
 * Old kernel.
 * - canPreserve: an {@link EventFdFile} of the core (any other file type is left to other
 *   handlers; PRESERVE of a file nobody claims is `ENOENT` in the core).
 * - preserve: allocate one preserved page and write the record (count and flags) into it, so the
 *   page is valid from the start. data = the page's physical address. Can fail only with the
 *   allocator's `ENOMEM`, and then nothing was allocated.
 * - freeze (reboot): write the record again. The counter keeps changing after PRESERVE (writes,
 *   reads, driver signals); what crosses is its value at reboot. No unfreeze: if the reboot
 *   fails the page is simply rewritten at the next freeze.
 * - unpreserve: free the page.
 * New kernel.
 * - retrieve: check that `data` is a handed-over page not restored yet (`EINVAL`), decode the
 *   record (`EINVAL` for unknown flags or a non-zero reserved word), then — nothing can fail
 *   from here — rebuild the eventfd with `EventFdFile.restore` and free the page: the record is
 *   copied into the new file, nothing else needs it.
 * - finish: free the page of a file that was never (successfully) retrieved.
 *
 * Waiters do not cross: a read or write blocked in the old kernel ends with `ESHUTDOWN` when it
 * halts; the new kernel's eventfd starts with no waiters.
 *
 * @module
 */
import {
  EventFdFile,
  LiveUpdateError,
  defineFileHandler,
  type FileHandler,
  type FinishArgs,
  type KhoIncoming,
  type PreserveArgs,
  type PreserveResult,
  type PreservedArgs,
  type RetrieveArgs,
} from "@luo/core";
import {
  EVENTFD_LUO_COMPATIBLE,
  EVENTFD_LUO_SER_SIZE,
  decodeEventFdRecord,
  encodeEventFdRecord,
} from "./record.js";

const hex = (p: bigint): string => `0x${p.toString(16)}`;

function preserve({ file, kho }: PreserveArgs<EventFdFile>): PreserveResult<undefined> {
  const page = kho.allocPreserve(EVENTFD_LUO_SER_SIZE);
  encodeEventFdRecord(page.view, { count: file.count, flags: file.flags });
  return { data: page.phys };
}

function freeze({ file, machine, data }: PreservedArgs<EventFdFile, undefined>): void {
  encodeEventFdRecord(machine.view(data, EVENTFD_LUO_SER_SIZE), { count: file.count, flags: file.flags });
}

function unpreserve({ kho, data }: PreservedArgs<EventFdFile, undefined>): void {
  kho.unpreserveFree(data);
}

function handedOver(incoming: KhoIncoming | undefined, data: bigint): KhoIncoming {
  if (!incoming?.covers(data, EVENTFD_LUO_SER_SIZE)) {
    throw new LiveUpdateError("EINVAL", `eventfd data ${hex(data)} is not handed-over memory`);
  }
  return incoming;
}

function retrieve({ incoming, data }: RetrieveArgs): EventFdFile {
  const memory = handedOver(incoming, data);
  const record = decodeEventFdRecord(memory.machine.view(data, EVENTFD_LUO_SER_SIZE), hex(data));
  const file = EventFdFile.restore(record.count, record.flags);
  // Everything checked: from here nothing can fail.
  memory.restoreFree(data);
  return file;
}

function finish({ incoming, data, retrieveStatus }: FinishArgs<EventFdFile>): void {
  // A retrieved file freed its page in retrieve; otherwise the page is still handed over.
  if (retrieveStatus !== 1 && incoming?.covers(data, EVENTFD_LUO_SER_SIZE)) incoming.restoreFree(data);
}

/** The `"eventfd-v1"` file handler (see the module comment for every callback). */
export const eventfdHandler: FileHandler<EventFdFile, undefined> = defineFileHandler<EventFdFile, undefined>({
  compatible: EVENTFD_LUO_COMPATIBLE,
  canPreserve: (file) => file instanceof EventFdFile,
  preserve,
  unpreserve,
  freeze,
  retrieve,
  finish,
});
