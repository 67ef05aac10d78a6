// Cross-checks against independent FDT implementations: every blob the writer produces must be
// decompiled by `dtc -I dtb -O dts` (exit 0, same nodes, properties and reservations) and read
// by libfdt (fdt_check_full() == 0, same tree, header fields); and blobs written by dtc (from dts)
// and by libfdt's sequential-write API must decode to the tree they were made from. Missing
// tools fail these tests with the install command; they are never skipped.
import { beforeAll, describe, expect, it } from "vitest";
import { decodeFdt, encodeFdt, fdtNode, fdtString, fdtTree, fdtU64, type FdtTree } from "../src/fdt/index.js";
import {
  assertExternalTools,
  dtcCompile,
  dtcDecompile,
  flattenFdt,
  libfdtBuild,
  libfdtDump,
  parseDts,
  sampleTrees,
  toDts,
} from "./helpers/external-fdt.js";

/** The KHO root of docs/abi.md: compatible, preserved-memory-map and one /LUO subtree. */
function khoRootLike(): FdtTree {
  return fdtTree(
    fdtNode("", { compatible: fdtString("kho-v1"), "preserved-memory-map": fdtU64(0x1_2345_6000n) }, [
      fdtNode("LUO", { fdt: fdtU64(0x7000n) }),
    ]),
  );
}

const RANDOM_TREES = 50;

describe("fdt against dtc and libfdt", () => {
  let random: FdtTree[] = [];
  beforeAll(() => {
    assertExternalTools();
    random = sampleTrees(RANDOM_TREES, 0x5eed);
  });

  it("has dtc and python3-libfdt installed", () => {
    expect(() => assertExternalTools()).not.toThrow();
  });

  it("dtc and libfdt read the KHO-root-like tree exactly", () => {
    const tree = khoRootLike();
    const blob = encodeFdt(tree);
    const [dts] = dtcDecompile([blob]);
    expect(dts).toContain('compatible = "kho-v1";');
    expect(dts).toMatch(/preserved-memory-map = <0x01 0x23456000>;/);
    expect(dts).toMatch(/LUO \{\s*fdt = <0x00 0x7000>;\s*\};/);
    expect(parseDts(dts as string)).toEqual(flattenFdt(tree));
    const [dump] = libfdtDump([blob]);
    expect(dump).toEqual({
      checkFull: 0,
      version: 17,
      lastCompVersion: 16,
      bootCpuid: 0,
      totalSize: blob.length,
      ...flattenFdt(tree),
    });
  });

  it(`dtc decompiles ${RANDOM_TREES} random encoded trees to the same nodes, props and reservations`, () => {
    const blobs = random.map(encodeFdt);
    const texts = dtcDecompile(blobs);
    texts.forEach((text, i) => expect(parseDts(text), `tree ${i}`).toEqual(flattenFdt(random[i] as FdtTree)));
  });

  it(`libfdt reads ${RANDOM_TREES} random encoded trees identically and fdt_check_full accepts them`, () => {
    const blobs = random.map(encodeFdt);
    libfdtDump(blobs).forEach((dump, i) => {
      const tree = random[i] as FdtTree;
      expect(dump, `tree ${i}`).toEqual({
        checkFull: 0,
        version: 17,
        lastCompVersion: 16,
        bootCpuid: tree.bootCpuid,
        totalSize: blobs[i]?.length,
        ...flattenFdt(tree),
      });
    });
  });

  it("decodes what dtc compiles from the same trees (foreign writer)", () => {
    const trees = [khoRootLike(), ...random];
    const blobs = dtcCompile(trees.map((t) => ({ dts: toDts(t), bootCpuid: t.bootCpuid })));
    blobs.forEach((blob, i) => expect(decodeFdt(blob), `tree ${i}`).toEqual(trees[i]));
  });

  it("decodes what libfdt's sequential writer builds from the same trees (foreign writer)", () => {
    const trees = [khoRootLike(), ...random];
    const buffers = libfdtBuild(trees);
    buffers.forEach((buf, i) => expect(decodeFdt(buf), `tree ${i}`).toEqual(trees[i]));
  });
});
