/**
 * The luod demo: a host under luod through one live update. Boots a machine with memfd, starts
 * luod, starts `n` VMM processes that each get a session from luod and preserve a guest-RAM
 * memfd, shows `luoctl status`, runs `luoctl update`, starts the next luod, lets every VMM
 * reconnect, check its RAM and finish, and shows `luoctl status` again.
 *
 * @module
 */
import { Machine } from "@luo/core";
import { memfd, memfdCreate } from "@luo/memfd-handler";
import { connectLuod } from "./client.js";
import { startLuod } from "./luod.js";
import { luoctl } from "./luoctl.js";

/** Guest RAM of VMM `i`: 64 KiB with a pattern of its own. */
function guestRam(i: number): Uint8Array {
  return Uint8Array.from({ length: 64 * 1024 }, (_, j) => (j * 13 + i * 101) & 0xff);
}

/** Runs the demo with `vmms` VMMs, printing as it goes; 0 when every check passed, else 1. */
export async function runLuodDemo(vmms: number, print: (line: string) => void): Promise<number> {
  const k1 = await new Machine({ memory: "128 MiB" }).boot({ plugins: [memfd()] });
  const luod = await startLuod(k1);
  for (let i = 0; i < vmms; i++) {
    const p = k1.spawn(`vmm-${i}`);
    const c = await connectLuod(p, { name: `vmm-${i}`, onPrepare: () => print(`vmm-${i}: prepared`) });
    const s = await c.createSession(`vm-${i}`);
    const ram = memfdCreate(p, `guest-ram-${i}`);
    p.pwrite(ram, guestRam(i), 0);
    await s.preserveFd(ram, 1n);
  }
  print("$ luoctl status");
  print((await luoctl(k1.spawn("luoctl"), ["status"])).output);
  print("$ luoctl update");
  const update = await luoctl(k1.spawn("luoctl"), ["update"]);
  print(update.output);
  if (update.status !== 0) return 1;
  const k2 = (await luod.next)!;
  const luod2 = await startLuod(k2);
  let ok = true;
  for (let i = 0; i < vmms; i++) {
    const p = k2.spawn(`vmm-${i}`);
    const c = await connectLuod(p, { name: `vmm-${i}` });
    const s = await c.retrieveSession(`vm-${i}`);
    const ram = await s.retrieveFd(1n);
    const same = Buffer.from(p.pread(ram, 64 * 1024, 0)).equals(Buffer.from(guestRam(i)));
    ok &&= same;
    await c.finishSession(s);
    print(`vmm-${i}: got vm-${i} back, guest RAM ${same ? "intact" : "CORRUPT"}, finished`);
  }
  print("$ luoctl status");
  print((await luoctl(k2.spawn("luoctl"), ["status"])).output);
  const own = (await luod2.status()).ownSession;
  return ok && own === "finished" ? 0 : 1;
}
