#!/usr/bin/env node
// The `luod-demo` command. A committed shim, so package managers can link the bin before the
// package is built; the demo itself is compiled to dist/main.js (`pnpm build`).
import "../dist/main.js";
