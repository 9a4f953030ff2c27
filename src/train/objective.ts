// What a run optimises, as a plug-in of the loop: the epoch's micro-batches, the units a micro-batch's
// loss is a mean over (its accumulation weight), the forward and backward of one micro-batch, and the
// evaluation. SFT is the language-model loss on trained tokens; the preference stages (src/pref) bring
// their own data and losses through the same seam, so the loop has no branch per stage.
import type { CausalLM, TrainStepOptions } from "../models/index.js";
import type { Settings } from "../sft/config.js";
import type { Batch } from "../sft/collate.js";
import type { SftData } from "../sft/data.js";
import type { ProcessGroup } from "../parallel/group.js";
import { epochBatches, tensorsOf, trainedIn } from "./batches.js";
import { evaluate } from "./evaluate.js";
import type { EvalRecord } from "./report.js";
import type { TrainSettings } from "./settings.js";

export interface MicroBatchResult {
  /** The micro-batch's loss (a mean over its units). */
  loss: number;
  /** Means over its units of the objective's metrics. */
  metrics?: Record<string, number>;
}

export interface EvalEnv {
  model: CausalLM;
  precision: TrainSettings["precision"];
  device: string;
  group: ProcessGroup;
}

export interface Objective {
  readonly stage: "sft" | "rm" | "dpo";
  /** The micro-batches of one epoch, deterministic for (seed, epoch). */
  batches(epoch: number): Batch[];
  /** What the micro-batch's loss averages over (trained tokens; pairs; groups): its share of the step. */
  units(b: Batch): number;
  /** Forward and backward of one micro-batch (gradients scaled by options.gradScale). */
  step(model: CausalLM, b: Batch, options: TrainStepOptions): MicroBatchResult;
  evaluate(env: EvalEnv): EvalRecord["datasets"];
  /** Training units and what they are, for the run's first line ("1,200 samples from 2 dataset(s)"). */
  describe(): string;
}

/** Supervised fine-tuning: the causal-LM loss on the trained (assistant) tokens. */
export function sftObjective(
  data: SftData,
  cfg: Settings<"format" | "data" | "run">,
  microBatchSize: number,
  device: string,
): Objective {
  return {
    stage: "sft",
    batches: (epoch) => epochBatches(data, cfg, microBatchSize, epoch),
    units: trainedIn,
    step: (model, b, options) => model.trainStep(tensorsOf(b, device), options),
    evaluate: (env) => evaluate(env.model, data, cfg, env.precision, env.device, env.group),
    describe: () => {
      const n = data.datasets.reduce((k, d) => k + d.train.length, 0);
      return `${n} samples from ${data.datasets.length} dataset(s)`;
    },
  };
}
