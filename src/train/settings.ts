// The trainer's numbers, resolved from the SFT config and (with `deepspeed: true`) the DeepSpeed JSON
// it names, as the Hugging Face integration resolves "auto": lr, betas, eps, weight decay, clipping,
// accumulation, micro-batch size, precision and the WarmupDecayLR schedule. What cannot apply in one
// process (ZeRO sharding, offload) is reported, never silently dropped.
import { existsSync, readFileSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import * as torch from "../torch/index.js";
import type { Settings } from "../sft/config.js";
import { BUILTIN_CONFIG_DIR } from "../sft/config.js";
import type { LossScalerOptions } from "./loss-scaler.js";
import type { ScheduleKind } from "./schedule.js";
import { ConfigError, type Json } from "../util/config-error.js";

export type Precision = "fp32" | "bf16" | "fp16";

/** Runs `fn` in the run's precision: as it is for fp32, else under bf16/fp16 autocast on `device`. */
export function inPrecision<T>(precision: Precision, device: string, fn: () => T): T {
  if (precision === "fp32") return fn();
  return torch.autocast(torch.deviceType(device), precision === "bf16" ? "bfloat16" : "float16", fn);
}

export interface TrainSettings {
  precision: Precision;
  /** fp16 only: dynamic loss scaling. */
  lossScaling?: LossScalerOptions;
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
  maxGradNorm: number;
  gradAccumulation: number;
  microBatchSize: number;
  schedule: {
    kind: ScheduleKind;
    warmupSteps: number;
    warmupType?: "log" | "linear";
    minLr?: number;
    totalSteps?: number;
  };
  /** ZeRO stage across ranks (0 = plain data parallel). */
  zeroStage: 0 | 1 | 2 | 3;
  notes: string[];
}

function dsPath(p: string): string {
  if (isAbsolute(p) || existsSync(resolve(p))) return resolve(p);
  // OA's configs name "configs/zero3_config_sft.json" relative to model_training/; ours ship in configs/.
  const builtin = join(BUILTIN_CONFIG_DIR, p.replace(/^configs\//, ""));
  if (existsSync(builtin)) return builtin;
  throw new ConfigError(`deepspeed_config: ${p} not found (looked in the working folder and ${BUILTIN_CONFIG_DIR})`);
}

/** A DeepSpeed value: "auto" → the trainer's; a number (or numeric string) → itself. */
function auto(v: unknown, fallback: number, file: string, key: string): number {
  if (v === undefined || v === "auto") return fallback;
  const n = typeof v === "string" && v.trim() !== "" ? Number(v) : v;
  if (typeof n !== "number" || !Number.isFinite(n))
    throw new ConfigError(file, key, `expected a number or "auto", got ${JSON.stringify(v)}`);
  return n;
}

const enabled = (block: unknown, fallback: boolean) => {
  const e = (block as Json | undefined)?.enabled;
  return e === undefined || e === "auto" ? fallback : e === true;
};

/** `distributed`: this process is one rank of a job (launched with the torchrun environment). */
export function resolveTrainSettings(
  cfg: Settings<"optim" | "model" | "parallel">,
  device: string,
  distributed = false,
): TrainSettings {
  const dtype = cfg.dtype;
  const s: TrainSettings = {
    precision:
      dtype === "bf16" || dtype === "bfloat16" ? "bf16" : dtype === "fp16" || dtype === "float16" ? "fp16" : "fp32",
    lr: cfg.learning_rate,
    betas: [cfg.adam_beta1, cfg.adam_beta2],
    eps: cfg.adam_epsilon,
    weightDecay: cfg.weight_decay,
    maxGradNorm: cfg.max_grad_norm,
    gradAccumulation: cfg.gradient_accumulation_steps,
    microBatchSize: cfg.per_device_train_batch_size,
    schedule: { kind: cfg.lr_scheduler_type, warmupSteps: cfg.warmup_steps },
    zeroStage: (cfg.zero_stage ?? 0) as TrainSettings["zeroStage"],
    notes: [],
  };
  if (cfg.deepspeed) applyDeepSpeed(s, dsPath(cfg.deepspeed_config), cfg.zero_stage === null);
  if (s.zeroStage > 0 && !distributed) {
    s.notes.push(
      `ZeRO stage ${s.zeroStage} shards state across ranks; this run is one process, so everything stays whole on it`,
    );
  }
  if (s.precision === "fp16" && device === "cpu") {
    s.notes.push(
      "dtype fp16: libtorch has no fp16 matmul/LayerNorm kernels on CPU; training runs in bf16 autocast " +
        "instead (fp16 with loss scaling runs on CUDA)",
    );
    s.precision = "bf16";
  }
  if (s.precision !== "fp16") delete s.lossScaling;
  else s.lossScaling ??= {};
  return s;
}

/** The DeepSpeed JSON's settings over the config's, as HF's integration resolves them ("auto": the trainer's). */
function applyDeepSpeed(s: TrainSettings, file: string, zeroFromJson: boolean): void {
  let ds: Json;
  try {
    ds = JSON.parse(readFileSync(file, "utf8")) as Json;
  } catch (err) {
    throw new ConfigError(`${file}: not valid JSON (${(err as Error).message})`);
  }
  const fp16 = enabled(ds.fp16, s.precision === "fp16");
  const bf16 = enabled(ds.bf16, s.precision === "bf16");
  if (fp16 && bf16) throw new ConfigError(file, "fp16, bf16", "both are enabled");
  s.precision = fp16 ? "fp16" : bf16 ? "bf16" : s.precision;
  const f = (ds.fp16 ?? {}) as Json;
  s.lossScaling = {
    initialScalePower: auto(f.initial_scale_power, 16, file, "fp16.initial_scale_power"),
    window: auto(f.loss_scale_window, 1000, file, "fp16.loss_scale_window"),
    hysteresis: auto(f.hysteresis, 2, file, "fp16.hysteresis"),
    minScale: auto(f.min_loss_scale, 1, file, "fp16.min_loss_scale"),
  };
  if (f.loss_scale !== undefined && f.loss_scale !== 0 && f.loss_scale !== "auto") {
    const power = s.lossScaling.initialScalePower;
    s.notes.push(
      `${file}: a static fp16 loss_scale (${f.loss_scale}) is treated as dynamic scaling starting at 2^${power}`,
    );
  }
  applyOptimizer(s, ds, file);
  applyScheduler(s, (ds.scheduler ?? {}) as Json, file);
  const zero = (ds.zero_optimization ?? {}) as Json;
  if (zero.stage !== undefined && zeroFromJson) {
    const stage = zero.stage;
    if (stage !== 0 && stage !== 1 && stage !== 2 && stage !== 3)
      throw new ConfigError(file, "zero_optimization.stage", `expected 0, 1, 2 or 3, got ${JSON.stringify(stage)}`);
    s.zeroStage = stage;
  }
  for (const key of ["offload_optimizer", "offload_param"]) {
    const device = ((zero[key] ?? {}) as Json).device;
    if (zero[key] && device !== "none") {
      s.notes.push(
        `${file} › zero_optimization.${key}: CPU/NVMe offload is not applied; it stays on the training device`,
      );
    }
  }
}

/** optimizer (AdamW only), clipping, accumulation and the micro-batch size. */
function applyOptimizer(s: TrainSettings, ds: Json, file: string): void {
  const opt = (ds.optimizer ?? {}) as Json;
  if (opt.type !== undefined && String(opt.type).toLowerCase() !== "adamw")
    throw new ConfigError(file, "optimizer.type", `${JSON.stringify(opt.type)} is not supported (AdamW only)`);
  const p = (opt.params ?? {}) as Json;
  s.lr = auto(p.lr, s.lr, file, "optimizer.params.lr");
  s.betas = betas(p.betas, s.betas, file);
  s.eps = auto(p.eps, s.eps, file, "optimizer.params.eps");
  s.weightDecay = auto(p.weight_decay, s.weightDecay, file, "optimizer.params.weight_decay");
  s.maxGradNorm = auto(ds.gradient_clipping, s.maxGradNorm, file, "gradient_clipping");
  s.gradAccumulation = auto(ds.gradient_accumulation_steps, s.gradAccumulation, file, "gradient_accumulation_steps");
  s.microBatchSize = auto(ds.train_micro_batch_size_per_gpu, s.microBatchSize, file, "train_micro_batch_size_per_gpu");
}

/** optimizer.params.betas: "auto", or two numbers in [0, 1). */
function betas(v: unknown, fallback: [number, number], file: string): [number, number] {
  if (v === undefined || v === "auto") return fallback;
  const ok = Array.isArray(v) && v.length === 2 && v.every((b) => typeof b === "number" && b >= 0 && b < 1);
  if (!ok)
    throw new ConfigError(file, "optimizer.params.betas", `expected two numbers in [0, 1), got ${JSON.stringify(v)}`);
  return [v[0] as number, v[1] as number];
}

/** WarmupDecayLR (OA's) or WarmupLR. */
function applyScheduler(s: TrainSettings, sched: Json, file: string): void {
  if (sched.type === undefined) return;
  if (sched.type !== "WarmupDecayLR" && sched.type !== "WarmupLR") {
    const type = JSON.stringify(sched.type);
    throw new ConfigError(file, "scheduler.type", `${type} is not supported (WarmupDecayLR, WarmupLR)`);
  }
  const sp = (sched.params ?? {}) as Json;
  const at = (key: string) => `scheduler.params.${key}`;
  s.lr = auto(sp.warmup_max_lr, s.lr, file, at("warmup_max_lr"));
  s.schedule = {
    kind: sched.type === "WarmupLR" ? "constant" : "warmup_decay_lr",
    warmupSteps: auto(sp.warmup_num_steps, s.schedule.warmupSteps, file, at("warmup_num_steps")),
    warmupType: sp.warmup_type === "linear" ? "linear" : "log",
    minLr: auto(sp.warmup_min_lr, 0, file, at("warmup_min_lr")),
    ...(sp.total_num_steps !== undefined && sp.total_num_steps !== "auto"
      ? { totalSteps: auto(sp.total_num_steps, 0, file, at("total_num_steps")) }
      : {}),
  };
  if (sched.type === "WarmupLR" && sp.warmup_type !== "linear")
    s.notes.push(`${file}: WarmupLR's log warmup is applied as linear warmup (oasft's constant schedule)`);
}
