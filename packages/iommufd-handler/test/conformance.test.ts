// The core's handler conformance kit run against "iommufd-v1" (restore behaviour) and its IOMMU
// FLB: preserve/unpreserve, double preservation, neighbour freeze failures, kexec, retrieve twice,
// sticky failures, finish with and without retrieve, veto, re-preserve, FLB reference counts and
// leak checks against a fresh boot. The files are iommufds with i + 1 IOASes and no marked HWPT
// (a HWPT needs its memfd preserved first in the same session, which the kit does not do); the
// HWPT paths are covered by liveupdate.test.ts. No `corrupt` hook: the kit's "failed retrieve is
// sticky and finish still releases the file" expects FINISH to succeed, but a failed iommufd
// retrieve must keep vetoing FINISH (its domains may still translate for preserved devices, as
// the kernel's can_finish requires a retrieved file); liveupdate.test.ts checks that instead.
import { expect } from "vitest";
import { describeHandlerConformance } from "@luo/core/testing/conformance";
import { memfd } from "@luo/memfd-handler";
import {
  IOMMUFD_LUO_COMPATIBLE,
  ioasAlloc,
  iommuLiveUpdateFlb,
  iommufd,
  iommufdFile,
  iommufdOpen,
  type Ioas,
} from "@luo/iommufd-handler";

describeHandlerConformance<number>(() => ({
  compatible: IOMMUFD_LUO_COMPATIBLE,
  plugins: [memfd(), iommufd()],
  flbs: [iommuLiveUpdateFlb],
  async create(proc, i) {
    const fd = await iommufdOpen(proc);
    for (let k = 0; k <= i; k++) ioasAlloc(proc, fd);
    return { fd, expected: i };
  },
  verify(proc, fd, { expected }) {
    const ictx = iommufdFile(proc, fd);
    if (ictx.incoming) {
      // The copy retrieved after a live update: a fresh context with nothing to restore.
      expect(ictx.incoming.entries).toEqual([]);
      expect(ictx.objects()).toEqual([]);
    } else {
      expect(ictx.objects().filter((o): o is Ioas => "areas" in o).length).toBe(expected! + 1);
    }
  },
}));
