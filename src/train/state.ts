// Training checkpoints: output_dir/checkpoint-N holds the model in the Hugging Face layout (loadable by
// any command, and by Python's transformers) plus what a resume needs: optimizer moments, the
// scheduler/data position, the loss scaler and torch's RNG. A checkpoint is written into a temporary
// folder, every file fsynced, then renamed into place: a crash mid-save never leaves a half checkpoint
// under a checkpoint-N name, and never touches the earlier ones.
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from "node:fs";
import { basename, join } from "node:path";
import * as torch from "../torch/index.js";
import { readJsonFile, saveAdapter, saveCausalLM, type CausalLM, type LoraConfig } from "../models/index.js";
import type { ChatTokenizer } from "../tokenizer/index.js";
import { fsyncDir, writeFileAtomic } from "../util/atomic-file.js";
import { soloGroup, type ProcessGroup } from "../parallel/group.js";
import type { AdamW } from "./adamw.js";
import type { LossScalerState } from "./loss-scaler.js";

export interface TrainerState {
  /** Optimizer steps done. */
  globalStep: number;
  /** Where the data stream stands: the epoch, and micro-batches of it already consumed. */
  epoch: number;
  microBatch: number;
  /** Trained (loss) tokens and all tokens seen so far. */
  trainedTokens: number;
  tokens: number;
  lossScaler?: LossScalerState;
  /** Seconds of training before this checkpoint (for the summary across resumes). */
  elapsedS: number;
  /** Best evaluation loss so far and its step. */
  bestEval?: { step: number; loss: number };
}

const STATE_FILE = "trainer_state.json";
const OPTIMIZER_FILE = "optimizer.safetensors";
const RNG_FILE = "rng_state.safetensors";

/** The generators a checkpoint holds: the CPU's and every visible GPU's ("cuda:0", ...). */
function rngDevices(): string[] {
  const gpus = torch.cudaIsAvailable() ? torch.cudaDeviceCount() : 0;
  return ["cpu", ...Array.from({ length: gpus }, (_, i) => `cuda:${i}`)];
}

export function checkpointDirs(outputDir: string): Array<{ step: number; dir: string }> {
  if (!existsSync(outputDir)) return [];
  return readdirSync(outputDir)
    .map((name) => ({ name, m: /^checkpoint-(\d+)$/.exec(name) }))
    .filter((x) => x.m && existsSync(join(outputDir, x.name, STATE_FILE)))
    .map((x) => ({ step: Number(x.m![1]), dir: join(outputDir, x.name) }))
    .sort((a, b) => a.step - b.step);
}

/** "latest" → the newest complete checkpoint in output_dir; a path → that checkpoint. */
export function resolveResume(spec: string, outputDir: string): string {
  if (spec === "latest" || spec === "true") {
    const all = checkpointDirs(outputDir);
    if (!all.length)
      throw new Error(`--resume_from_checkpoint latest: no checkpoint-N folder with ${STATE_FILE} in ${outputDir}`);
    return all.at(-1)!.dir;
  }
  if (!existsSync(join(spec, STATE_FILE)))
    throw new Error(`--resume_from_checkpoint ${spec}: not a checkpoint (no ${STATE_FILE})`);
  return spec;
}

export interface SaveCheckpointArgs {
  model: CausalLM;
  tokenizer: ChatTokenizer;
  /** Whole AdamW state (stage 0), written by rank 0; undefined when each rank writes its shard instead. */
  optimizer?: AdamW;
  paramNames: string[];
  state: TrainerState;
  config: Record<string, unknown>;
  /** Test seam: called with the temporary folder once the model files are written, before the rest. */
  midway?: (tmpDir: string) => void;
  /** A LoRA run: the checkpoint holds the adapter (PEFT's files), not the frozen base. */
  lora?: LoraConfig;
  /**
   * Many ranks: every rank calls saveCheckpoint. Rank 0 writes the shared files (the whole model, in
   * the HF layout); each rank writes its own with `writeShard`. The folder gets its checkpoint-N name
   * only after a barrier, once every rank's files are complete.
   */
  processGroup?: ProcessGroup;
  writeShard?: (tmpDir: string) => void;
}

export function saveCheckpoint(outputDir: string, a: SaveCheckpointArgs): string {
  const processGroup = a.processGroup ?? soloGroup;
  const lead = processGroup.rank === 0;
  const final = join(outputDir, `checkpoint-${a.state.globalStep}`);
  // Every rank writes into rank 0's temporary folder, named by rank 0's pid (pruneCheckpoints' rule).
  const owner = processGroup.worldSize > 1 ? processGroup.reduceNumbers([lead ? process.pid : 0])[0]! : process.pid;
  const tmp = join(outputDir, `.tmp-checkpoint-${a.state.globalStep}-${owner}`);
  if (lead) {
    mkdirSync(outputDir, { recursive: true });
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp);
  }
  processGroup.barrier();
  if (!lead && !existsSync(tmp)) {
    throw new Error(
      `rank ${processGroup.rank}: ${tmp}, made by rank 0, is not here; ` +
        "output_dir must be on a file system every node shares",
    );
  }
  a.writeShard?.(tmp);
  if (lead) writeShared(tmp, a);
  processGroup.barrier(); // every rank's files are complete
  if (lead) {
    fsyncDir(tmp);
    // Replace an older checkpoint of the same step (a resumed run re-saving) only once the new one is whole.
    if (existsSync(final)) {
      const old = `${final}.old-${process.pid}`;
      renameSync(final, old);
      renameSync(tmp, final);
      rmSync(old, { recursive: true, force: true });
    } else renameSync(tmp, final);
    fsyncDir(outputDir);
  }
  processGroup.barrier(); // no rank goes on before checkpoint-N exists
  return final;
}

