// The training loop over one run context (torchtune's recipe shape, without inheritance): the setup
// phases in trainer.ts build a RunContext; trainLoop runs optimizer steps in nanoGPT's order (micro-batches
// → reduce → unscale/clip or skip → step → schedule), logging, evaluating and saving on their cadences.
// A second objective (a reward model, DPO) brings its own loss and data phase, not branches here.
import * as torch from "../torch/index.js";
import type { CausalLM, LoraConfig } from "../models/index.js";
import type { SFTConfig } from "../sft/config.js";
import type { Batch } from "../sft/collate.js";
import type { ChatTokenizer } from "../tokenizer/index.js";
import type { ProcessGroup } from "../parallel/group.js";
import { trainedIn } from "./batches.js";
import type { DynamicLossScaler } from "./loss-scaler.js";
import type { Objective } from "./objective.js";
import type { LogRecord, ProgressBar, StepRecord } from "./report.js";
import { lrAt, type ScheduleOptions } from "./schedule.js";
import { inPrecision, type TrainSettings } from "./settings.js";
import { checkpointDirs, pruneCheckpoints, saveCheckpoint, type TrainerState } from "./state.js";
import type { TrainOptimizer } from "./zero.js";

/** What the run is: settings, where it writes, which rank this is (setupRun). */
export interface RunSetup {
  cfg: SFTConfig;
  device: string;
  processGroup: ProcessGroup;
  /** Rank 0: the one that prints and writes the log, chart and summary. */
  lead: boolean;
  world: number;
  print: (line: string) => void;
  settings: TrainSettings;
  stage: TrainSettings["zeroStage"];
  checkpointing: boolean;
  outputDir: string;
  resumeDir: string | undefined;
  /** Test seam: called in the middle of each checkpoint save. */
  onCheckpointMidway?: (tmpDir: string) => void;
  stopRequested?: () => boolean;
}

/** Everything the loop reads and advances; built by trainer.ts's setup phases. */
export interface RunContext extends RunSetup {
  tokenizer: ChatTokenizer;
  /** What is optimised (SFT, DPO): its batches, step and evaluation. */
  objective: Objective;
  model: CausalLM;
  lora: LoraConfig | undefined;
  /** Parameter names in optimizer order (checkpoints). */
  names: string[];
  optimizer: TrainOptimizer;
  scaler: DynamicLossScaler | undefined;
  state: TrainerState;
  batches: Batch[];
  /** Micro-batches per optimizer step, over all ranks. */
  perStep: number;
  totalSteps: number;
  schedule: ScheduleOptions;
  report: RunReport;
  result: RunResult;
}

export interface RunReport {
  records: LogRecord[];
  write(rec: LogRecord): void;
  bar: ProgressBar | undefined;
  /** performance.now() at the run's (virtual) start: resumed runs count their earlier time. */
  t0: number;
  window: { loss: number; steps: number; tokens: number; trained: number; t: number; metrics: Record<string, number> };
}

export interface RunResult {
  lastLoss: number;
  lastEval?: number;
  lastCheckpoint?: string;
  interrupted: boolean;
}

/** Optimizer steps until max_steps / the epochs are done or a stop is requested. */
export async function trainLoop(ctx: RunContext): Promise<void> {
  const { state } = ctx;
  while (state.globalStep < ctx.totalSteps) {
    if (state.microBatch >= ctx.batches.length) {
      state.epoch++;
      state.microBatch = 0;
      ctx.batches = ctx.objective.batches(state.epoch);
      continue;
    }
    const chunk = ctx.batches.slice(state.microBatch, state.microBatch + ctx.perStep);
    const step = optimizerStep(ctx, chunk);
    const last = state.globalStep === ctx.totalSteps;
    if (state.globalStep % ctx.cfg.logging_steps === 0 || last) logStep(ctx, step);
    if (state.globalStep % ctx.cfg.eval_steps === 0 || last) evaluateRun(ctx);
    // Let signal handlers (Ctrl-C) run: the step itself is synchronous native work.
    await new Promise((r) => setImmediate(r));
    let stop = ctx.stopRequested?.() ?? false;
    // A signal reaches the ranks at different moments: they stop together, at the same step.
    if (ctx.world > 1) stop = ctx.processGroup.reduceNumbers([stop ? 1 : 0], "max")[0]! > 0;
    const cfg = ctx.cfg;
    if ((cfg.save_strategy === "steps" && state.globalStep % cfg.save_steps === 0) || stop) saveRun(ctx);
    else if (cfg.save_strategy === "epoch" && state.microBatch >= ctx.batches.length) saveRun(ctx);
    if (stop) {
      ctx.result.interrupted = true;
      ctx.report.bar?.message(
        `interrupted: checkpoint saved at step ${state.globalStep}; resume with --resume_from_checkpoint latest`,
      );
      break;
    }
  }
  ctx.report.bar?.done();
}

