// `oasft train`: supervised fine-tuning as OA's trainer_sft.py does it.
//   data (the config's mix, OA format, masks, a fresh random window per epoch) → micro-batches (padded
//   or packed) → forward/backward (bf16 autocast, or fp16 with loss scaling; optional gradient
//   checkpointing) accumulated over gradient_accumulation_steps → clip → AdamW → schedule
// with evaluation per dataset, atomic checkpoints, exact resume, a JSONL log and a chart.
// The same run trains a reward model or DPO (stage: rm | dpo) on ranked replies: the config's stage is
// a plug-in (train/objective.ts's Stage; src/pref registers rm and dpo) whose data setupData reads and
// whose objective the loop runs; neither branches on a stage.
// The run is built in named phases (setupRun → setupData → setupModel → the stage's objective → setupOptimizer
// → setupSchedule) into one RunContext, then trainLoop (loop.ts) and finish.
import { join } from "node:path";
import * as torch from "../torch/index.js";
import { saveAdapter, saveCausalLM, type CausalLM, type LoraConfig } from "../models/index.js";
import { CONFIG_KEYS, ConfigError, type SFTConfig } from "../sft/config.js";
import { loadConfigTokenizer } from "../sft/data.js";
import type { ChatTokenizer } from "../tokenizer/index.js";
import { writeFileAtomic } from "../util/atomic-file.js";
import { distEnv } from "../parallel/env.js";
import { type ProcessGroup } from "../parallel/group.js";
import { DynamicLossScaler } from "./loss-scaler.js";
import { trainLoop, type RunContext, type RunSetup } from "./loop.js";
import { stageOf, stages, type Objective } from "./objective.js";
import { broadcastParameters, makeOptimizer, paramGroups, startingModel } from "./model-setup.js";
import { readLogUpTo, resumeFrom, takeOver } from "./run-dir.js";
import { joinJob, rankMemory, setThreads } from "./job.js";
import { JsonlLog, ProgressBar, writeChart, type LogRecord } from "./report.js";
import type { ScheduleOptions } from "./schedule.js";
import { resolveTrainSettings } from "./settings.js";
import { checkpointDirs, loadCheckpointState, type TrainerState } from "./state.js";
import type { TrainOptimizer } from "./zero.js";

export { epochBatches, packingRowLength } from "./batches.js";
export { evaluate } from "./evaluate.js";
export { paramGroups } from "./model-setup.js";

export interface TrainOptions {
  /** Where progress and notes go (default stderr). */
  print?: (line: string) => void;
  /** Set by a SIGINT/SIGTERM handler: the loop saves a checkpoint after the current step and stops. */
  stopRequested?: () => boolean;
  /** Test seam: called in the middle of each checkpoint save, once the model files are written. */
  onCheckpointMidway?: (tmpDir: string) => void;
  /** Show the progress bar (default true). */
  progress?: boolean;
}

export interface TrainSummary {
  outputDir: string;
  steps: number;
  interrupted: boolean;
  finalLoss: number;
  evalLoss?: number;
  trainedTokens: number;
  tokensPerS: number;
  elapsedS: number;
  lastCheckpoint?: string;
}

// ----- the phases ------------------------------------------------------------------------------------

/** Settings, ZeRO stage, where the run writes (a new run takes output_dir over, or refuses), the seed. */
function setupRun(
  cfg: SFTConfig,
  o: TrainOptions,
  device: string,
  processGroup: ProcessGroup,
  distributed: boolean,
): RunSetup {
  const lead = processGroup.rank === 0;
  // Only rank 0 talks; the others' errors still surface (thrown), and the launcher names their rank.
  const print = lead ? (o.print ?? ((l: string) => process.stderr.write(`${l}\n`))) : () => {};
  checkStageKeys(cfg);
  const settings = resolveTrainSettings(cfg, device, distributed);
  for (const n of settings.notes) print(`note: ${n}`);
  const stage = distributed ? settings.zeroStage : 0;
  if (stage === 3 && cfg.peft_model)
    throw new ConfigError("zero_stage 3 with peft_model: LoRA's frozen base is not sharded; use zero_stage 0, 1 or 2");
  const checkpointing = cfg.gradient_checkpointing || stage === 3;
  if (stage === 3 && !cfg.gradient_checkpointing) {
    print(
      "note: ZeRO-3 gathers each block's parameters for its forward and again for its recomputation in backward, " +
        "so gradient checkpointing is on",
    );
  }
  const outputDir = cfg.output_dir;
  const resumeDir = resumeFrom(cfg.resume_from_checkpoint, outputDir, print);
  if (!resumeDir && lead) takeOver(outputDir, cfg.overwrite_output_dir, print);
  torch.manualSeed(cfg.rng_seed % 2 ** 31);
  return {
    cfg,
    device,
    processGroup,
    lead,
    world: processGroup.worldSize,
    print,
    settings,
    stage,
    checkpointing,
    outputDir,
    resumeDir,
    ...(o.onCheckpointMidway ? { onCheckpointMidway: o.onCheckpointMidway } : {}),
    ...(o.stopRequested ? { stopRequested: o.stopRequested } : {}),
  };
}

