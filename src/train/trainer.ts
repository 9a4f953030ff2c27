// `oasft train`: supervised fine-tuning as OA's trainer_sft.py does it, in one process.
//   data (the config's mix, OA format, masks, a fresh random window per epoch) → micro-batches (padded
//   or packed) → forward/backward (bf16 autocast, or fp16 with loss scaling; optional gradient
//   checkpointing) accumulated over gradient_accumulation_steps → clip → AdamW → schedule
// with evaluation per dataset, atomic checkpoints, exact resume, a JSONL log and a chart.
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { extname, join } from "node:path";
import * as torch from "../torch/index.js";
import {
  applyLora, createCausalLM, loadAdapter, loadCausalLM, resizeTokenEmbeddings, resolveModelDir, saveAdapter, saveCausalLM, tokenRowModules,
  type CausalLM, type LoraConfig,
} from "../models/index.js";
import { loraSettings } from "./lora-settings.js";
import { indexWeights } from "../models/checkpoint.js";
import { epochIndices } from "../data/mix.js";
import { Rng } from "../data/rng.js";
import type { SFTConfig } from "../sft/config.js";
import { bestFitDecreasing, packBatch, padBatch, roundUp, type Batch } from "../sft/collate.js";
import { lintMessage, loadConfigTokenizer, prepareSftData, splitSample, type SftData } from "../sft/data.js";
import type { EncodedSample } from "../sft/encode.js";
import type { ChatTokenizer } from "../tokenizer/index.js";
import { writeFileAtomic } from "../util/atomic-file.js";
import { distEnv, type DistEnv } from "../dist/env.js";
import { backendFor, initProcessGroup, soloGroup, type ProcessGroup } from "../dist/group.js";
import { ReplicatedOptimizer, ShardedOptimizer, type TrainOptimizer } from "./zero.js";
import { DynamicLossScaler } from "./loss-scaler.js";
import { JsonlLog, ProgressBar, writeChart, type EvalRecord, type LogRecord, type StepRecord } from "./report.js";
import { lrAt, type ScheduleOptions } from "./schedule.js";
import { resolveTrainSettings, type TrainSettings } from "./settings.js";
import { checkpointDirs, loadCheckpointState, pruneCheckpoints, resolveResume, saveCheckpoint, type TrainerState } from "./state.js";

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

// ----- the model and where it starts --------------------------------------------------------------

/**
 * The model a run trains: model_name's (or, on resume, the checkpoint's), with LoRA adapters on a
 * frozen base when peft_model is set. A LoRA checkpoint holds only the adapters: the base comes from
 * model_name again, and the adapters from the checkpoint.
 */
function startingModel(
  cfg: SFTConfig, tok: ChatTokenizer, device: string, resumeDir: string | undefined, print: (l: string) => void,
): { model: CausalLM; lora?: LoraConfig } {
  if (resumeDir && !cfg.peft_model) return { model: loadCausalLM(resumeDir, { dtype: "float32", device }) };
  const base = baseModel(cfg, tok, device);
  const model = base.model;
  if (!cfg.peft_model) return { model };
  try {
    if (resumeDir) return { model, lora: loadAdapter(model, resumeDir) };
    const lora = loraSettings(cfg, model);
    if (base.grew) {
      // New token rows (OA's chat tokens) would stay random and unsaved under LoRA alone.
      const rows = tokenRowModules(model).filter((m) => !(lora.modules_to_save ?? []).includes(m));
      if (rows.length) {
        lora.modules_to_save = [...(lora.modules_to_save ?? []), ...rows];
        print(`note: LoRA: the vocabulary grew to ${model.config.vocabSize} tokens, so ${rows.join(" and ")} train in full and are saved with the adapter (modules_to_save)`);
      }
    }
    const adapted = applyLora(model, lora);
    const trainable = model.namedParameters().filter(([, t]) => t.requiresGrad).reduce((n, [, t]) => n + t.numel, 0);
    print(`LoRA r=${lora.r} α=${lora.lora_alpha} on ${adapted.length} layers (${lora.target_modules.join(", ")}): ` +
      `${(trainable / 1e6).toFixed(2)}M trainable of ${(model.numParameters() / 1e6).toFixed(2)}M parameters`);
    return { model, lora };
  } catch (err) {
    model.dispose();
    throw err;
  }
}