interface StepOutcome {
  gradNorm: number;
  skipped: boolean;
}

/** One optimizer step over `chunk` (this step's micro-batches of every rank); advances the state. */
function optimizerStep(ctx: RunContext, chunk: Batch[]): StepOutcome {
  const { optimizer, scaler, state, settings } = ctx;
  const trainedTotal = chunk.reduce((n, b) => n + trainedIn(b), 0);
  const unitsPer = chunk.map((b) => (trainedIn(b) ? ctx.objective.units(b) : 0));
  const { loss: stepLoss, metrics } = forwardBackward(ctx, chunk, unitsPer);
  state.microBatch += chunk.length;
  optimizer.reduceGradients();
  let skipped = false;
  let gradNorm: number;
  const failed = (why: string) =>
    new Error(
      `step ${state.globalStep + 1}: ${why}; the weights were not updated. ` +
        `${ctx.result.lastCheckpoint ?? checkpointDirs(ctx.outputDir).at(-1)?.dir ?? "no checkpoint was saved yet"} ` +
        "holds the last good state (try a lower learning_rate, or bf16)",
    );
  if (scaler) {
    optimizer.scaleGrads(1 / scaler.scale);
    gradNorm = optimizer.gradNorm();
    try {
      skipped = scaler.update(!Number.isFinite(gradNorm));
    } catch (err) {
      throw failed((err as Error).message);
    }
    if (!skipped) optimizer.clip(settings.maxGradNorm);
  } else {
    gradNorm = optimizer.clip(settings.maxGradNorm);
    // Without loss scaling nothing skips a bad step: a NaN would silently poison every weight.
    if (!Number.isFinite(stepLoss) || !Number.isFinite(gradNorm))
      throw failed(`the loss is ${stepLoss} and the gradient norm ${gradNorm}`);
  }
  optimizer.lr = lrAt(state.globalStep, ctx.schedule);
  if (!skipped && trainedTotal > 0) optimizer.step();
  optimizer.zeroGrad();
  state.globalStep++;
  const tokens = chunk.reduce((n, b) => n + b.tokens, 0);
  state.tokens += tokens;
  state.trainedTokens += trainedTotal;
  ctx.result.lastLoss = stepLoss;
  const w = ctx.report.window;
  w.loss += stepLoss;
  w.steps++;
  w.tokens += tokens;
  w.trained += trainedTotal;
  for (const [k, v] of Object.entries(metrics)) w.metrics[k] = (w.metrics[k] ?? 0) + v;
  return { gradNorm, skipped };
}

/**
 * Forward and backward of this rank's micro-batches, each weighted by its share of the step's units
 * (trained tokens for SFT, pairs for DPO); returns the step's loss and metrics over all ranks. The loss
 * scale is read before the step (a skipped step changes it only afterwards).
 */
function forwardBackward(
  ctx: RunContext,
  chunk: Batch[],
  unitsPer: number[],
): { loss: number; metrics: Record<string, number> } {
  const { optimizer, processGroup, world, settings, model, device } = ctx;
  const lossScale = ctx.scaler?.scale ?? 1;
  const unitsTotal = unitsPer.reduce((a, b) => a + b, 0);
  let stepLoss = 0;
  const metrics: Record<string, number> = {};
  // Rank r takes micro-batches r, r + world, ...; a slot with nothing for this rank still joins
  // the collectives that the other ranks' micro-batches make (ZeRO-3 gathers).
  for (let slot = 0; slot < Math.ceil(chunk.length / world); slot++) {
    const k = slot * world + processGroup.rank;
    const b = chunk[k];
    if (!b || !unitsPer[k]) {
      // nothing to learn in this micro-batch (OA: loss 0)
      optimizer.idleMicroBatch();
      continue;
    }
    const weight = ctx.cfg.loss_normalization === "micro_batch" ? 1 / chunk.length : unitsPer[k]! / unitsTotal;
    const options = {
      gradientCheckpointing: ctx.checkpointing,
      gradScale: weight * lossScale,
      blockHooks: optimizer.blockHooks,
    };
    optimizer.beforeMicroBatch();
    const run = () => torch.scope(() => ctx.objective.step(model, b, options));
    const r = inPrecision(settings.precision, device, run);
    optimizer.afterMicroBatch();
    stepLoss += weight * r.loss;
    for (const [name, v] of Object.entries(r.metrics ?? {})) metrics[name] = (metrics[name] ?? 0) + weight * v;
  }
  if (world === 1) return { loss: stepLoss, metrics };
  const names = Object.keys(metrics).sort();
  const reduced = ctx.processGroup.reduceNumbers([stepLoss, ...names.map((n) => metrics[n]!)]);
  return { loss: reduced[0]!, metrics: Object.fromEntries(names.map((n, i) => [n, reduced[i + 1]!])) };
}

