// What a run optimises, as a plug-in of the loop: the epoch's micro-batches, the units a micro-batch's
// loss is a mean over (its accumulation weight), the forward and backward of one micro-batch, and the
// evaluation. A stage (the config's `stage`) brings its data and its objective: SFT, registered here,
// is the language-model loss on trained tokens; the preference stages register themselves from
// src/pref (as model families do from src/models), so neither the trainer nor the loop branches on
// a stage, and train/ imports nothing of pref/.
import type { CausalLM, TrainStepOptions } from "../models/index.js";
import { ConfigError, type Settings } from "../sft/config.js";
import type { Batch } from "../sft/collate.js";
import { lintMessage, prepareSftData, type SftData } from "../sft/data.js";
import type { ChatTokenizer } from "../tokenizer/index.js";
import { Registry } from "../util/registry.js";
import type { RunSetup } from "./loop.js";
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
  processGroup: ProcessGroup;
}

export interface Objective {
  readonly stage: string;
  /** The micro-batches of one epoch, deterministic for (seed, epoch). */
  batches(epoch: number): Batch[];
  /** What the micro-batch's loss averages over (trained tokens; pairs; groups): its share of the step. */
  units(b: Batch): number;
  /** Forward and backward of one micro-batch (gradients scaled by options.gradScale). */
  step(model: CausalLM, b: Batch, options: TrainStepOptions): MicroBatchResult;
  evaluate(env: EvalEnv): EvalRecord["datasets"];
  /** Training units and what they are, for the run's first line ("1,200 samples from 2 dataset(s)"). */
  describe(): string;
  /** What a micro-batch's rows are, for that line (default "rows"; packed SFT: "packed rows"). */
  readonly rows?: string;
  /** Saves the trained model into `dir` (default: the causal LM in HF's layout). */
  saveModel?(model: CausalLM, dir: string): void;
}

/** A training stage: its data, read before any model loads, and its objective over that data. */
export interface Stage<D = unknown> {
  prepare(run: RunSetup, tokenizer: ChatTokenizer): Promise<D>;
  /** The objective for the model as it starts (a stage may score that model first: DPO's reference). */
  objective(run: RunSetup, data: D, model: CausalLM): Objective;
  /** The model carries a scalar head (a reward model): loaded, trained and saved with it. */
  scoreHead?: boolean;
  /** Config keys only this stage reads: set under another stage, they are an error. */
  keys?: string[];
  /** Files the stage writes into output_dir besides checkpoints (they mark a run there). */
  runFiles?: string[];
}

export const stages = new Registry<Stage>("stage");

/** A stage by the config's name (sft is built in; `import "src/pref/index.js"` adds rm and dpo). */
export function stageOf(name: string): Stage {
  if (!stages.has(name)) {
    const known = stages.names().join(", ");
    throw new ConfigError(`stage ${name}: not available (known: ${known}); src/pref/index.js registers rm and dpo`);
  }
  return stages.get(name);
}

/** The files every registered stage may leave in output_dir. */
export const stageRunFiles = () => stages.names().flatMap((n) => stages.get(n).runFiles ?? []);

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
    evaluate: (env) => evaluate(env.model, data, cfg, env.precision, env.device, env.processGroup),
    describe: () => {
      const n = data.datasets.reduce((k, d) => k + d.train.length, 0);
      return `${n} samples from ${data.datasets.length} dataset(s)`;
    },
    ...(cfg.packing ? { rows: "packed rows" } : {}),
  };
}

/** SFT's data: the config's mix in OA's format (or the chat template); lint findings and no samples are errors. */
async function prepareSft(run: RunSetup, tokenizer: ChatTokenizer): Promise<SftData> {
  const data = await prepareSftData(run.cfg, tokenizer);
  if (data.lint.length) throw new ConfigError(lintMessage(data.lint));
  if (!data.datasets.some((d) => d.train.length)) {
    const names = data.datasets.map((d) => `${d.name} (0 train samples)`).join(", ") || "none configured";
    throw new ConfigError(`nothing to train on: ${names}; see \`oasft data stats\` for what each rule dropped`);
  }
  return data;
}

stages.register("sft", {
  prepare: prepareSft,
  objective: (run, data, _model) => sftObjective(data as SftData, run.cfg, run.settings.microBatchSize, run.device),
} satisfies Stage);