/**
 * model_name: an HF folder with weights (fine-tune it), or a config.json file (a new model, random
 * init as HF). The embedding grows to the tokenizer's length rounded up to 16 (OA) — never shrinks.
 */
function baseModel(cfg: SFTConfig, tok: ChatTokenizer, device: string): { model: CausalLM; grew: boolean } {
  const vocab = roundUp(tok.vocabSize, 16);
  let name = cfg.model_name;
  if (!name) throw new Error("model_name is not set: give a model folder (HF layout) or a config.json for a new model");
  let model: CausalLM;
  name = resolveModelDir(name, "model_name");
  if (!existsSync(name)) throw new Error(`model_name ${name}: not found (expected a model folder, a config.json, or a hub name in the Hugging Face cache)`);
  if (statSync(name).isFile()) {
    if (extname(name) !== ".json") throw new Error(`model_name ${name}: expected a model folder or a config.json`);
    const json = JSON.parse(readFileSync(name, "utf8")) as Record<string, unknown>;
    const ids = { bos_token_id: tok.eosId, eos_token_id: tok.eosId, pad_token_id: tok.padId };
    model = createCausalLM({ ...json, ...ids, vocab_size: Math.max(Number(json.vocab_size ?? 0), vocab) }, { dtype: "float32", device }, name);
  } else {
    if (!existsSync(join(name, "config.json"))) throw new Error(`model_name ${name}: no config.json in the folder`);
    try {
      indexWeights(name);
    } catch (err) {
      throw new Error(`model_name ${name}: no weights (${(err as Error).message}); to start from scratch, give the config.json file itself`);
    }
    model = loadCausalLM(name, { dtype: "float32", device });
  }
  const grew = vocab > model.config.vocabSize;
  return { model: grew ? resizeTokenEmbeddings(model, vocab) : model, grew };
}

/** HF Trainer's groups: weight decay on everything but biases and norm weights (the model decides which). */
export function paramGroups(model: CausalLM, weightDecay: number) {
  const { decay, noDecay } = model.decayGroups();
  return {
    names: [...decay, ...noDecay].map(([n]) => n),
    groups: [
      { params: decay.map(([, p]) => p), weightDecay },
      { params: noDecay.map(([, p]) => p), weightDecay: 0 },
    ],
  };
}

// ----- batches --------------------------------------------------------------------------------------

/**
 * The micro-batches of one epoch, deterministic for (seed, epoch): the epoch's sample order (with
 * fraction/size subsets), a fresh truncation window per sample, then OA's padded batches or packed rows.
 */
export function epochBatches(data: SftData, cfg: SFTConfig, microBatchSize: number, epoch: number): Batch[] {
  const order = epochIndices(data.datasets, epoch, cfg.rng_seed);
  const samples: EncodedSample[] = order.map(([d, i]) => {
    const ds = data.datasets[d]!;
    return splitSample(data, cfg, ds, i, "train", epoch);
  });
  const pad = data.tokenizer.padId;
  const batches: Batch[] = [];
  if (cfg.packing) {
    // Attention costs grow with the row width, so most samples go into rows of a shorter width W and
    // a micro-batch takes max_length / W times more of them (the same token slots, B × max_length);
    // the few samples longer than W get rows of max_length.
    const width = packingRowLength(samples.map((s) => s.inputIds.length), cfg);
    const short = samples.map((_, i) => i).filter((i) => samples[i]!.inputIds.length <= width);
    const long = samples.map((_, i) => i).filter((i) => samples[i]!.inputIds.length > width);
    const groups: Array<{ bins: number[][]; rows: number }> = [
      { bins: bestFitDecreasing(short.map((i) => samples[i]!.inputIds.length), width).map((b) => b.map((k) => short[k]!)), rows: microBatchSize * Math.max(1, Math.floor(cfg.max_length / width)) },
      { bins: bestFitDecreasing(long.map((i) => samples[i]!.inputIds.length), cfg.max_length).map((b) => b.map((k) => long[k]!)), rows: microBatchSize },
    ];
    const rng = new Rng(cfg.rng_seed, `pack/${epoch}`);
    for (const g of groups) {
      rng.shuffle(g.bins);
      for (let i = 0; i < g.bins.length; i += g.rows) batches.push(packBatch(g.bins.slice(i, i + g.rows).map((b) => b.map((k) => samples[k]!)), pad));
    }
    rng.shuffle(batches);
  } else {
    for (let i = 0; i < samples.length; i += microBatchSize) batches.push(padBatch(samples.slice(i, i + microBatchSize), pad));
  }
  return batches;
}

