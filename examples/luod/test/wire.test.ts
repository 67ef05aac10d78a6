// The wire pieces on their own: line framing with fds tied to their line and the size limit,
// request validation, and the mapping memfd (sealed at token 0; a bad one is refused and the
// new luod hands nothing back).
import { describe, expect, it } from "vitest";
import { F_GET_SEALS, Machine, isLiveUpdateError } from "@luo/core";
import {
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  memfd,
  memfdCreate,
} from "@luo/memfd-handler";
import { LineReader, checkMapping, parseRequest, preserveMapping, startLuod } from "../src/index.js";

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

describe("LineReader", () => {
  it("splits lines across chunks and ties fds to the line their chunk ends", () => {
    const r = new LineReader(100);
    expect(r.push(enc('{"a":1}\n{"b"'), [])).toEqual([{ text: '{"a":1}', size: 7, fds: [] }]);
    expect(r.push(enc(":2}\n"), [7])).toEqual([{ text: '{"b":2}', size: 7, fds: [7] }]);
    expect(r.push(enc('{"c":'), [8, 9])).toEqual([]); // fds arrived inside a line…
    expect(r.push(enc("3}\n"))).toEqual([{ text: '{"c":3}', size: 7, fds: [8, 9] }]); // …and belong to it
  });

  it("reports an oversized line once, without its text, and goes on", () => {
    const r = new LineReader(8);
    expect(r.push(enc("0123456789"))).toEqual([]);
    expect(r.push(enc("abc\nok\n"))).toEqual([
      { text: undefined, size: 13, fds: [] },
      { text: "ok", size: 2, fds: [] },
    ]);
  });
});

describe("parseRequest", () => {
  it.each([
    ["nope", "EPROTO"],
    ["[]", "EPROTO"],
    ['{"op":"status"}', "EPROTO"],
    ['{"id":1}', "EPROTO"],
    ['{"id":1,"op":"x"}', "EPROTO"],
    ['{"id":1,"op":"hello","version":1,"name":"","role":"vmm"}', "EINVAL"],
    ['{"id":1,"op":"hello","version":1,"name":"a","role":"root"}', "EINVAL"],
    ['{"id":1,"op":"ready"}', "EINVAL"],
    ['{"id":1,"op":"fail","update":1}', "EINVAL"],
    ['{"id":1,"op":"update","barrierTimeoutMs":-1}', "EINVAL"],
    ['{"id":1,"op":"done","name":7}', "EINVAL"],
  ])("%s → %s", (text, code) => {
    let err: unknown;
    try {
      parseRequest(text);
    } catch (e) {
      err = e;
    }
    expect(isLiveUpdateError(err, code as "EPROTO")).toBe(true);
  });

  it("accepts a well-formed request", () => {
    expect(parseRequest('{"id":3,"op":"create-session","name":"vm-0"}')).toEqual({
      id: 3,
      op: "create-session",
      name: "vm-0",
    });
  });
});

describe("the mapping", () => {
  it("is refused when malformed", () => {
    const ok = { version: 1, state: { kexecsCount: 0 }, clients: { a: { sessions: ["x"] } } };
    expect(checkMapping(ok)).toBe(ok);
    for (const bad of [
      null,
      { ...ok, version: 2 },
      { ...ok, state: {} },
      { ...ok, clients: [] },
      { ...ok, clients: { a: { sessions: [1] } } },
      { ...ok, clients: { a: { sessions: ["x"] }, b: { sessions: ["x"] } } },
    ]) {
      expect(() => checkMapping(bad)).toThrow(/EPROTO: luod mapping/);
    }
  });

  it("is a sealed memfd at token 0; a bad one is reported and nothing is handed back", async () => {
    const k1 = await new Machine({ memory: "64 MiB" }).boot({ plugins: [memfd()] });
    const p = k1.spawn("impostor");
    const dev = await p.openLiveUpdate();
    const luodSession = await dev.createSession("luod");
    const fd = memfdCreate(p, "luod-mapping", { allowSealing: true });
    p.pwrite(fd, enc('{"version":2}'), 0);
    await luodSession.preserveFd(fd, 0n);
    const vm = await dev.createSession("vm-0");
    await vm.preserveFd(memfdCreate(p, "ram"), 1n);
    const k2 = await k1.kexec();
    const luod = await startLuod(k2);
    const st = await luod.status();
    expect(st.mappingError).toBe("EPROTO: luod mapping: version 2 is not 1");
    expect(st.ownSession).toBe("finished");
    expect(st.incoming).toEqual([]);
    expect(k2.liveupdate.stats().incomingSessions).toBe(1); // vm-0 stays until the next update
  });

  it("written by luod carries every seal", async () => {
    const k = await new Machine({ memory: "64 MiB" }).boot({ plugins: [memfd()] });
    const p = k.spawn("luod");
    const s = await (await p.openLiveUpdate()).createSession("luod");
    await preserveMapping(p, s, { version: 1, state: { kexecsCount: 0 }, clients: {} });
    const k2 = await k.kexec();
    const q = k2.spawn("luod");
    const s2 = await (await q.openLiveUpdate()).retrieveSession("luod");
    const fd = await s2.retrieveFd(0n);
    expect(q.fcntl(fd, F_GET_SEALS)).toBe(F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
  });
});