/** One log record for the steps since the last one, and the progress bar (rate and ETA). */
function logStep(ctx: RunContext, step: StepOutcome): void {
  const { state, report, scaler } = ctx;
  const now = performance.now();
  const w = report.window;
  const rate = w.tokens / ((now - w.t) / 1000);
  const rec: StepRecord = {
    type: "train",
    step: state.globalStep,
    epoch: state.epoch + state.microBatch / ctx.batches.length,
    loss: w.loss / w.steps,
    lr: ctx.optimizer.lr,
    grad_norm: step.gradNorm,
    tokens_per_s: rate,
    trained_tokens: state.trainedTokens,
    elapsed_s: (now - report.t0) / 1000,
    ...(scaler ? { loss_scale: scaler.scale, skipped: step.skipped } : {}),
    ...(Object.keys(w.metrics).length
      ? { metrics: Object.fromEntries(Object.entries(w.metrics).map(([k, v]) => [k, v / w.steps])) }
      : {}),
  };
  report.write(rec);
  const etaS = ((now - report.t0) / 1000 / Math.max(1, state.globalStep)) * (ctx.totalSteps - state.globalStep);
  report.bar?.update(state.globalStep, { loss: rec.loss, lr: rec.lr, tokensPerS: rate, etaS });
  report.window = { loss: 0, steps: 0, tokens: 0, trained: 0, t: now, metrics: {} };
}

/** Evaluation on every validation set, logged; keeps the best eval loss in the state. */
export function evaluateRun(ctx: RunContext): void {
  const { state } = ctx;
  const env = {
    model: ctx.model,
    precision: ctx.settings.precision,
    device: ctx.device,
    processGroup: ctx.processGroup,
  };
  const datasets = ctx.optimizer.withFullParams(() => ctx.objective.evaluate(env));
  const tokens = Object.values(datasets).reduce((n, d) => n + d.tokens, 0);
  if (!tokens) return;
  const loss = Object.values(datasets).reduce((a, d) => a + d.loss * d.tokens, 0) / tokens;
  ctx.report.write({ type: "eval", step: state.globalStep, datasets, loss });
  ctx.result.lastEval = loss;
  if (!state.bestEval || loss < state.bestEval.loss) state.bestEval = { step: state.globalStep, loss };
  const each = Object.entries(datasets)
    .map(([n, d]) => `${n} ${d.loss.toFixed(3)}/${(100 * d.accuracy).toFixed(1)}%`)
    .join("  ");
  ctx.report.bar?.message(`eval step ${state.globalStep}: loss ${loss.toFixed(4)}  ${each}`);
}

/** An atomic checkpoint of the model, optimizer, data position, loss scaler and RNG; rotation. */
export function saveRun(ctx: RunContext): void {
  const { state, optimizer } = ctx;
  state.elapsedS = (performance.now() - ctx.report.t0) / 1000;
  if (ctx.scaler) state.lossScaler = ctx.scaler.state();
  ctx.result.lastCheckpoint = optimizer.withFullParams(() =>
    saveCheckpoint(ctx.outputDir, {
      model: ctx.model,
      tokenizer: ctx.tokenizer,
      paramNames: ctx.names,
      state,
      config: ctx.cfg,
      processGroup: ctx.processGroup,
      ...optimizer.checkpointParts(),
      ...(ctx.lora ? { lora: ctx.lora } : {}),
      ...(ctx.onCheckpointMidway ? { midway: ctx.onCheckpointMidway } : {}),
    }),
  );
  if (!ctx.lead) return;
  const removed = pruneCheckpoints(ctx.outputDir, ctx.cfg.save_total_limit, ctx.result.lastCheckpoint);
  ctx.report.bar?.message(
    `saved ${ctx.result.lastCheckpoint}${removed.length ? ` (removed ${removed.join(", ")})` : ""}`,
  );
}
