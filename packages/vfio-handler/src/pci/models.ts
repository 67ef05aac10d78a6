/**
 * The hardware models a topology description may name, and how each is built: `"root-port"`,
 * `"bridge"` (a switch port) and `"dma-engine"`. Unknown models are `EINVAL`.
 *
 * @module
 */
import { LiveUpdateError } from "@luo/core";
import { PciBridge, type PciNodeDesc } from "./bridge.js";
import { DmaEngine, type DmaEngineDesc } from "./dma-engine.js";
import type { PciFunction } from "./function.js";

/** Names of the models {@link createPciFunction} builds. */
export const PCI_MODELS = ["root-port", "bridge", "dma-engine"] as const;

/** Builds the hardware of one description node. `EINVAL` for an unknown model. */
export function createPciFunction(node: PciNodeDesc, where: string): PciFunction {
  switch (node.model) {
    case "root-port":
      return new PciBridge(node, true);
    case "bridge":
      return new PciBridge(node, false);
    case "dma-engine":
      return new DmaEngine(node as DmaEngineDesc);
    default:
      throw new LiveUpdateError(
        "EINVAL",
        `${where}: unknown PCI model ${JSON.stringify(node.model)} (known: ${PCI_MODELS.join(", ")})`,
      );
  }
}
