/**
 * `@luo/core/testing`: the test handler, test FLBs and fault switches for tests of the core and
 * of third-party handlers. It imports no test runner, so plain scripts can use it too; the
 * handler conformance kit, which registers vitest tests, is `@luo/core/testing/conformance`.
 *
 * @module
 */
import "reflect-metadata";

export * from "./test-handler.js";
