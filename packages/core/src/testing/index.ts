/**
 * `@luo/core/testing`: the test handler, test FLBs and fault switches for tests of the core and
 * of third-party handlers. It imports no test runner, so plain scripts can use it too; the
 * handler conformance kit, which registers vitest tests, is `@luo/core/testing/conformance`.
 *
 * @module
 */
import "reflect-metadata";

export {
  TestControl,
  TestControls,
  type TestCall,
  type TestControlSource,
  type TestFault,
  type TestKernelKey,
  type TestOp,
} from "./test-control.js";
export {
  TEST_FILE_CAPACITY,
  TEST_FILE_MAGIC,
  TEST_FLB_MAGIC,
  TEST_HANDLER_COMPATIBLE,
  TestFile,
  createTestFile,
  createTestFlb,
  createTestHandler,
  testHandlerPlugin,
  type TestFlbObject,
  type TestPlugin,
  type TestPluginOptions,
} from "./test-handler.js";