/** The tokenizer (the checkpoint's on resume) and the stage's data, read before any model loads. */
async function setupData(run: RunSetup): Promise<{ tokenizer: ChatTokenizer; data: unknown }> {
  const { cfg, resumeDir } = run;
  const tokenizer = resumeDir ? loadConfigTokenizer({ ...cfg, tokenizer_name: resumeDir }) : loadConfigTokenizer(cfg);
  return { tokenizer, data: await stageOf(cfg.stage).prepare(run, tokenizer) };
}

/** Keys of another stage set away from their defaults: an error naming the key and its stage. */
function checkStageKeys(cfg: SFTConfig): void {
  for (const name of stages.names()) {
    if (name === cfg.stage) continue;
    for (const key of stages.get(name).keys ?? []) {
      const value = cfg[key as keyof SFTConfig];
      if (value !== CONFIG_KEYS[key as keyof typeof CONFIG_KEYS].default) {
        throw new ConfigError(`${key} is for stage ${name} (stage is ${cfg.stage})`);
      }
    }
  }
}

/** The model in train mode (LoRA where configured), rank 0's weights on every rank. */
function setupModel(run: RunSetup, tokenizer: ChatTokenizer): { model: CausalLM; lora: LoraConfig | undefined } {
  const scoreHead = stageOf(run.cfg.stage).scoreHead ?? false;
  const start = startingModel(run.cfg, tokenizer, { device: run.device, scoreHead }, run.resumeDir, run.print);
  const model = start.model.train();
  broadcastParameters(model, run.processGroup);
  if (run.settings.precision === "fp16" && model.fp16Advice) run.print(`note: fp16: ${model.fp16Advice}`);
  return { model, lora: start.lora };
}

/** AdamW's groups, the (ZeRO) optimizer, the fp16 loss scaler, and the state a resume continues from. */
function setupOptimizer(run: RunSetup, model: CausalLM) {
  const { names, groups } = paramGroups(model, run.settings.weightDecay);
  const optimizer = makeOptimizer(model, names, groups, run.settings, run.processGroup, run.stage, run.checkpointing);
  const scaler = run.settings.lossScaling ? new DynamicLossScaler(run.settings.lossScaling) : undefined;
  let state: TrainerState = { globalStep: 0, epoch: 0, microBatch: 0, trainedTokens: 0, tokens: 0, elapsedS: 0 };
  if (run.resumeDir) {
    const loaded = loadCheckpointState(run.resumeDir, (dir) => optimizer.loadState(dir));
    state = loaded.state;
    if (state.lossScaler && scaler) scaler.load(state.lossScaler);
    run.print(
      `resumed from ${run.resumeDir} at step ${state.globalStep} (epoch ${state.epoch}, micro-batch ` +
        `${state.microBatch})`,
    );
  }
  return { names, optimizer, scaler, state };
}

/**
 * The batch plan and schedule: a step takes gradient_accumulation_steps micro-batches per rank, `world`
 * ranks at a time, from the one deterministic order, so the global batch, and so the losses, do not
 * depend on how it is split.
 */
function setupSchedule(run: RunSetup, objective: Objective, state: TrainerState, numParameters: number) {
  const { cfg, settings, world } = run;
  const perStep = settings.gradAccumulation * world;
  const batches = objective.batches(state.epoch);
  const firstEpoch = state.epoch === 0 ? batches : objective.batches(0);
  const stepsPerEpoch = Math.ceil(firstEpoch.length / perStep);
  const totalSteps = cfg.max_steps ?? Math.ceil(cfg.num_train_epochs * stepsPerEpoch);
  const schedule: ScheduleOptions = {
    ...settings.schedule,
    peakLr: settings.lr,
    totalSteps: settings.schedule.totalSteps ?? totalSteps,
  };
  run.print(
    `train (${objective.stage}): ${objective.describe()}, ${batches.length} micro-batches of ` +
      `${settings.microBatchSize} ${objective.rows ?? "rows"} per epoch, ` +
      `${totalSteps} optimizer steps ` +
      `(accumulation ${settings.gradAccumulation}${world > 1 ? ` × ${world} ranks, ZeRO stage ${run.stage}` : ""}), ` +
      `${settings.precision} on ${run.device}, ${(numParameters / 1e6).toFixed(2)}M parameters`,
  );
  return { batches, perStep, totalSteps, schedule };
}

/** The JSONL log (a resumed run keeps its records up to the checkpoint) and the progress bar. */
function setupReport(run: RunSetup, o: TrainOptions, state: TrainerState, totalSteps: number): RunContext["report"] {
  const log = new JsonlLog(join(run.outputDir, "log.jsonl"));
  const records: LogRecord[] = run.lead ? readLogUpTo(log.path, state.globalStep, run.print) : [];
  if (run.lead)
    writeFileAtomic(
      log.path,
      records.map((r) => JSON.stringify(r) + "\n"),
    );
  return {
    records,
    write: (rec: LogRecord) => {
      records.push(rec);
      if (run.lead) log.write(rec);
    },
    bar: o.progress === false || !run.lead ? undefined : new ProgressBar(totalSteps),
    t0: performance.now() - state.elapsedS * 1000,
    window: { loss: 0, steps: 0, tokens: 0, trained: 0, t: performance.now(), metrics: {} },
  };
}