/** The packed row width: packing_row_length, else the 90th-percentile length rounded up to a power of two (≥ 64). */
export function packingRowLength(lengths: number[], cfg: SFTConfig): number {
  const set = cfg.packing_row_length;
  if (set !== null) return Math.min(set, cfg.max_length);
  const sorted = [...lengths].sort((a, b) => a - b);
  const p90 = sorted[Math.floor(0.9 * (sorted.length - 1))] ?? cfg.max_length;
  return Math.min(cfg.max_length, Math.max(64, 2 ** Math.ceil(Math.log2(Math.max(1, p90)))));
}

const trainedIn = (b: Batch) => b.labels.reduce((n, row) => n + row.reduce((m, l) => m + (l !== -100 ? 1 : 0), 0), 0);

/** A batch's tensors on `device`; for CUDA they go through pinned host memory, so the copy is asynchronous. */
function tensorsOf(b: Batch, device: string) {
  const t = (x: number[][]) => {
    const host = torch.tensor(x, { dtype: "int64" });
    return device === "cpu" ? host : host.pinMemory().toDevice(device, true);
  };
  return {
    inputIds: t(b.inputIds),
    attentionMask: t(b.attentionMask),
    labels: t(b.labels),
    ...(b.segmentIds ? { segmentIds: t(b.segmentIds), positionIds: t(b.positionIds!) } : {}),
  };
}

// ----- evaluation -----------------------------------------------------------------------------------

/** Per validation set: mean loss over trained tokens and next-token accuracy on them (OA's metrics). */
export function evaluate(
  model: CausalLM, data: SftData, cfg: SFTConfig, precision: TrainSettings["precision"], device: string, group: ProcessGroup = soloGroup,
): EvalRecord["datasets"] {
  const out: EvalRecord["datasets"] = {};
  const batchSize = cfg.per_device_eval_batch_size;
  model.eval();
  torch.noGrad(() => {
    for (const d of data.datasets) {
      if (!d.val.length) continue;
      let lossSum = 0;
      let correct = 0;
      let count = 0;
      const samples = d.val.map((_, i) => splitSample(data, cfg, d, i, "val"));
      // Ranks take every world-th batch; the sums are reduced below.
      for (let i = group.rank * batchSize; i < samples.length; i += batchSize * group.worldSize) {
        torch.scope(() => {
          const b = tensorsOf(padBatch(samples.slice(i, i + batchSize), data.tokenizer.padId, 1), device);
          const run = () => model.forward({ inputIds: b.inputIds, attentionMask: b.attentionMask }).logits;
          const logits = precision === "fp32" ? run() : torch.autocast(torch.deviceType(device), precision === "bf16" ? "bfloat16" : "float16", run);
          const [rows, s, v] = logits.shape as [number, number, number];
          const target = torch.cat([b.labels.narrow(1, 1, s - 1), torch.full([rows, 1], -100, { dtype: "int64", device })], 1).view([rows * s]);
          const flat = logits.reshape([rows * s, v]).to("float32");
          const trained = target.ne(-100);
          const n = trained.sum().item();
          if (!n) return;
          lossSum += torch.crossEntropy(flat, target, { reduction: "sum" }).item();
          correct += flat.argmax(-1).eq(target).logicalAnd(trained).sum().item();
          count += n;
        });
      }
      if (group.worldSize > 1) [lossSum, correct, count] = group.reduceNumbers([lossSum, correct, count]);
      if (count) out[d.name] = { loss: lossSum / count, accuracy: correct / count, tokens: count };
    }
  });
  model.train();
  return out;
}

