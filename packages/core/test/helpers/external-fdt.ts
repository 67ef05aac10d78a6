// Test-side view of device trees: random valid trees (fast-check arbitraries), a canonical
// flattened form to compare trees with, and the independent FDT implementations the project is
// checked against: dtc (device-tree-compiler: dtb -> dts and dts -> dtb) and libfdt through
// Debian's /usr/bin/python3 (python3-libfdt: read a blob; build a blob with its sequential-write
// API). Each external call handles a whole batch of blobs in one process. Missing tools make the
// calling test fail with the install command; nothing is ever skipped.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import type { FdtNode, FdtTree } from "../../src/fdt/index.js";
import { fdtString, fdtStringList, fdtU32, fdtU64 } from "../../src/fdt/index.js";
import { INSTALL_COMMAND, SYSTEM_PYTHON, missingFdtTools } from "../../../../scripts/fdt-tools.mjs";

// The tool probes, the interpreter path and the install command come from scripts/fdt-tools.mjs,
// which scripts/ensure-tools.mjs uses too.
export { INSTALL_COMMAND, SYSTEM_PYTHON };

// ---------------------------------------------------------------------------------------------
// Canonical flattened form

/** A tree as comparable data: nodes in pre-order with their path and props as [name, hex]. */
export interface FlatFdt {
  nodes: { path: string; props: [string, string][] }[];
  /** [address, size] as `0x…` hex without leading zeros. */
  reservations: [string, string][];
}

const hexBytes = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
const hex64 = (n: bigint): string => `0x${n.toString(16)}`;

export function flattenFdt(tree: FdtTree): FlatFdt {
  const nodes: FlatFdt["nodes"] = [];
  const walk = (node: FdtNode, path: string): void => {
    nodes.push({ path, props: [...node.props].map(([k, v]) => [k, hexBytes(v)]) });
    for (const c of node.children) walk(c, path === "/" ? `/${c.name}` : `${path}/${c.name}`);
  };
  walk(tree.root, "/");
  return { nodes, reservations: tree.reservations.map((r) => [hex64(r.address), hex64(r.size)]) };
}

// ---------------------------------------------------------------------------------------------
// Random valid trees

const LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const NODE_CHARS = `${LETTERS}0123456789,._+-`;
const PROP_CHARS = `${NODE_CHARS}?#`;
// Names dtc gives a meaning to (and checks as errors, or warns loudly about): kept out of random
// trees so the external tools see plain data.
const SPECIAL_PROPS = new Set([
  "name",
  "phandle",
  "linux,phandle",
  "reg",
  "ranges",
  "dma-ranges",
  "compatible",
  "model",
  "status",
  "label",
  "device_type",
  "interrupts",
  "interrupt-parent",
  "interrupts-extended",
  "interrupt-map",
  "clocks",
  "gpios",
]);
const SPECIAL_NODES = new Set(["aliases", "chosen", "memory", "cpus", "cpu", "__symbols__", "__fixups__"]);

const u64Arb = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });

export const nodeNameArb: fc.Arbitrary<string> = fc
  .tuple(
    fc.constantFrom(...LETTERS),
    fc.string({ unit: fc.constantFrom(...NODE_CHARS), maxLength: 30 }),
    fc.option(fc.string({ unit: fc.constantFrom(...NODE_CHARS), minLength: 1, maxLength: 10 }), {
      nil: undefined,
    }),
  )
  .map(([first, rest, unit]) => (unit === undefined ? first + rest : `${first}${rest}@${unit}`))
  .filter((n) => !SPECIAL_NODES.has(n.split("@")[0] ?? "") && !n.startsWith("__"));

export const propNameArb: fc.Arbitrary<string> = fc
  .string({ unit: fc.constantFrom(...PROP_CHARS), minLength: 1, maxLength: 31 })
  .filter((n) => !SPECIAL_PROPS.has(n) && !n.endsWith("-gpios") && !n.endsWith("-supply"));

const noNul = (s: string): boolean => !s.includes("\0");

/** Property values of every kind the module offers. */
export const propValueArb: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.string({ unit: "grapheme", maxLength: 12 }).filter(noNul).map(fdtString),
  fc.string({ unit: "grapheme-ascii", maxLength: 16 }).filter(noNul).map(fdtString),
  fc
    .array(fc.string({ unit: "grapheme-ascii", maxLength: 8 }).filter(noNul), { maxLength: 4 })
    .map(fdtStringList),
  fc.integer({ min: 0, max: 0xffff_ffff }).map(fdtU32),
  u64Arb.map(fdtU64),
  fc.uint8Array({ maxLength: 24 }),
);

