// Flat ESLint configuration for the whole workspace (typescript-eslint, no type-aware rules so
// linting stays fast).
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  {
    ignores: [
      "**/dist/**",
      "**/node_modules/**",
      "docs/**",
      "bench/results/**",
      "coverage/**",
      "**/test/generated/**",
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: {
        console: "readonly",
        process: "readonly",
        Buffer: "readonly",
        URL: "readonly",
        setTimeout: "readonly",
        clearTimeout: "readonly",
      },
    },
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/no-explicit-any": "error",
      "no-restricted-syntax": [
        "error",
        {
          selector: "NewExpression[callee.name='Error']",
          message: "Library code throws LiveUpdateError (see errors.ts), not Error.",
        },
      ],
    },
  },
  {
    files: ["**/test/**", "**/*.test.ts", "scripts/**", "examples/**", "bench/**"],
    rules: { "no-restricted-syntax": "off" },
  },
);
