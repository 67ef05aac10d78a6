/**
 * What the conformance harness observes with: the neighbour handler (the test handler's logic
 * under {@link CONFORMANCE_NEIGHBOUR_COMPATIBLE}, claiming only {@link NeighbourFile}s) and the
 * recording wrapper around the subject's handler.
 *
 * The wrapper records every callback (compatible, op, `<session>/<token>`, whether and what it
 * threw, `retrieveStatus` for `canFinish`/`finish`) in the run's log, then delegates to the
 * original callback; a sync callback stays sync, an async one is awaited for the record.
 *
 * @module
 */
import type { KernelFile } from "../../kernel/index.js";
import {
  defineFileHandler,
  type FileHandler,
  type FileHandlerSpec,
  type HandlerContext,
  type RetrieveStatus,
} from "../../liveupdate/index.js";
import { definePlugin, type Plugin } from "../../plugin/index.js";
import type { TestControl } from "../test-control.js";
import { TestFile, createTestHandler } from "../test-handler.js";

export const CONFORMANCE_NEIGHBOUR_COMPATIBLE = "luo-conformance-neighbour-v1";

const NEIGHBOUR_PLUGIN = "luo-conformance-neighbour";

/** The neighbour's file type: a test file only the neighbour handler claims. */
export class NeighbourFile extends TestFile {
  override get description(): string {
    return `conformance-neighbour:${this.label}`;
  }
}

/** The neighbour plugin: the test handler's callbacks under another compatible and file type. */
export function neighbourPlugin(control: TestControl): Plugin {
  const base = createTestHandler(control);
  const handler = defineFileHandler<TestFile, undefined>({
    ...base,
    compatible: CONFORMANCE_NEIGHBOUR_COMPATIBLE,
    canPreserve: (file) => file instanceof NeighbourFile,
  });
  return definePlugin({ name: NEIGHBOUR_PLUGIN, register: (ctx) => ctx.registerFileHandler(handler) });
}

/** One observed handler callback or FLB event. */
export interface Call {
  /** Handler or FLB compatible. */
  readonly compatible: string;
  /** Callback name, or the FLB event name (`flb:preserved`, …). */
  readonly op: string;
  /** `<session>/<token>` for file callbacks, `""` for FLB events. */
  readonly at: string;
  /** False when the callback threw (or `canFinish` vetoed). */
  ok: boolean;
  /** `retrieveStatus` seen by `canFinish` and `finish`. */
  readonly retrieveStatus?: RetrieveStatus;
  /** What the callback threw, if it threw. */
  error?: unknown;
}

const OBSERVED_OPS = [
  "preserve",
  "unpreserve",
  "freeze",
  "unfreeze",
  "retrieve",
  "canFinish",
  "finish",
] as const;
export type ObservedOp = (typeof OBSERVED_OPS)[number];
/** Callbacks whose failure the core can only report as a warning: they must not throw. */
export const MUST_NOT_FAIL: readonly ObservedOp[] = ["unpreserve", "unfreeze", "finish"];
export type FlbEvent = "flb:preserved" | "flb:unpreserved" | "flb:retrieved" | "flb:finished";

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return (
    (typeof v === "object" || typeof v === "function") &&
    v !== null &&
    typeof (v as { then?: unknown }).then === "function"
  );
}

/** A handler that records every callback in `log` and delegates to `h`. */
export function observeHandler(h: FileHandler, log: Call[]): FileHandler {
  const spec: Record<string, unknown> = {
    compatible: h.compatible,
    canPreserve: (file: KernelFile) => h.canPreserve(file),
  };
  if (typeof h.getId === "function") spec.getId = (file: KernelFile) => h.getId!(file);
  for (const op of OBSERVED_OPS) {
    const fn = h[op] as ((args: HandlerContext) => unknown) | undefined;
    if (typeof fn !== "function") continue;
    spec[op] = (args: HandlerContext & { readonly retrieveStatus?: RetrieveStatus }) => {
      const call: Call = {
        compatible: h.compatible,
        op,
        at: `${args.session.sessionName}/${args.token}`,
        ok: true,
        ...(op === "canFinish" || op === "finish" ? { retrieveStatus: args.retrieveStatus } : {}),
      };
      log.push(call);
      const settle = (r: unknown): unknown => {
        if (op === "canFinish" && r === false) call.ok = false;
        return r;
      };
      try {
        const r = fn.call(h, args);
        if (!isThenable(r)) return settle(r);
        return Promise.resolve(r).then(settle, (e: unknown) => {
          call.ok = false;
          call.error = e;
          throw e;
        });
      } catch (e) {
        call.ok = false;
        call.error = e;
        throw e;
      }
    };
  }
  return defineFileHandler(spec as unknown as FileHandlerSpec);
}
