/**
 * `@luo/core/internal`: the orchestrator's internals (session and file objects with mutable
 * state, the session lists, FLB state, the handler registry, the lock classes, the handover
 * block chains and record writers, argument converters), exported for this repository's own
 * tests and conformance kit.
 *
 * **Not a stable API.** Anything here may change or disappear in any release; a package that
 * imports it is coupled to one version of `@luo/core`. Everything a VMM, agent or handler author
 * needs is exported by `@luo/core` itself; if you find you need something from here, ask for it
 * to be made public.
 *
 * @module
 */
import "reflect-metadata";

export { toLiveUpdateError } from "./errors.js";
export { crc32 } from "./machine/index.js";
export { orderForSize } from "./kho/index.js";
export {
  encodeFixedString,
  readFixedString,
  decodeUtf8,
  writeSessionName,
  SessionSlot,
  SessionRecords,
  LuoOutgoingAbi,
  readLuoHandover,
  type SessionFilesField,
  type FlbRecord,
  type IncomingFileRecord,
  type IncomingSessionRecord,
  type IncomingFlbRecord,
  type LuoIncomingHandover,
} from "./abi/index.js";
export {
  LockLevel,
  fileLockLevel,
  LevelMutex,
  LevelRwLock,
  heldLocks,
  checkHandlerShape,
  checkFlbShape,
  FlbState,
  FlbManager,
  PreservedIds,
  Registry,
  LuoFile,
  toU64,
  FileSet,
  Session,
  validateSessionName,
  SessionList,
  deviceIoctl,
  sessionIoctl,
  LiveUpdateDeviceFile,
  SessionFile,
  registerLiveUpdateDevice,
  type LockLevelValue,
  type LockName,
  type RegisteredHandler,
  type QuiesceTarget,
  type LuoServices,
  type SessionState,
  type RebootTicket,
  type SessionFileFactory,
} from "./liveupdate/index.js";
export { orderPlugins } from "./plugin/index.js";