// ----- many processes -------------------------------------------------------------------------------

/** The job's process group (c10d, from the torchrun environment), or the one-process group. */
function joinJob(env: DistEnv | null, cfg: SFTConfig, device: string): ProcessGroup {
  if (!env) return soloGroup;
  const group = initProcessGroup(env, backendFor(device, cfg.dist_backend), cfg.dist_timeout, device);
  // Every rank must run the same config: a mismatch would silently train on different data or shapes.
  const hash = Number.parseInt(createHash("sha256").update(JSON.stringify(cfg)).digest("hex").slice(0, 12), 16);
  const all = group.gatherNumbers([hash]).map(([h]) => h!);
  const differ = all.map((h, r) => (h !== all[0] ? r : -1)).filter((r) => r >= 0);
  if (differ.length) {
    group.destroy();
    const who = differ.length > 1 ? `ranks ${differ.join(", ")} differ` : `rank ${differ[0]} differs`;
    throw new Error(`rank ${group.rank}: the ranks were started with different configs (${who} from rank 0); ` +
      "start every rank with the same arguments");
  }
  return group;
}

/** Threads per rank: the CPUs shared among the ranks of this machine, unless threads or OMP_NUM_THREADS say. */
function setThreads(cfg: SFTConfig, env: DistEnv | null): void {
  if (cfg.threads !== null) torch.setNumThreads(cfg.threads);
  else if (env && env.localWorldSize > 1 && !process.env.OMP_NUM_THREADS) {
    torch.setNumThreads(Math.max(1, Math.floor(torch.defaultThreads().threads / env.localWorldSize)));
  }
}

/** Every rank starts from rank 0's weights (a fresh init is seeded alike, but a file system may differ). */
function broadcastParameters(model: CausalLM, group: ProcessGroup): void {
  if (group.worldSize === 1) return;
  torch.noGrad(() => {
    for (const [, p] of model.namedParameters()) group.broadcast(p, 0);
  });
}

function makeOptimizer(
  model: CausalLM, names: string[], groups: ReturnType<typeof paramGroups>["groups"], settings: TrainSettings,
  group: ProcessGroup, stage: TrainSettings["zeroStage"], checkpointing: boolean,
): TrainOptimizer {
  const o = { lr: settings.lr, betas: settings.betas, eps: settings.eps, weightDecay: settings.weightDecay };
  return stage === 0
    ? new ReplicatedOptimizer(model, names, groups, o, group)
    : new ShardedOptimizer(model, names, groups, o, group, stage, checkpointing);
}

// ----- the loop ---------------------------------------------------------------------------------------

export async function train(cfg: SFTConfig, o: TrainOptions = {}): Promise<TrainSummary> {
  const env = distEnv();
  let device = torch.resolveDevice(cfg.device, "device");
  // Under a launcher, rank r of a machine takes that machine's GPU r unless the config names one.
  if (env && device === "cuda") device = `cuda:${env.localRank}`;
  setThreads(cfg, env);
  const group = joinJob(env, cfg, device);
  try {
    return await trainOnGroup(cfg, o, device, group, env !== null);
  } finally {
    group.destroy();
  }
}

