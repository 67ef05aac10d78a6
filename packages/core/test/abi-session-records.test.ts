// Session records written at creation: random create/close sequences (closes anywhere in the
// list, across block boundaries) against a model list. After every seal the chain in preserved
// memory holds exactly the live sessions, in creation order, with no holes and no empty block;
// holes never hold more than half of the used slots plus one block; unseal restores the bytes.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Kho, Machine, PAGE_SIZE, SESSION_BLOCKS, SESSION_SER } from "@luo/core";
import { SessionRecords, readFixedString, type SessionSlot } from "@luo/core/internal";

const BLOCK_BYTES = SESSION_BLOCKS.pages * PAGE_SIZE;

/** Walks the chain from `head` the way the next kernel does: names, file counts, block count. */
function readBack(machine: Machine, head: bigint): { names: string[]; blocks: number; files: bigint[] } {
  const names: string[] = [];
  const files: bigint[] = [];
  let blocks = 0;
  for (let b = head; b !== 0n; blocks++) {
    const dv = new DataView(machine.read(b, BLOCK_BYTES).buffer);
    const bytes = new Uint8Array(dv.buffer);
    const count = Number(dv.getBigUint64(8, true));
    expect(count).toBeGreaterThan(0);
    for (let j = 0; j < count; j++) {
      const off = 16 + j * SESSION_SER.size;
      names.push(readFixedString(bytes, off + SESSION_SER.name, 64) ?? expect.fail(`record ${j}: no NUL`));
      files.push(dv.getBigUint64(off + SESSION_SER.nfiles, true));
    }
    b = dv.getBigUint64(0, true);
  }
  return { names, blocks, files };
}

type Op = { kind: "add"; n: number } | { kind: "close"; at: number; n: number } | { kind: "seal" };

const ops = fc.array(
  fc.oneof(
    {
      arbitrary: fc.record({ kind: fc.constant("add" as const), n: fc.integer({ min: 1, max: 900 }) }),
      weight: 3,
    },
    {
      arbitrary: fc.record({
        kind: fc.constant("close" as const),
        at: fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }),
        n: fc.integer({ min: 1, max: 900 }),
      }),
      weight: 3,
    },
    { arbitrary: fc.record({ kind: fc.constant("seal" as const) }), weight: 1 },
  ),
  { maxLength: 12 },
);

describe("session records", () => {
  it("keep the live sessions in creation order through closes anywhere (property)", () => {
    fc.assert(
      fc.property(ops, (script: Op[]) => {
        const machine = new Machine({ memory: "64 MiB" });
        const kho = new Kho(machine);
        const baseline = machine.stats().preservedPages;
        const records = new SessionRecords(kho);
        const live: { name: string; slot: SessionSlot }[] = [];
        let next = 0;
        const check = () => {
          const withFiles = live.filter((_, i) => i % 7 === 0);
          const fields = withFiles.map((s, i) => ({ slot: s.slot, filesHead: 0x1000n, fileCount: i + 1 }));
          records.seal(fields);
          const back = readBack(machine, records.head);
          expect(back.names).toEqual(live.map((s) => s.name));
          expect(back.blocks).toBe(Math.ceil(live.length / SESSION_BLOCKS.perBlock));
          expect(back.files.filter((f) => f !== 0n)).toHaveLength(withFiles.length);
          records.unseal(fields);
          for (let b = records.head; b !== 0n;) {
            const dv = new DataView(machine.read(b, BLOCK_BYTES).buffer);
            expect(dv.getBigUint64(8, true)).toBe(0n); // counts cleared
            for (let j = 0; j < SESSION_BLOCKS.perBlock; j++) {
              expect(dv.getBigUint64(16 + j * SESSION_SER.size + SESSION_SER.nfiles, true)).toBe(0n);
            }
            b = dv.getBigUint64(0, true);
          }
        };
        for (const op of script) {
          if (op.kind === "add") {
            for (let i = 0; i < op.n; i++) {
              const name = `s-${next++}`;
              live.push({ name, slot: records.add(name) });
            }
          } else if (op.kind === "close") {
            const start = Math.floor(op.at * live.length);
            for (const s of live.splice(start, op.n)) records.remove(s.slot);
          } else {
            check();
          }
          const perBlock = SESSION_BLOCKS.perBlock;
          expect(records.blocks).toBeLessThanOrEqual(Math.ceil((2 * live.length + 1) / perBlock) + 1);
        }
        check();
        records.destroy();
        expect(machine.stats().preservedPages).toBe(baseline);
      }),
      { numRuns: 60 },
    );
  });
});