function nodeArb(depth: number, name: fc.Arbitrary<string>): fc.Arbitrary<FdtNode> {
  const props = fc.uniqueArray(fc.tuple(propNameArb, propValueArb), { selector: ([n]) => n, maxLength: 5 });
  const children: fc.Arbitrary<FdtNode[]> =
    depth === 0
      ? fc.constant([])
      : fc.uniqueArray(nodeArb(depth - 1, nodeNameArb), {
          selector: (c) => c.name,
          maxLength: depth > 3 ? 3 : 2,
        });
  return fc
    .record({ name, props, children })
    .map(({ name: n, props: p, children: c }) => ({ name: n, props: new Map(p), children: c }));
}

/** Random valid trees: nesting up to depth 5, every value kind, reservations, boot CPU id. */
export const fdtTreeArb: fc.Arbitrary<FdtTree> = fc.record({
  root: nodeArb(5, fc.constant("")),
  reservations: fc.array(
    fc.record({ address: u64Arb, size: fc.bigInt({ min: 1n, max: (1n << 64n) - 1n }) }),
    { maxLength: 4 },
  ),
  bootCpuid: fc.integer({ min: 0, max: 0xffff_ffff }),
});

/** Deterministic sample of random trees. */
export function sampleTrees(count: number, seed: number): FdtTree[] {
  return fc.sample(fdtTreeArb, { seed, numRuns: count });
}

// ---------------------------------------------------------------------------------------------
// Running the external tools

/** Throws (failing the test) with the install command when dtc or python3-libfdt is missing. */
export function assertExternalTools(): void {
  const missing = missingFdtTools();
  if (missing.length > 0) {
    throw new Error(`FDT tests need ${missing.join(" and ")}. Install them: ${INSTALL_COMMAND}`);
  }
}

function withTempDir<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), "luo-fdt-"));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs a shell script of one command per item; each failing command prints its index. */
function runBatch(dir: string, commands: string[], what: string): void {
  const script = commands.map((c, i) => `${c} 2>'${dir}/${i}.err' || echo ${i}`).join("\n");
  const r = spawnSync("sh", ["-c", script], { encoding: "utf8", maxBuffer: 1 << 26 });
  if (r.status !== 0 || r.error) throw new Error(`${what}: shell failed: ${r.error?.message ?? r.stderr}`);
  const failed = r.stdout.split("\n").filter((l) => l !== "");
  if (failed.length > 0) {
    const first = Number(failed[0]);
    const err = readFileSync(join(dir, `${first}.err`), "utf8");
    throw new Error(`${what} failed for ${failed.length} item(s); item ${first}: ${err}`);
  }
}

/** `dtc -I dtb -O dts` on each blob (must exit 0); returns the dts texts (bytes as latin1). */
export function dtcDecompile(blobs: readonly Uint8Array[]): string[] {
  return withTempDir((dir) => {
    blobs.forEach((b, i) => writeFileSync(join(dir, `${i}.dtb`), b));
    runBatch(
      dir,
      blobs.map((_, i) => `dtc -I dtb -O dts -o '${dir}/${i}.dts' '${dir}/${i}.dtb'`),
      "dtc -I dtb -O dts",
    );
    return blobs.map((_, i) => readFileSync(join(dir, `${i}.dts`), "latin1"));
  });
}

/** `dtc -I dts -O dtb -b <bootCpuid>` on each source (must exit 0); returns the blobs. */
export function dtcCompile(sources: readonly { dts: string; bootCpuid: number }[]): Uint8Array[] {
  return withTempDir((dir) => {
    sources.forEach((s, i) => writeFileSync(join(dir, `${i}.dts`), s.dts, "latin1"));
    runBatch(
      dir,
      sources.map((s, i) => `dtc -I dts -O dtb -b ${s.bootCpuid} -o '${dir}/${i}.dtb' '${dir}/${i}.dts'`),
      "dtc -I dts -O dtb",
    );
    return sources.map((_, i) => new Uint8Array(readFileSync(join(dir, `${i}.dtb`))));
  });
}

/** A tree as dts source, every value written as a byte string. */
export function toDts(tree: FdtTree): string {
  const lines = ["/dts-v1/;"];
  for (const r of tree.reservations) lines.push(`/memreserve/ ${hex64(r.address)} ${hex64(r.size)};`);
  const walk = (node: FdtNode, indent: string): void => {
    lines.push(`${indent}${node.name === "" ? "/" : node.name} {`);
    for (const [k, v] of node.props) {
      lines.push(
        v.length === 0
          ? `${indent}\t${k};`
          : `${indent}\t${k} = [${hexBytes(v).replace(/(..)(?!$)/g, "$1 ")}];`,
      );
    }
    for (const c of node.children) walk(c, `${indent}\t`);
    lines.push(`${indent}};`);
  };
  walk(tree.root, "");
  return `${lines.join("\n")}\n`;
}

