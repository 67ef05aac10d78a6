/**
 * `@luo/eventfd-handler`: an example third-party handler package, written only against the
 * public API of `@luo/core`. It makes the core's eventfd preservable across a live update with
 * the handler `"eventfd-v1"` (counter and flags, captured at reboot). See
 * `docs/handler-authoring.md` for the walk-through.
 *
 * @packageDocumentation
 */
export { eventfdLuo, EVENTFD_LUO_PLUGIN_NAME } from "./plugin.js";
export { eventfdHandler } from "./handler.js";
export {
  EVENTFD_LUO_COMPATIBLE,
  EVENTFD_LUO_SER,
  EVENTFD_LUO_SER_SIZE,
  decodeEventFdRecord,
  encodeEventFdRecord,
  type EventFdRecord,
} from "./record.js";
