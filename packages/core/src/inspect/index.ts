/**
 * Inspecting a pending handover (the library side of `luo inspect`).
 *
 * @module
 */
export { inspectHandover, formatHandoverReport, handoverReportJson, type HandoverReport } from "./inspect.js";
