// Root vitest configuration: one inline project per package; the "@luo/source" condition makes
// workspace imports resolve to TypeScript sources so tests never need a prior build.
import { defineConfig } from "vitest/config";

const conditions = ["@luo/source"];

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions } },
  test: {
    setupFiles: ["reflect-metadata"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    projects: [
      {
        extends: true,
        test: {
          name: "core",
          root: "packages/core",
          include: ["test/**/*.test.ts"],
          globalSetup: ["test/global-setup.ts"],
        },
      },
      {
        extends: true,
        test: {
          name: "memfd-handler",
          root: "packages/memfd-handler",
          include: ["test/**/*.test.ts"],
        },
      },
      {
        extends: true,
        test: {
          name: "iommufd-handler",
          root: "packages/iommufd-handler",
          include: ["test/**/*.test.ts"],
          globalSetup: ["test/global-setup.ts"],
        },
      },
      {
        extends: true,
        test: {
          name: "vfio-handler",
          root: "packages/vfio-handler",
          include: ["test/**/*.test.ts"],
        },
      },
      {
        extends: true,
        test: {
          name: "quickstart",
          root: "examples/quickstart",
          include: ["test/**/*.test.ts"],
        },
      },
      {
        extends: true,
        test: {
          name: "luod",
          root: "examples/luod",
          include: ["test/**/*.test.ts"],
        },
      },
      {
        extends: true,
        test: {
          name: "vmm",
          root: "examples/vmm",
          include: ["test/**/*.test.ts"],
        },
      },
      {
        extends: true,
        test: {
          name: "custom-handler",
          root: "examples/custom-handler",
          include: ["test/**/*.test.ts"],
          globalSetup: ["test/global-setup.ts"],
        },
      },
    ],
  },
});
