/**
 * `@luo/core/testing`: the test handler, test FLBs and fault switches for tests of the core and
 * of third-party handlers.
 *
 * @module
 */
import "reflect-metadata";

export * from "./test-handler.js";
export * from "./conformance.js";
