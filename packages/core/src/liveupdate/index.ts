/**
 * The Live Update Orchestrator: sessions, files, FLBs, registration, reboot, events, locks.
 *
 * @module
 */
export {
  LockLevel,
  fileLockLevel,
  LevelMutex,
  LevelRwLock,
  heldLocks,
  type LockLevelValue,
  type LockName,
} from "./locks.js";
export {
  LIVE_UPDATE_EVENT_NAMES,
  LiveUpdateEvents,
  type EventBase,
  type LiveUpdateEventPayloads,
  type LiveUpdateEventName,
  type LiveUpdateEventMap,
} from "./events.js";
export {
  defineFileHandler,
  checkHandlerShape,
  type Awaitable,
  type SessionDependencies,
  type HandlerContext,
  type PreserveArgs,
  type PreserveResult,
  type PreservedArgs,
  type RetrieveArgs,
  type RetrieveStatus,
  type FinishArgs,
  type FileHandlerSpec,
  type FileHandler,
} from "./handler.js";
export {
  defineFlb,
  checkFlbShape,
  FlbState,
  FlbManager,
  type FlbPreserveArgs,
  type FlbPreserveResult,
  type FlbSpec,
  type Flb,
  type FlbAccess,
} from "./flb.js";
export { PreservedIds } from "./preserved-ids.js";
export {
  Registry,
  type RegisteredHandler,
  type QuiesceTarget,
  type ServedCompatibles,
} from "./registration.js";
export type { LuoServices } from "./services.js";
export { LuoFile, toU64, FileSet, type FileFinishStatus } from "./file.js";
export { Session, validateSessionName, SessionList, type SessionState } from "./session.js";
export {
  freezeView,
  type HandoverFile,
  type HandoverSession,
  type HandoverFlb,
  type HandoverView,
} from "./views.js";
export { LiveUpdate, type RebootTicket, type LiveUpdateStats, type SessionFinishStatus } from "./core.js";
export {
  LIVEUPDATE_IOCTL_TYPE,
  LIVEUPDATE_IOCTL_CREATE_SESSION,
  LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
  LIVEUPDATE_SESSION_PRESERVE_FD,
  LIVEUPDATE_SESSION_RETRIEVE_FD,
  LIVEUPDATE_SESSION_FINISH,
  LIVEUPDATE_SESSION_GET_NAME,
  LIVEUPDATE_STRUCT_SIZE,
  deviceIoctl,
  sessionIoctl,
  type SessionFileFactory,
} from "./ioctl.js";
export {
  LIVEUPDATE_DEVICE_PATH,
  LiveUpdateDeviceFile,
  SessionFile,
  LiveUpdateDevice,
  SessionHandle,
  registerLiveUpdateDevice,
} from "./device.js";
export { LiveUpdateTracer, type TraceEvent, type TraceFile } from "./tracer.js";
