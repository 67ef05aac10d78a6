/**
 * The LUO handover ABI: layouts, block chains, outgoing writer and incoming reader.
 *
 * @module
 */
export {
  LUO_KHO_NAME,
  LUO_COMPATIBLE,
  LUO_SESSION_COMPATIBLE,
  LUO_FLB_COMPATIBLE,
  SESSION_NAME_SIZE,
  COMPATIBLE_SIZE,
  BLOCK_HEADER_SIZE,
  LUO_MAX_BLOCKS,
  SESSION_SER,
  FILE_SER,
  FLB_SER,
  SESSION_BLOCKS,
  FILE_BLOCKS,
  FLB_AREA,
  type BlockGeometry,
} from "./layout.js";
export { encodeFixedString, readFixedString, decodeUtf8, writeSessionName } from "./strings.js";
export { BlockChain, type EntryWriter } from "./block-chain.js";
export { SessionSlot, SessionRecords, type SessionFilesField } from "./session-records.js";
export { readChain, type EntryReader, type ReadChain } from "./chain-reader.js";
export { LuoOutgoingAbi, type FlbRecord } from "./luo-outgoing.js";
export {
  readLuoHandover,
  type IncomingFileRecord,
  type IncomingSessionRecord,
  type IncomingFlbRecord,
  type LuoIncomingHandover,
} from "./luo-incoming.js";
