import { describe, it } from "vitest";
import { Kho } from "../src/kho/index.js";
import { Machine } from "../src/machine/index.js";
import { expectErrno } from "./fixtures/machine-helpers.js";

describe("KHO subtree names", () => {
  it("accepts exactly the valid FDT node names, EINVAL otherwise, EEXIST when taken", () => {
    const kho = new Kho(new Machine({ memory: "2 MiB" }));
    for (const name of ["LUO", "memfd-v1", "a,b._+-", "node@1000", "x".repeat(31)]) {
      kho.addSubtree(name, 0x1000n);
    }
    for (const name of ["", "1abc", "-x", "x".repeat(32), "a b", "a/b", "a@", "é"]) {
      expectErrno(() => kho.addSubtree(name, 0x1000n), "EINVAL");
    }
    expectErrno(() => kho.addSubtree("LUO", 0x2000n), "EEXIST");
    kho.removeSubtree("LUO");
    kho.addSubtree("LUO", 0x2000n);
  });
});
