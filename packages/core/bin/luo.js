#!/usr/bin/env node
// The `luo` command of @luo/core. A committed shim, so package managers can link the bin before
// the package is built; the CLI itself is compiled to dist/cli/luo.js (`pnpm build`).
import "../dist/cli/luo.js";