/**
 * Rank 0's files: the model (HF layout, or the LoRA adapter), the tokenizer, whole optimizer state, RNG, trainer state.
 */
function writeShared(tmp: string, a: SaveCheckpointArgs): void {
  if (a.lora) saveAdapter(a.model, a.lora, tmp, typeof a.config.model_name === "string" ? a.config.model_name : null);
  else saveCausalLM(a.model, tmp);
  a.tokenizer.save(tmp);
  a.midway?.(tmp);
  if (a.optimizer) {
    const tensors: Array<[string, torch.Tensor]> = [];
    const steps: Record<string, number> = {};
    for (const s of a.optimizer.stateList()) {
      const name = a.paramNames[s.index]!;
      tensors.push([`exp_avg.${name}`, s.expAvg], [`exp_avg_sq.${name}`, s.expAvgSq]);
      steps[name] = s.step;
    }
    torch.saveSafetensors(join(tmp, OPTIMIZER_FILE), tensors, {
      steps: JSON.stringify(steps),
      lr: String(a.optimizer.lr),
    });
  }
  torch.scope(() =>
    torch.saveSafetensors(
      join(tmp, RNG_FILE),
      rngDevices().map((d): [string, torch.Tensor] => [d, torch.rngState(d)]),
    ),
  );
  // Written last: a folder with trainer_state.json is a complete checkpoint (checkpointDirs' rule).
  writeFileAtomic(join(tmp, STATE_FILE), [JSON.stringify({ ...a.state, config: a.config }, null, 2) + "\n"]);
}

/**
 * Deletes the oldest checkpoints beyond `limit`, and temporary folders left by interrupted saves.
 * `keep` (the checkpoint just written) is never deleted, whatever its number.
 */
export function pruneCheckpoints(outputDir: string, limit: number | null, keep?: string): string[] {
  const removed: string[] = [];
  for (const name of readdirSync(outputDir)) {
    const m = /^\.tmp-checkpoint-\d+-(\d+)$/.exec(name);
    if (m && Number(m[1]) !== process.pid) {
      rmSync(join(outputDir, name), { recursive: true, force: true });
      removed.push(name);
    }
  }
  if (limit !== null && limit > 0) {
    const all = checkpointDirs(outputDir).filter((c) => c.dir !== keep);
    for (const { dir } of all.slice(0, Math.max(0, all.length - (keep ? limit - 1 : limit)))) {
      rmSync(dir, { recursive: true, force: true });
      removed.push(basename(dir));
    }
  }
  return removed;
}

export interface LoadedCheckpoint {
  state: TrainerState;
  config: Record<string, unknown>;
}

/**
 * Restores the trainer state, the optimizer moments (through `loadOptimizer`) and the RNG from a
 * checkpoint; the model is loaded by the caller. A
 * checkpoint is taken whole or refused: a damaged state file, or a moment the checkpoint says it has
 * but does not hold, is an error naming the file and the tensor.
 */
export function loadCheckpointState(dir: string, loadOptimizer: (dir: string) => void): LoadedCheckpoint {
  const raw = readJsonFile(join(dir, STATE_FILE), "trainer state") as unknown as TrainerState & {
    config: Record<string, unknown>;
  };
  if (!Number.isInteger(raw.globalStep) || !Number.isInteger(raw.epoch) || !Number.isInteger(raw.microBatch)) {
    throw new Error(
      `${join(dir, STATE_FILE)}: globalStep, epoch and microBatch must be integers (a damaged checkpoint?)`,
    );
  }
  loadOptimizer(dir);
  const rng = torch.loadSafetensors(join(dir, RNG_FILE)).tensors;
  try {
    for (const device of rngDevices()) {
      const state = rng.get(device);
      // A checkpoint written on a machine without this GPU restores the CPU generator only.
      if (state) torch.setRngState(device, state);
      else if (device === "cpu") throw new Error(`${join(dir, RNG_FILE)}: no 'cpu' generator state`);
    }
  } finally {
    for (const t of rng.values()) t.dispose();
  }
  const { config, ...state } = raw;
  return { state, config };
}

/** Whether a checkpoint holds whole AdamW state (stage 0) rather than per-rank ZeRO shards. */
export const hasWholeOptimizerState = (dir: string) => existsSync(join(dir, OPTIMIZER_FILE));

/** Stage-0 AdamW state from optimizer.safetensors, by parameter name. */
export function loadWholeOptimizer(dir: string, optimizer: AdamW, paramNames: string[]): void {
  const optimizerFile = join(dir, OPTIMIZER_FILE);
  const { header, tensors } = torch.loadSafetensors(optimizerFile);
  try {
    let steps: Record<string, number>;
    try {
      steps = JSON.parse(header.metadata?.steps ?? "{}") as Record<string, number>;
    } catch {
      throw new Error(`${optimizerFile}: the 'steps' metadata is not JSON`);
    }
    const unknown = Object.keys(steps).filter((n) => !paramNames.includes(n));
    if (unknown.length)
      throw new Error(
        `${optimizerFile}: state for ${unknown.slice(0, 3).join(", ")}, which the model does not have (another ` +
          `model's checkpoint?)`,
      );
    const list = paramNames.flatMap((name, index) => {
      if (steps[name] === undefined) return []; // never stepped (no gradient yet)
      const m = tensors.get(`exp_avg.${name}`);
      const v = tensors.get(`exp_avg_sq.${name}`);
      if (!m || !v)
        throw new Error(
          `${optimizerFile}: missing ${!m ? "exp_avg" : "exp_avg_sq"}.${name} (the checkpoint is incomplete)`,
        );
      return [{ index, step: steps[name]!, expAvg: m, expAvgSq: v }];
    });
    optimizer.loadState(list);
  } finally {
    for (const t of tensors.values()) t.dispose();
  }
}