async function trainOnGroup(cfg: SFTConfig, o: TrainOptions, device: string, group: ProcessGroup, distributed: boolean): Promise<TrainSummary> {
  const lead = group.rank === 0;
  const world = group.worldSize;
  // Only rank 0 talks; the others' errors still surface (thrown), and the launcher names their rank.
  const print = lead ? (o.print ?? ((l: string) => process.stderr.write(`${l}\n`))) : () => {};
  const settings = resolveTrainSettings(cfg, device, distributed);
  for (const n of settings.notes) print(`note: ${n}`);
  const stage = distributed ? settings.zeroStage : 0;
  if (stage === 3 && cfg.peft_model) throw new Error("zero_stage 3 with peft_model: LoRA's frozen base is not sharded; use zero_stage 0, 1 or 2");
  const checkpointing = cfg.gradient_checkpointing || stage === 3;
  if (stage === 3 && !cfg.gradient_checkpointing) {
    print("note: ZeRO-3 gathers each block's parameters for its forward and again for its recomputation in backward, " +
      "so gradient checkpointing is on");
  }
  const outputDir = cfg.output_dir;
  const resumeDir = cfg.resume_from_checkpoint ? resolveResume(cfg.resume_from_checkpoint, outputDir) : undefined;
  // A new run never mixes with another run's checkpoints (rotation and "latest" would pick them up).
  if (!resumeDir && lead) {
    const earlier = previousRun(outputDir);
    if (earlier.length && !cfg.overwrite_output_dir) {
      throw new Error(`output_dir ${outputDir} already holds a run (${earlier.slice(0, 4).join(", ")}${earlier.length > 4 ? ", ..." : ""}); ` +
        "pass --resume_from_checkpoint latest to continue it, --overwrite_output_dir to replace it, or another --output_dir");
    }
    for (const name of earlier) rmSync(join(outputDir, name), { recursive: true, force: true });
    if (earlier.length) print(`note: --overwrite_output_dir: removed ${earlier.join(", ")} from ${outputDir}`);
  }

  torch.manualSeed(cfg.rng_seed % 2 ** 31);
  const tokenizer = resumeDir ? loadConfigTokenizer({ ...cfg, tokenizer_name: resumeDir }) : loadConfigTokenizer(cfg);
  const data = await prepareSftData(cfg, tokenizer);
  if (data.lint.length) throw new Error(lintMessage(data.lint));
  if (!data.datasets.some((d) => d.train.length)) {
    const names = data.datasets.map((d) => `${d.name} (0 train samples)`).join(", ") || "none configured";
    throw new Error(`nothing to train on: ${names}; see \`oasft data stats\` for what each rule dropped`);
  }
  const start = startingModel(cfg, tokenizer, device, resumeDir, print);
  const model = start.model.train();
  const lora = start.lora;
  broadcastParameters(model, group);
  const numParameters = model.numParameters();
  const { names, groups } = paramGroups(model, settings.weightDecay);
  const optimizer = makeOptimizer(model, names, groups, settings, group, stage, checkpointing);
  const scaler = settings.lossScaling ? new DynamicLossScaler(settings.lossScaling) : undefined;
  if (settings.precision === "fp16" && model.fp16Advice) print(`note: fp16: ${model.fp16Advice}`);

  let state: TrainerState = { globalStep: 0, epoch: 0, microBatch: 0, trainedTokens: 0, tokens: 0, elapsedS: 0 };
  if (resumeDir) {
    const loaded = loadCheckpointState(resumeDir, (dir) => optimizer.loadState(dir));
    state = loaded.state;
    if (state.lossScaler && scaler) scaler.load(state.lossScaler);
    print(`resumed from ${resumeDir} at step ${state.globalStep} (epoch ${state.epoch}, micro-batch ${state.microBatch})`);
  }

  // A step takes gradient_accumulation_steps micro-batches per rank, `world` ranks at a time, from the
  // one deterministic order: the global batch, and so the losses, do not depend on how it is split.
  const perStep = settings.gradAccumulation * world;
  let batches = epochBatches(data, cfg, settings.microBatchSize, state.epoch);
  const firstEpoch = state.epoch === 0 ? batches : epochBatches(data, cfg, settings.microBatchSize, 0);
  const stepsPerEpoch = Math.ceil(firstEpoch.length / perStep);
  const totalSteps = cfg.max_steps ?? Math.ceil(cfg.num_train_epochs * stepsPerEpoch);
  const schedule: ScheduleOptions = { ...settings.schedule, peakLr: settings.lr, totalSteps: settings.schedule.totalSteps ?? totalSteps };
  const trainSamples = data.datasets.reduce((n, d) => n + d.train.length, 0);
  print(
    `train: ${trainSamples} samples from ${data.datasets.length} dataset(s), ${batches.length} micro-batches of ` +
    `${settings.microBatchSize}${cfg.packing ? " packed rows" : ""} per epoch, ${totalSteps} optimizer steps ` +
    `(accumulation ${settings.gradAccumulation}${world > 1 ? ` × ${world} ranks, ZeRO stage ${stage}` : ""}), ` +
    `${settings.precision} on ${device}, ${(numParameters / 1e6).toFixed(2)}M parameters`,
  );

  const log = new JsonlLog(join(outputDir, "log.jsonl"));
  const records: LogRecord[] = lead ? readLogUpTo(log.path, state.globalStep, print) : [];
  if (lead) writeFileAtomic(log.path, records.map((r) => JSON.stringify(r) + "\n"));
  const writeLog = (rec: LogRecord) => { records.push(rec); if (lead) log.write(rec); };
  const bar = o.progress === false || !lead ? undefined : new ProgressBar(totalSteps);
  const precisionDtype = settings.precision === "bf16" ? "bfloat16" : "float16";
  const autocastDevice = torch.deviceType(device);
  // Autocast would keep a bf16/fp16 copy of every weight it casts until the micro-batch ends, which
  // undoes ZeRO-3's freeing of each block's parameters: casts are made afresh at each use instead.
  const autocastCache = stage === 3 ? torch.setAutocastCacheEnabled(false) : undefined;
  const t0 = performance.now() - state.elapsedS * 1000;
  let window = { loss: 0, steps: 0, tokens: 0, trained: 0, t: performance.now() };
  let lastLoss = NaN;
  let lastEval: number | undefined;
  let lastCheckpoint: string | undefined;
  let interrupted = false;

  const save = () => {
    state.elapsedS = (performance.now() - t0) / 1000;
    if (scaler) state.lossScaler = scaler.state();
    lastCheckpoint = optimizer.withFullParams(() => saveCheckpoint(outputDir, {
      model, tokenizer, paramNames: names, state, config: cfg, group, ...optimizer.checkpointParts(),
      ...(lora ? { lora } : {}),
      ...(o.onCheckpointMidway ? { midway: o.onCheckpointMidway } : {}),
    }));
    if (!lead) return;
    const removed = pruneCheckpoints(outputDir, cfg.save_total_limit, lastCheckpoint);
    bar?.message(`saved ${lastCheckpoint}${removed.length ? ` (removed ${removed.join(", ")})` : ""}`);
  };
  const runEval = () => {
    const datasets = optimizer.withFullParams(() => evaluate(model, data, cfg, settings.precision, device, group));
    const tokens = Object.values(datasets).reduce((n, d) => n + d.tokens, 0);
    if (!tokens) return;
    const loss = Object.values(datasets).reduce((a, d) => a + d.loss * d.tokens, 0) / tokens;
    writeLog({ type: "eval", step: state.globalStep, datasets, loss });
    lastEval = loss;
    if (!state.bestEval || loss < state.bestEval.loss) state.bestEval = { step: state.globalStep, loss };
    bar?.message(`eval step ${state.globalStep}: loss ${loss.toFixed(4)}  ${Object.entries(datasets).map(([n, d]) => `${n} ${d.loss.toFixed(3)}/${(100 * d.accuracy).toFixed(1)}%`).join("  ")}`);
  };

  try {
    while (state.globalStep < totalSteps) {
      if (state.microBatch >= batches.length) {
        state.epoch++;
        state.microBatch = 0;
        batches = epochBatches(data, cfg, settings.microBatchSize, state.epoch);
        continue;
      }
      const chunk = batches.slice(state.microBatch, state.microBatch + perStep);
      const trainedPer = chunk.map(trainedIn);
      const trainedTotal = trainedPer.reduce((a, b) => a + b, 0);
      const lossScale = scaler?.scale ?? 1;
      let stepLoss = 0;
      // Rank r takes micro-batches r, r + world, ...; a slot with nothing for this rank still joins
      // the collectives that the other ranks' micro-batches make (ZeRO-3 gathers).
      for (let slot = 0; slot < Math.ceil(chunk.length / world); slot++) {
        const k = slot * world + group.rank;
        const b = chunk[k];
        if (!b || !trainedPer[k]) { // nothing to learn in this micro-batch (OA: loss 0)
          optimizer.idleMicroBatch();
          continue;
        }
        const weight = cfg.loss_normalization === "micro_batch" ? 1 / chunk.length : trainedPer[k]! / trainedTotal;
        const options = { gradientCheckpointing: checkpointing, gradScale: weight * lossScale, blockHooks: optimizer.blockHooks };
        optimizer.beforeMicroBatch();
        const run = () => torch.scope(() => model.trainStep(tensorsOf(b, device), options));
        const { loss } = settings.precision === "fp32" ? run() : torch.autocast(autocastDevice, precisionDtype, run);
        optimizer.afterMicroBatch();
        stepLoss += weight * loss;
      }
      if (world > 1) stepLoss = group.reduceNumbers([stepLoss])[0]!;
      state.microBatch += chunk.length;
      optimizer.reduceGradients();
      let skipped = false;
      let gradNorm: number;
      const failed = (why: string) => new Error(
        `step ${state.globalStep + 1}: ${why}; the weights were not updated. ` +
        `${lastCheckpoint ?? checkpointDirs(outputDir).at(-1)?.dir ?? "no checkpoint was saved yet"} holds the last good state (try a lower learning_rate, or bf16)`,
      );
      if (scaler) {
        optimizer.scaleGrads(1 / lossScale);
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
        if (!Number.isFinite(stepLoss) || !Number.isFinite(gradNorm)) throw failed(`the loss is ${stepLoss} and the gradient norm ${gradNorm}`);
      }
      optimizer.lr = lrAt(state.globalStep, schedule);
      if (!skipped && trainedTotal > 0) optimizer.step();
      optimizer.zeroGrad();
      state.globalStep++;
      const tokens = chunk.reduce((n, b) => n + b.tokens, 0);
      state.tokens += tokens;
      state.trainedTokens += trainedTotal;
      lastLoss = stepLoss;
      window.loss += stepLoss;
      window.steps++;
      window.tokens += tokens;
      window.trained += trainedTotal;

      const last = state.globalStep === totalSteps;
      if (state.globalStep % cfg.logging_steps === 0 || last) {
        const now = performance.now();
        const rate = window.tokens / ((now - window.t) / 1000);
        const rec: StepRecord = {
          type: "train", step: state.globalStep, epoch: state.epoch + state.microBatch / batches.length, loss: window.loss / window.steps,
          lr: optimizer.lr, grad_norm: gradNorm, tokens_per_s: rate, trained_tokens: state.trainedTokens, elapsed_s: (now - t0) / 1000,
          ...(scaler ? { loss_scale: scaler.scale, skipped } : {}),
        };
        writeLog(rec);
        const etaS = ((now - t0) / 1000 / Math.max(1, state.globalStep)) * (totalSteps - state.globalStep);
        bar?.update(state.globalStep, { loss: rec.loss, lr: rec.lr, tokensPerS: rate, etaS });
        window = { loss: 0, steps: 0, tokens: 0, trained: 0, t: now };
      }
      if (state.globalStep % cfg.eval_steps === 0 || last) runEval();
      // Let signal handlers (Ctrl-C) run: the step itself is synchronous native work.
      await new Promise((r) => setImmediate(r));
      let stop = o.stopRequested?.() ?? false;
      // A signal reaches the ranks at different moments: they stop together, at the same step.
      if (world > 1) stop = group.reduceNumbers([stop ? 1 : 0], "max")[0]! > 0;
      if ((cfg.save_strategy === "steps" && state.globalStep % cfg.save_steps === 0) || stop) save();
      else if (cfg.save_strategy === "epoch" && state.microBatch >= batches.length) save();
      if (stop) {
        interrupted = true;
        bar?.message(`interrupted: checkpoint saved at step ${state.globalStep}; resume with --resume_from_checkpoint latest`);
        break;
      }
    }
    bar?.done();
    state.elapsedS = (performance.now() - t0) / 1000;
    const held = rankMemory(optimizer, group);
    if (!interrupted) {
      // A LoRA run's result is its adapter (PEFT's files); `oasft merge` makes a plain model of it.
      optimizer.withFullParams(() => {
        if (!lead) return;
        if (lora) saveAdapter(model, lora, outputDir, cfg.model_name);
        else saveCausalLM(model, outputDir);
        tokenizer.save(outputDir);
      });
    }
    const summary: TrainSummary = {
      outputDir, steps: state.globalStep, interrupted, finalLoss: lastLoss, ...(lastEval !== undefined ? { evalLoss: lastEval } : {}),
      trainedTokens: state.trainedTokens, tokensPerS: state.tokens / Math.max(1e-9, state.elapsedS), elapsedS: state.elapsedS,
      ...(lastCheckpoint ?? checkpointDirs(outputDir).at(-1)?.dir ? { lastCheckpoint: lastCheckpoint ?? checkpointDirs(outputDir).at(-1)!.dir } : {}),
    };
    if (lead) {
      writeChart(join(outputDir, "training.svg"), records, cfg.log_dir);
      const extra = {
        best_eval: state.bestEval ?? null, settings: { ...settings, notes: undefined }, notes: settings.notes,
        world_size: world, zero_stage: stage, ranks: held, ...(scaler ? { fp16_skipped_steps: scaler.skippedSteps } : {}),
      };
      if (scaler?.skippedSteps) print(`note: fp16: ${scaler.skippedSteps} of ${state.globalStep} steps overflowed and were skipped`);
      writeFileAtomic(join(outputDir, "summary.json"), [JSON.stringify({ ...summary, ...extra }, null, 2) + "\n"]);
    }
    group.barrier(); // the final model is on disk before any rank reports success
    return summary;
  } finally {
    if (autocastCache !== undefined) torch.setAutocastCacheEnabled(autocastCache);
    optimizer.dispose();
    model.dispose();
  }
}

