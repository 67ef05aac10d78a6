/**
 * Inspecting a pending handover (the library side of `luo inspect`) and its extensions.
 *
 * @module
 */
export { inspectHandover, formatHandoverReport, handoverReportJson, type HandoverReport } from "./inspect.js";
export { checkInspectExtension, type InspectExtension, type InspectSection } from "./extension.js";