// ---------------------------------------------------------------------------------------------
// Parsing dtc's dts output

/**
 * Parses the dts that `dtc -O dts` prints (strings, `<cells>` with optional `/bits/ n`, `[bytes]`,
 * `/memreserve/`) into the flattened form. dtc writes `\0` only for NUL and `\xNN` for other bytes,
 * which is how escapes are read here.
 */
export function parseDts(text: string): FlatFdt {
  let i = 0;
  const fail = (msg: string): never => {
    throw new Error(`parseDts: ${msg} at ${i}: ${JSON.stringify(text.slice(i, i + 40))}`);
  };
  const skip = (): void => {
    for (;;) {
      while (i < text.length && /\s/.test(text[i] as string)) i++;
      if (text.startsWith("/*", i)) i = text.indexOf("*/", i) + 2;
      else if (text.startsWith("//", i)) i = text.indexOf("\n", i);
      else return;
    }
  };
  const eat = (s: string): boolean => {
    skip();
    if (text.startsWith(s, i)) {
      i += s.length;
      return true;
    }
    return false;
  };
  const expect = (s: string): void => {
    if (!eat(s)) fail(`expected ${JSON.stringify(s)}`);
  };
  const word = (re: RegExp): string => {
    skip();
    re.lastIndex = i;
    const m = re.exec(text);
    if (!m || m.index !== i) return fail(`expected ${re.source}`);
    i += m[0].length;
    return m[0];
  };
  const NAME = /[A-Za-z0-9,._+*#?@-]+/y;
  const NUMBER = /0[xX][0-9a-fA-F]+|[0-9]+/y;

  const value = (): number[] => {
    const out: number[] = [];
    skip();
    if (eat('"')) {
      for (;;) {
        const c = text[i++];
        if (c === undefined) fail("unterminated string");
        if (c === '"') break;
        if (c !== "\\") {
          out.push((c as string).charCodeAt(0));
          continue;
        }
        const e = text[i++] as string;
        const simple: Record<string, number> = {
          a: 7,
          b: 8,
          t: 9,
          n: 10,
          v: 11,
          f: 12,
          r: 13,
          "\\": 92,
          '"': 34,
          "'": 39,
        };
        if (e === "0") out.push(0);
        else if (e === "x") {
          out.push(parseInt(text.slice(i, i + 2), 16));
          i += 2;
        } else if (e in simple) out.push(simple[e] as number);
        else fail(`unknown escape \\${e}`);
      }
      out.push(0); // a string literal is NUL-terminated
      return out;
    }
    let bits = 32;
    if (eat("/bits/")) bits = Number(word(NUMBER));
    if (eat("<")) {
      while (!eat(">")) {
        let n = BigInt(word(NUMBER));
        const cell: number[] = [];
        for (let b = 0; b < bits / 8; b++) {
          cell.unshift(Number(n & 0xffn));
          n >>= 8n;
        }
        out.push(...cell);
      }
      return out;
    }
    if (eat("[")) {
      while (!eat("]")) {
        const hex = word(/[0-9a-fA-F]+/y);
        for (let k = 0; k < hex.length; k += 2) out.push(parseInt(hex.slice(k, k + 2), 16));
      }
      return out;
    }
    return fail("expected a value");
  };

  const nodes: FlatFdt["nodes"] = [];
  const node = (path: string): void => {
    expect("{");
    const entry: FlatFdt["nodes"][number] = { path, props: [] };
    nodes.push(entry);
    while (!eat("}")) {
      const name = word(NAME);
      if (eat("{")) {
        i--;
        node(path === "/" ? `/${name}` : `${path}/${name}`);
        continue;
      }
      const bytes: number[] = [];
      if (eat("=")) {
        do bytes.push(...value());
        while (eat(","));
      }
      expect(";");
      entry.props.push([name, Buffer.from(bytes).toString("hex")]);
    }
    expect(";");
  };

  expect("/dts-v1/");
  expect(";");
  const reservations: FlatFdt["reservations"] = [];
  while (eat("/memreserve/")) {
    reservations.push([hex64(BigInt(word(NUMBER))), hex64(BigInt(word(NUMBER)))]);
    expect(";");
  }
  expect("/");
  node("/");
  skip();
  if (i !== text.length) fail("trailing text");
  return { nodes, reservations };
}

// ---------------------------------------------------------------------------------------------
// libfdt through Python

const LIBFDT_SCRIPT = String.raw`
import json, sys, libfdt
Q = (libfdt.FDT_ERR_NOTFOUND,)

def dump(data):
    buf = bytearray(data)
    check_full = libfdt.fdt_check_full(buf, len(buf))
    try:
        fdt = libfdt.Fdt(buf)
    except libfdt.FdtException as e:
        return {"error": str(e), "checkFull": check_full}
    nodes = []
    def walk(off, path):
        props = []
        p = fdt.first_property_offset(off, Q)
        while p >= 0:
            prop = fdt.get_property_by_offset(p)
            props.append([prop.name, bytes(prop).hex()])
            p = fdt.next_property_offset(p, Q)
        nodes.append({"path": path, "props": props})
        c = fdt.first_subnode(off, Q)
        while c >= 0:
            walk(c, ("" if path == "/" else path) + "/" + fdt.get_name(c))
            c = fdt.next_subnode(c, Q)
    walk(0, "/")
    rsv = []
    for k in range(fdt.num_mem_rsv()):
        addr, size = fdt.get_mem_rsv(k)
        rsv.append([hex(addr), hex(size)])
    return {"checkFull": check_full, "version": fdt.version(), "lastCompVersion": fdt.last_comp_version(),
            "bootCpuid": fdt.boot_cpuid_phys(), "totalSize": fdt.totalsize(), "nodes": nodes, "reservations": rsv}

def build(tree):
    sw = libfdt.FdtSw()
    for addr, size in tree["reservations"]:
        sw.add_reservemap_entry(int(addr, 16), int(size, 16))
    sw.finish_reservemap()
    def emit(node):
        sw.begin_node(node["name"])
        for name, value in node["props"]:
            sw.property(name, bytes.fromhex(value))
        for child in node["children"]:
            emit(child)
        sw.end_node()
    emit(tree["root"])
    buf = sw.as_fdt().as_bytearray()
    libfdt.fdt_set_boot_cpuid_phys(buf, tree["bootCpuid"])
    return buf.hex()

job = json.load(sys.stdin)
if job["op"] == "dump":
    out = [dump(open(f, "rb").read()) for f in job["files"]]
else:
    out = [build(t) for t in job["trees"]]
json.dump(out, sys.stdout)
`;

function runLibfdt(job: unknown): unknown {
  const r = spawnSync(SYSTEM_PYTHON, ["-c", LIBFDT_SCRIPT], {
    input: JSON.stringify(job),
    encoding: "utf8",
    maxBuffer: 1 << 28,
  });
  if (r.status !== 0) throw new Error(`libfdt script failed (${r.status}): ${r.error?.message ?? r.stderr}`);
  return JSON.parse(r.stdout);
}

/** What libfdt reads from one blob. */
export interface LibfdtDump extends Partial<FlatFdt> {
  /** `fdt_check_full()` result: 0 when libfdt finds the whole blob sound. */
  checkFull: number;
  /** Set when `fdt_check_header()` rejected the blob. */
  error?: string;
  version?: number;
  lastCompVersion?: number;
  bootCpuid?: number;
  totalSize?: number;
}

/** Reads each blob with libfdt (one Python process for the batch). */
export function libfdtDump(blobs: readonly Uint8Array[]): LibfdtDump[] {
  return withTempDir((dir) => {
    const files = blobs.map((b, i) => {
      const f = join(dir, `${i}.dtb`);
      writeFileSync(f, b);
      return f;
    });
    return runLibfdt({ op: "dump", files }) as LibfdtDump[];
  });
}

/**
 * Builds each tree with libfdt's sequential-write API (`FdtSw`, then `fdt_finish`), returning the
 * whole libfdt buffer, which is usually longer than the blob's totalsize.
 */
export function libfdtBuild(trees: readonly FdtTree[]): Uint8Array[] {
  const toJson = (n: FdtNode): unknown => ({
    name: n.name,
    props: [...n.props].map(([k, v]) => [k, hexBytes(v)]),
    children: n.children.map(toJson),
  });
  const job = {
    op: "build",
    trees: trees.map((t) => ({
      root: toJson(t.root),
      reservations: t.reservations.map((r) => [hex64(r.address), hex64(r.size)]),
      bootCpuid: t.bootCpuid,
    })),
  };
  return (runLibfdt(job) as string[]).map((h) => new Uint8Array(Buffer.from(h, "hex")));
}