/** Bytes of parameters, master copies, gradients and AdamW moments each rank holds (gathered to every rank). */
function rankMemory(optimizer: TrainOptimizer, group: ProcessGroup): Array<{ rank: number } & ReturnType<TrainOptimizer["heldBytes"]>> {
  const h = optimizer.heldBytes();
  return group.gatherNumbers([h.params, h.master, h.grads, h.optimizer]).map(([params, master, grads, opt], rank) => ({ rank, params: params!, master: master!, grads: grads!, optimizer: opt! }));
}

/**
 * The log records up to `step` (a resumed run rewrites what came after its checkpoint). A torn last
 * line (power loss, a full disk) is dropped with a note; a damaged line elsewhere names the file and line.
 */
function readLogUpTo(path: string, step: number, print: (line: string) => void): LogRecord[] {
  if (!existsSync(path) || step === 0) return [];
  const lines = readFileSync(path, "utf8").split("\n");
  const records: LogRecord[] = [];
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    try {
      records.push(JSON.parse(line) as LogRecord);
    } catch {
      const last = lines.slice(i + 1).every((l) => !l.trim());
      if (!last) throw new Error(`${path}:${i + 1}: not a JSON log record; fix or remove the line to resume`);
      print(`note: ${path}:${i + 1}: dropped a torn last line (the run stopped while writing it)`);
    }
  });
  return records.filter((r) => r.step <= step);
}

/** What another run left in output_dir: checkpoints, its log, summary and final model. */
function previousRun(outputDir: string): string[] {
  if (!existsSync(outputDir)) return [];
  const marks = new Set(["log.jsonl", "summary.json", "training.svg", "model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors"]);
  return readdirSync(outputDir).filter((n) => marks.has(n) || /^checkpoint-\d+$/.test(n)).sort();
}
