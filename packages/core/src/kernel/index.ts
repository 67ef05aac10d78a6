/**
 * The kernel's VFS model: file objects, processes with fd tables, device nodes, halting.
 *
 * @module
 */
export {
  SEEK_SET,
  SEEK_CUR,
  SEEK_END,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  allocInode,
  KernelFile,
  type WaitOptions,
} from "./file.js";
export { KernelContext, type DeviceOpener } from "./context.js";
export { F_ADD_SEALS, F_GET_SEALS, MAX_FILE_OFFSET, Process } from "./process.js";
export {
  AF_UNIX,
  SOCK_STREAM,
  SOCK_NONBLOCK,
  SOCK_CLOEXEC,
  SCM_MAX_FD,
  UNIX_INFLIGHT_MAX,
  UNIX_PATH_MAX,
  SOMAXCONN,
  UnixSocket,
  type ReceivedMessage,
  type RecvOptions,
} from "./unix-socket.js";
export {
  EFD_SEMAPHORE,
  EFD_NONBLOCK,
  EFD_CLOEXEC,
  EFD_FLAGS_SET,
  EVENTFD_COUNT_MAX,
  EVENTFD_VALUE_SIZE,
  EventFdFile,
  eventfd,
  eventfdFile,
  eventfdCtxFdget,
} from "./eventfd.js";
export {
  DEV_NULL_PATH,
  DEV_ZERO_PATH,
  MAX_RW_COUNT,
  NullDevice,
  ZeroDevice,
  registerCharDevices,
} from "./chardev.js";