async function trainOnGroup(
  cfg: SFTConfig,
  o: TrainOptions,
  device: string,
  processGroup: ProcessGroup,
  distributed: boolean,
): Promise<TrainSummary> {
  const run = setupRun(cfg, o, device, processGroup, distributed);
  const { tokenizer, data } = await setupData(run);
  const { model, lora } = setupModel(run, tokenizer);
  let optimizer: TrainOptimizer | undefined;
  // Autocast would keep a bf16/fp16 copy of every weight it casts until the micro-batch ends, which
  // undoes ZeRO-3's freeing of each block's parameters: casts are made afresh at each use instead.
  const autocastCache = run.stage === 3 ? torch.setAutocastCacheEnabled(false) : undefined;
  try {
    // Before the optimizer: ZeRO-3 has not sharded the parameters yet, so every rank scores with the whole model.
    const objective = stageOf(run.cfg.stage).objective(run, data, model);
    const opt = setupOptimizer(run, model);
    optimizer = opt.optimizer;
    const plan = setupSchedule(run, objective, opt.state, model.numParameters());
    const ctx: RunContext = {
      ...run,
      tokenizer,
      objective,
      model,
      lora,
      ...opt,
      ...plan,
      report: setupReport(run, o, opt.state, plan.totalSteps),
      result: { lastLoss: NaN, interrupted: false },
    };
    await trainLoop(ctx);
    return finish(ctx);
  } finally {
    if (autocastCache !== undefined) torch.setAutocastCacheEnabled(autocastCache);
    optimizer?.dispose();
    model.dispose();
  }
}

/** The final model (or adapter) and tokenizer, the chart and summary.json; every rank waits for them. */
function finish(ctx: RunContext): TrainSummary {
  const { state, result, outputDir, lead, optimizer, scaler } = ctx;
  state.elapsedS = (performance.now() - ctx.report.t0) / 1000;
  const held = rankMemory(optimizer, ctx.processGroup);
  if (!result.interrupted) {
    // A LoRA run's result is its adapter (PEFT's files); `oasft merge` makes a plain model of it.
    optimizer.withFullParams(() => {
      if (!lead) return;
      if (ctx.lora) saveAdapter(ctx.model, ctx.lora, outputDir, ctx.cfg.model_name);
      else if (ctx.objective.saveModel) ctx.objective.saveModel(ctx.model, outputDir);
      else saveCausalLM(ctx.model, outputDir);
      ctx.tokenizer.save(outputDir);
    });
  }
  const lastCheckpoint = result.lastCheckpoint ?? checkpointDirs(outputDir).at(-1)?.dir;
  const summary: TrainSummary = {
    outputDir,
    steps: state.globalStep,
    interrupted: result.interrupted,
    finalLoss: result.lastLoss,
    ...(result.lastEval !== undefined ? { evalLoss: result.lastEval } : {}),
    trainedTokens: state.trainedTokens,
    tokensPerS: state.tokens / Math.max(1e-9, state.elapsedS),
    elapsedS: state.elapsedS,
    ...(lastCheckpoint ? { lastCheckpoint } : {}),
  };
  if (lead) {
    writeChart(join(outputDir, "training.svg"), ctx.report.records, ctx.cfg.log_dir);
    const { settings } = ctx;
    const extra = {
      best_eval: state.bestEval ?? null,
      settings: { ...settings, notes: undefined },
      notes: settings.notes,
      world_size: ctx.world,
      zero_stage: ctx.stage,
      ranks: held,
      ...(scaler ? { fp16_skipped_steps: scaler.skippedSteps } : {}),
    };
    if (scaler?.skippedSteps)
      ctx.print(`note: fp16: ${scaler.skippedSteps} of ${state.globalStep} steps overflowed and were skipped`);
    writeFileAtomic(join(outputDir, "summary.json"), [JSON.stringify({ ...summary, ...extra }, null, 2) + "\n"]);
  }
  ctx.processGroup.barrier(); // the final model is on disk before any rank reports success
  return summary;
}

export async function train(cfg: SFTConfig, o: TrainOptions = {}): Promise<TrainSummary> {
  const env = distEnv();
  let device = torch.resolveDevice(cfg.device, "device");
  // Under a launcher, rank r of a machine takes that machine's GPU r unless the config names one.
  if (env && device === "cuda") device = `cuda:${env.localRank}`;
  setThreads(cfg, env);
  const processGroup = joinJob(env, cfg, device);
  try {
    return await trainOnGroup(cfg, o, device, processGroup, env !== null);
  } finally {
    processGroup.destroy();
  }
}
